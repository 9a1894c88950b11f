package app

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// stallAfter is how long the pipeline may hold messages without forwarding
// any before /healthz reports it stuck.
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
		// Whoever sees the bridge ready first tells the service manager, so
		// READY=1 never lags a 200 here.
		b.notifyReady()
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Healthy returns nil while the process makes progress: the pipeline holds
// nothing, or it forwarded or dead-lettered a message within stallAfter.
func (b *Bridge) Healthy() error {
	st := b.pipeline.Stats()
	if st.InFlight > 0 && time.Since(st.LastProgress) > stallAfter {
		return fmt.Errorf("%d messages held and none forwarded for %s", st.InFlight, time.Since(st.LastProgress).Round(time.Second))
	}
	return nil
}

// NotReady lists why the bridge is not ready (nil when it is): a source
// connection down, or an MNS destination that could not be looked up.
func (b *Bridge) NotReady() []string {
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
	if e := b.pipeline.Stats().DeadLetterError; e != "" {
		reasons = append(reasons, "dead letters cannot be written (messages are held): "+e)
	}
	b.readyMu.Lock()
	reasons = append(reasons, b.notReady...)
	if !b.ready && len(b.notReady) == 0 {
		reasons = append(reasons, "MNS destinations not checked yet")
	}
	b.readyMu.Unlock()
	return reasons
}

// watchReady checks the MNS destinations now and every 30 seconds (every 2
// seconds while one fails), and calls
// OnReady once the source is connected and the destinations answered.
func (b *Bridge) watchReady(ctx context.Context) {
	notified := false
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var lastCheck time.Time
	every := time.Duration(0)
	for {
		if time.Since(lastCheck) >= every {
			lastCheck = time.Now()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := b.checkDestinations(cctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			b.readyMu.Lock()
			b.ready = err == nil
			b.notReady = nil
			if err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					b.notReady = append(b.notReady, line)
				}
			}
			b.readyMu.Unlock()
			every = 30 * time.Second
			if err != nil {
				every = 2 * time.Second
				b.log.Warn("MNS destination check failed", "err", err)
			}
		}
		if !notified && len(b.NotReady()) == 0 {
			notified = true
			b.notifyReady()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// notifyReady logs readiness and calls OnReady, once.
func (b *Bridge) notifyReady() {
	b.readyOnce.Do(func() {
		b.log.Info("ready: source connected and MNS destinations checked")
		if b.opts.OnReady != nil {
			b.opts.OnReady()
		}
	})
}

// summaries logs one line per log.summary_interval with rates and totals.
func (b *Bridge) summaries(ctx context.Context) {
	every := b.cfg.Log.SummaryInterval
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	prev := b.pipeline.Stats()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := b.pipeline.Stats()
		rate := float64(st.Forwarded-prev.Forwarded) / every.Seconds()
		b.log.Info("summary", "forwarded_per_s", fmt.Sprintf("%.1f", rate), "received", st.Received, "forwarded", st.Forwarded,
			"dead_lettered", st.DeadLettered, "duplicates", st.Duplicates, "retried", st.Retried, "in_flight", st.InFlight)
		prev = st
	}
}
