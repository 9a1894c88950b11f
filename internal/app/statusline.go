package app

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// The status line is what the service manager shows of a running bridge
// (systemd STATUS=, the "Status:" of `systemctl status`): one short line
// saying whether it forwards or what it waits for, and since when. READY=1
// comes once the bridge has started, not once the platform answers, so this
// line is where an operator sees that it waits for the platform.

// statusEvery is how often reportStatus looks at the bridge's state; it
// calls OnStatus only when the line changes.
const statusEvery = 500 * time.Millisecond

// maxReasonLen bounds the error quoted in the line.
const maxReasonLen = 200

// statusView is the state the line is made of.
type statusView struct {
	conns []bridge.ConnState
	// platformSince is when a source connection was last found down while
	// all were up (the start, before the first connect).
	platformSince time.Time
	// mnsFailing counts the destinations whose sends fail (the last request
	// failed whole), failing since mnsSince.
	mnsFailing int
	mnsSince   time.Time
	lookups    string // the destination check's failures by code, "" when it passes
	deadLetter bool   // dead letters cannot be written
	spoolFull  bool
	// spoolWritesFailing is the spool's last commit error while its
	// writes fail (a full disk), "" while they succeed.
	spoolWritesFailing string
	stuck              bool
	// reloadRefused is why the last config reload was refused, "" when
	// it was applied or none was asked.
	reloadRefused string
	// restartPending is the sections whose changes wait for a restart,
	// "" when none do.
	restartPending string
}

// line renders v. With shape set, the text that may change at every
// attempt without a change of state (the numbers in an error, the since
// times) is left out: two views with the same shaped line are the same
// state, and the line is not sent again.
func (v statusView) line(shape bool) string {
	up, down := 0, []bridge.ConnState(nil)
	for _, c := range v.conns {
		if c.Connected {
			up++
		} else {
			down = append(down, c)
		}
	}
	since := func(t time.Time) string {
		if shape {
			return ""
		}
		return " since " + t.UTC().Format(time.RFC3339)
	}
	var parts []string
	if len(down) > 0 {
		reason := down[0].LastError
		if reason == "" {
			reason = "connecting"
		}
		if shape {
			reason = source.FailureShape(reason)
		} else {
			reason = cut(reason)
		}
		parts = append(parts, fmt.Sprintf("waiting for the platform%s (connected %d/%d): %s: %s",
			since(v.platformSince), up, len(v.conns), down[0].Name, reason))
	} else if len(v.conns) > 0 {
		parts = append(parts, fmt.Sprintf("connected %d/%d", up, len(v.conns)))
	}
	if v.mnsFailing > 0 {
		parts = append(parts, fmt.Sprintf("MNS sends failing%s (%d destination(s); see /readyz), messages held", since(v.mnsSince), v.mnsFailing))
	}
	if v.lookups != "" {
		parts = append(parts, "MNS lookup failing: "+v.lookups)
	}
	if v.deadLetter {
		parts = append(parts, "dead letters cannot be written (see /readyz)")
	}
	if v.spoolFull {
		parts = append(parts, "spool full (source paused)")
	}
	if v.spoolWritesFailing != "" {
		parts = append(parts, "spool writes FAILING (source paused): "+cut(v.spoolWritesFailing))
	}
	if v.stuck {
		parts = append(parts, "pipeline STUCK (see /healthz): not feeding the watchdog")
	}
	if len(parts) == 1 && len(down) == 0 && len(v.conns) > 0 {
		parts = append(parts, "forwarding")
	}
	if v.reloadRefused != "" {
		parts = append(parts, "config reload refused, running config kept: "+cut(v.reloadRefused))
	}
	if v.restartPending != "" {
		parts = append(parts, "config changes waiting for a restart: "+v.restartPending)
	}
	return strings.Join(parts, "; ")
}

// cut bounds an error quoted in the line to maxReasonLen runes.
func cut(reason string) string {
	if r := []rune(reason); len(r) > maxReasonLen {
		return string(r[:maxReasonLen]) + "..."
	}
	return reason
}

// view reads the bridge's state; prev is the last view, whose since
// times carry over while their condition lasts.
func (b *Bridge) view(prev statusView, now time.Time) statusView {
	v := statusView{platformSince: prev.platformSince, mnsSince: prev.mnsSince}
	if sr, ok := b.source.(bridge.StateReporter); ok {
		v.conns = sr.ConnStates()
	}
	allUp := true
	for _, c := range v.conns {
		allUp = allUp && c.Connected
	}
	if allUp {
		v.platformSince = time.Time{}
	} else if v.platformSince.IsZero() {
		v.platformSince = now
	}
	v.mnsFailing = b.pipeline.FailingCount()
	if v.mnsFailing == 0 {
		v.mnsSince = time.Time{}
	} else if v.mnsSince.IsZero() {
		v.mnsSince = now
	}
	b.readyMu.Lock()
	v.lookups = b.lookupState
	v.reloadRefused = b.reloadRefused
	v.restartPending = strings.Join(b.restartPending, ", ")
	b.readyMu.Unlock()
	v.deadLetter = b.pipeline.Stats().DeadLetterError != ""
	b.status.spoolMu.Lock()
	spoolStats := b.status.spool
	b.status.spoolMu.Unlock()
	v.spoolFull, v.spoolWritesFailing = false, ""
	if spoolStats != nil {
		st := spoolStats()
		v.spoolFull, v.spoolWritesFailing = st.Full, st.CommitError
	}
	v.stuck = b.Healthy() != nil
	return v
}

// noteReload records the outcome of a config reload for the status line and
// /status: err is why it was refused, its lines joined with "; " (a line of
// sd_notify's STATUS= ends at a newline), nil when it was applied (or the
// file is unchanged).
func (b *Bridge) noteReload(err error) {
	b.readyMu.Lock()
	defer b.readyMu.Unlock()
	b.reloadRefused = ""
	if err != nil {
		b.reloadRefused = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
}

// noteRestartPending records, after an applied reload, the config sections
// whose changes wait for a restart (Reload's needRestart; none clears it):
// the running config differs from the file there until the bridge restarts.
func (b *Bridge) noteRestartPending(sections []string) {
	b.readyMu.Lock()
	defer b.readyMu.Unlock()
	b.restartPending = slices.Clone(sections)
}

// reportStatus calls OnStatus with the status line now and whenever its
// state changes (not when only the numbers in an error do), until ctx is
// done (run.stopping: the stop's line follows it).
func (b *Bridge) reportStatus(ctx context.Context) {
	if b.opts.OnStatus == nil {
		return
	}
	t := time.NewTicker(statusEvery)
	defer t.Stop()
	var v statusView
	sent := ""
	for {
		v = b.view(v, time.Now())
		if key := v.line(true); key != sent {
			sent = key
			b.opts.OnStatus(v.line(false))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stopping ends the status line's updates and says that the bridge stops
// (OnStopping: systemd STOPPING=1 with STATUS=) as soon as the stop
// begins: `systemctl status` then shows "deactivating" with what the drain
// waits for, rather than the last running state until the drain ended (a
// bridge that stops by itself, its source failed for good, is shown as
// stopping at all only so).
func (r *run) stopping() {
	b := r.b
	r.cancelStatus()
	<-r.statusDone
	line := b.stoppingLine(b.pipeline.Stats().InFlight, b.pipeline.FailingCount(), r.stage != nil)
	switch {
	case b.opts.OnStopping != nil:
		b.opts.OnStopping(line)
	case b.opts.OnStatus != nil:
		b.opts.OnStatus(line)
	}
}

// stoppingLine is the status line at the stop: how many messages the
// pipeline holds (held), up to when the drain waits for MNS to take them,
// and, while MNS fails (failing destinations), when it ends and where they
// go: drainend.go's early end when each goes back to the spool or the
// platform, else the whole shutdown_timeout and then the dead-letter file.
func (b *Bridge) stoppingLine(held int64, failing int, spooled bool) string {
	if held == 0 {
		return "stopping: intake stopped, no message held; closing"
	}
	line := fmt.Sprintf("stopping: intake stopped, draining %d message(s) held until MNS takes them, up to shutdown_timeout %s", held, b.cfg.ShutdownTimeout)
	if failing == 0 {
		return line
	}
	src := b.cfg.Source
	switch {
	case spooled:
		return line + fmt.Sprintf("; MNS sends failing (%d destination(s)): the drain ends once MNS failed twice in a row or left a request unanswered, and they stay in the spool for the next start", failing)
	case src.Protocol == "amqp" || src.STOMP.Ack == "client-individual":
		return line + fmt.Sprintf("; MNS sends failing (%d destination(s)): the drain ends once MNS failed twice in a row or left a request unanswered, and the platform redelivers them", failing)
	default:
		return line + fmt.Sprintf("; MNS sends failing (%d destination(s)): what MNS has not taken by then goes to the dead-letter file (stomp ack auto without the spool)", failing)
	}
}
