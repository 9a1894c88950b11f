package app

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// stallAfter is how long the pipeline may hold messages while it makes no
// progress (nothing forwarded or dead-lettered, no MNS request returned,
// whatever the answer) before /healthz and the watchdog report it stuck;
// stallLimit raises it for slow settings.
const stallAfter = 2 * time.Minute

func (b *Bridge) httpHandler() http.Handler {
	mux := http.NewServeMux()
	// /metrics and /status behind the web config's basic auth, when set;
	// the probes stay open (they reveal only ok or the reasons).
	protect := func(h http.Handler) http.Handler { return h }
	if b.web != nil {
		protect = b.web.RequireAuth
	}
	mux.Handle("/metrics", protect(promhttp.HandlerFor(b.reg, promhttp.HandlerOpts{Registry: b.reg})))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := b.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error()+"\n", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/status", protect(http.HandlerFunc(b.serveStatus)))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := b.NotReady(); len(reasons) > 0 {
			http.Error(w, "not ready:\n- "+strings.Join(reasons, "\n- ")+"\n", http.StatusServiceUnavailable)
			return
		}
		// Run says READY=1 once intake started, which a 200 here needs; so
		// that it never lags a 200, whoever comes first says it.
		b.notifyReady()
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Healthy returns nil unless the pipeline is stuck (bridge.Pipeline.Stalled
// over stallLimit): messages held, and for that long none forwarded or
// dead-lettered and no MNS request returned. An MNS outage is not stuck:
// the bridge keeps asking MNS and holds the messages, /readyz says MNS
// fails, and a restart would not help. /healthz and the systemd watchdog
// follow it.
func (b *Bridge) Healthy() error {
	return b.pipeline.Stalled(b.stallLimit())
}

// stallLimit is stallAfter, or twice the quietest a working pipeline gets
// when that is longer: delivery.retry.max_backoff (a retry's or a probe's
// wait) plus mns.request_timeout (its request).
func (b *Bridge) stallLimit() time.Duration {
	limit := stallAfter
	if b.opts.stallAfter > 0 {
		limit = b.opts.stallAfter
	}
	return max(limit, 2*(b.live.Load().Delivery.Retry.MaxBackoff+b.cfg.MNS.RequestTimeout))
}

// NotReady lists why the bridge is not ready (nil when it is): a source
// connection down, dead letters that cannot be written, MNS sends failing,
// or an MNS destination that could not be looked up.
func (b *Bridge) NotReady() []string {
	reasons := b.sourceNotReady()
	if e := b.pipeline.Stats().DeadLetterError; e != "" {
		reasons = append(reasons, "dead letters cannot be written (messages are held): "+e)
	}
	reasons = append(reasons, b.pipeline.Failing()...)
	b.readyMu.Lock()
	reasons = append(reasons, b.notReady...)
	if !b.ready && len(b.notReady) == 0 {
		reasons = append(reasons, "MNS destinations not checked yet")
	}
	b.readyMu.Unlock()
	return reasons
}

// sourceNotReady lists the source connections that are down.
func (b *Bridge) sourceNotReady() []string {
	var reasons []string
	if sr, ok := b.source.(bridge.StateReporter); ok {
		for _, st := range sr.ConnStates() {
			if !st.Connected {
				r := "source connection " + st.Name + " is down"
				if st.LastError != "" {
					r += ": " + st.LastError
				}
				reasons = append(reasons, r)
			}
		}
	}
	return reasons
}

// Destination check periods: while every destination answers, and while
// one fails. /readyz also follows the pipeline's failing sends at once.
const (
	checkEvery        = 5 * time.Second
	checkEveryFailing = 2 * time.Second
	// checkTimeout bounds one check, all its lookups together.
	checkTimeout = 10 * time.Second
)

// watchReady checks the MNS destinations now and every checkEvery (every
// checkEveryFailing while one fails) for /readyz and the status line,
// logging each change of their state once (and each destination that
// cannot be verified once).
func (b *Bridge) watchReady(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var lastCheck time.Time
	every := time.Duration(0)
	lastState := "unchecked"
	loggedUnverifiable := map[string]bool{}
	for {
		if time.Since(lastCheck) >= every {
			lastCheck = time.Now()
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			failed, unverifiable, state := b.checkDestinations(cctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			b.readyMu.Lock()
			b.ready = len(failed) == 0
			b.notReady = failed
			b.lookupState = state
			b.readyMu.Unlock()
			for _, u := range unverifiable {
				if !loggedUnverifiable[u] {
					loggedUnverifiable[u] = true
					b.log.Warn("MNS destination not verifiable", "detail", u)
				}
			}
			every = checkEvery
			if len(failed) > 0 {
				every = checkEveryFailing
			}
			if state != lastState {
				switch {
				case len(failed) > 0:
					b.log.Warn("MNS destination check failed; /readyz reports it until it passes", "err", strings.Join(failed, "; "))
				case lastState != "unchecked":
					b.log.Info("MNS destination check passes again")
				}
				lastState = state
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// notifyReady logs that the bridge has started and calls OnReady, once.
func (b *Bridge) notifyReady() {
	b.readyOnce.Do(func() {
		b.log.Info("ready: started (READY=1): config loaded, state files open, HTTP serving, source connections supervised; " +
			"/readyz and the service's status line say whether it forwards or what it waits for")
		if b.opts.OnReady != nil {
			b.opts.OnReady()
		}
	})
}

// summaries logs one line per log.summary_interval with rates and totals,
// and with a spool (sp not nil) what its commits took on average in the
// interval, when it made any (spool_commit_ms: a slow SD card shows here,
// where an edge box's operator reads the journal, as in the metrics).
func (b *Bridge) summaries(ctx context.Context, sp *spool.Spool) {
	every := b.cfg.Log.SummaryInterval
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev := b.pipeline.Stats().Forwarded
	var prevCommits spool.CommitStats
	if sp != nil {
		prevCommits = sp.CommitStats()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The counts of status's messages line (the stop line's names).
		st := b.Status()
		rate := float64(st.Pipeline.Forwarded-prev) / every.Seconds()
		args := append([]any{"forwarded_per_s", fmt.Sprintf("%.1f", rate)}, messageCounts(st)...)
		args = append(args, "retried", st.Pipeline.Retried)
		if sp != nil {
			cs := sp.CommitStats()
			if n := cs.Commits - prevCommits.Commits; n > 0 {
				args = append(args, "spool_commit_ms", fmt.Sprintf("%.1f", float64(cs.Time-prevCommits.Time)/float64(n)/float64(time.Millisecond)))
			}
			prevCommits = cs
		}
		b.log.Info("summary", args...)
		prev = st.Pipeline.Forwarded
	}
}
