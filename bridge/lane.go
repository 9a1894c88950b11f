package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/broadcast"
)

// lane holds the messages of one destination until they are sent: the new
// ones in arrival order and the ones waiting for a retry. It decides the
// batches, once: a batch is ready when it is full (the batch settings and
// the sink's limits, whichever is lower), when its first message has
// lingered long enough, or when a retry is due; a sender takes it whole and
// sends it as one request. A lane has no goroutine of its own: the add or
// timer that makes a batch ready starts a sender when fewer than
// MaxRequestsPerDestination run, and a sender keeps taking ready batches
// until there are none.
//
// While the destination is failing (its last request failed whole), one
// sender runs: a probe, one request at a time and at most one per backoff
// interval (the retry policy's, growing with each failed probe up to
// maxProbeInterval), so an outage costs one request per interval however
// many retry groups wait, not one per group, and does not keep
// MaxRequestsPerDestination encoded requests alive. The probe is the due retries or, with none due, new
// messages batched; the other groups and the new messages wait in the
// lane, up to the pipeline's bounds. After the first success, everything
// waiting becomes due and senders fan out again as the linger and retry
// timers and new messages start them (each take re-arms those timers while
// more is ready).
type lane struct {
	p    *Pipeline
	dest Destination
	lim  SinkLimits // the sink's own limits for dest

	mu        sync.Mutex
	pending   []*item // new messages, oldest first
	pendBytes int
	space     broadcast.Signal // pending shrank, or the lane is failing
	lingered  bool             // the oldest pending message waited Linger
	linger    *time.Timer
	retries   []retryGroup // messages waiting for a retry
	retryAt   time.Time    // when retryTimer fires; zero when stopped
	retryT    *time.Timer
	senders   int // sender goroutines running
	// deadLettering is how many of them write dead letters (a stop counts
	// their deliveries as the dead-letter writes', drainend.go).
	deadLettering int
	stopped       bool      // the drain deadline passed: take nothing more
	removed       bool      // no longer in the pipeline's lane map
	idleSince     time.Time // when the lane last became empty (pipeline clock)

	failing  bool          // the last request failed whole
	failedAt time.Time     // when a request last failed whole (wall clock)
	wake     chan struct{} // closed when a send succeeds again
	// probeOf is when the whole failure a probe followed happened, for the
	// last probe that failed whole too, or when a request last went
	// unanswered (wall clock); okAt is when a request was last answered
	// (wall clock). Drain reads both (drainend.go).
	probeOf time.Time
	okAt    time.Time
	// While failing, no request starts before probeAt (wall clock): the
	// last failed request plus a backoff that grows with probeFails.
	probeAt    time.Time
	probeFails int
	// Logging of the failing/recovered state, at most once a stateLogEvery
	// per destination: under throttling, requests fail and succeed in turn.
	logged      bool      // "failing" was logged and "recovered" not yet
	lastLog     time.Time // when "failing" was last logged
	since       time.Time // when the logged failing period began
	failRetries int64     // message retries since then
	lastErr     string    // the error of the last failed request, while failing
	// A failing destination whose failures change kind (a network error,
	// then MNS's 408 TimeExpired) says so once, then at most once a
	// stateLogEvery: the "failing" line named the first kind only.
	loggedStatus string    // statusLabel of the last failure logged
	lastReason   time.Time // when a change of kind was last logged
}

// retryGroup is the messages of one request that failed retryably: they
// are due again together after the backoff of the most-tried one.
type retryGroup struct {
	items []*item
	due   time.Time // wall clock
	// soonest is the earliest a recovery of the destination may make them
	// due (start of the wait plus the initial backoff): no hot loop.
	soonest time.Time
}

// pendingBatches is how many batches a lane holds, beyond those being
// sent, before add waits.
const pendingBatches = 2

// idleLaneAfter is how long a lane with nothing held stays in the map.
const idleLaneAfter = time.Minute

// maxProbeInterval caps the growth of a failing destination's probe
// interval below the retry policy's MaxBackoff: one request every 2 s is
// nothing against MNS's limits, and the bridge sees MNS back at most 2 s
// after it is (with MaxBackoff alone, up to 30 s). An InitialBackoff above
// it is kept as given.
const maxProbeInterval = 2 * time.Second

// stateLogEvery bounds how often a destination's failing state is logged.
const stateLogEvery = time.Minute

// failLogBurst bounds the destinations whose failing state is logged in a
// deadLogWindow, and failingListed those Failing lists: MNS throttles an
// account, not a queue, so with a queue or topic per device (a templated
// route) every lane fails at once; beyond them one line says that more fail
// (walk13: 1,000 templated queues throttled for 30 s logged 999 'failing'
// and 999 'recovered' lines, and /readyz listed 666 destinations, 221 KB).
const (
	failLogBurst  = 10
	failingListed = 10
)

// The lines that stand for the failing destinations not logged one by one:
// the first one suppressed in a window, and their count once it is over.
const (
	moreFailingLine = "MNS sends failing to more destinations; the others are not logged one by one (status and /readyz count them)"
	moreFailedLine  = "MNS sends failed to more destinations than were logged one by one"
)

// lane returns dest's lane, creating it; creating one first removes the
// lanes idle for idleLaneAfter, so templated destination names do not
// accumulate lanes.
func (p *Pipeline) lane(dest Destination) *lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.lanes[dest]; l != nil {
		return l
	}
	now := p.now()
	if now.Sub(p.lastSweep) >= idleLaneAfter {
		p.lastSweep = now
		for d, l := range p.lanes {
			if l.removeIfIdle(now) {
				delete(p.lanes, d)
			}
		}
	}
	l := &lane{p: p, dest: dest, idleSince: now}
	if p.limited != nil {
		l.lim = p.limited.Limits(dest)
	}
	p.lanes[dest] = l
	return l
}

// laneCount is how many lanes the pipeline holds (for tests).
func (p *Pipeline) laneCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lanes)
}

// removeIfIdle marks the lane removed when it holds nothing and has been
// idle for idleLaneAfter. The caller holds p.mu.
func (l *lane) removeIfIdle(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.idle() || now.Sub(l.idleSince) < idleLaneAfter {
		return false
	}
	l.removed = true
	return true
}

func (l *lane) idle() bool {
	return len(l.pending) == 0 && len(l.retries) == 0 && l.senders == 0
}

type addResult int

const (
	laneAdded addResult = iota
	laneStopped
	laneRemoved
)

// add queues a new message and starts a sender when a batch is ready.
// While the lane already holds pendingBatches full batches that no sender
// could take (every request slot of the destination busy), add waits: the
// pipeline takes nothing more (the source stops reading, or with the spool
// on the spool's feeder waits), as when the pipeline is full, so a slow
// destination holds a few batches beyond those in flight, not the whole
// in-flight bound. A failing destination's lane takes them (its one probe
// sends none of them until MNS answers): the pipeline's bounds stop the
// source, as they did when each was tried and failed. Once ctx, the
// intake's, is done (the stop), add waits no more and queues the message
// beyond that bound (one more per intake goroutine), as Handle takes a
// delivery it found room for: the stop goes on to the drain, whose
// shutdown_timeout starts then, without waiting for an MNS answer.
func (l *lane) add(ctx context.Context, it *item) addResult {
	p := l.p
	it.size = it.outLen()
	if l.lim.Size != nil {
		it.size = l.lim.Size(&it.out, it.size)
	}
	for {
		l.mu.Lock()
		switch {
		case l.removed:
			l.mu.Unlock()
			return laneRemoved
		case l.stopped || p.sendCtx.Err() != nil:
			l.mu.Unlock()
			return laneStopped
		}
		n, _ := l.limits()
		if len(l.pending) < pendingBatches*n || l.failing || ctx.Err() != nil {
			break
		}
		space := l.space.Wait()
		l.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
		case <-p.sendCtx.Done():
		}
	}
	l.pending = append(l.pending, it)
	l.pendBytes += it.size
	if len(l.pending) == 1 {
		l.armLinger(p.tune.Load().Linger)
	}
	if l.failing {
		l.armRetry() // the next probe may carry them
	}
	start := l.startSender()
	l.mu.Unlock()
	if start {
		p.senders.start(l.sender)
	}
	return laneAdded
}

// armLinger starts the linger of the oldest pending message. l.mu is held.
func (l *lane) armLinger(d time.Duration) {
	if d <= 0 {
		// No linger: a partly filled batch is ready at once.
		l.lingered = true
		return
	}
	l.lingered = false
	if l.linger == nil {
		l.linger = time.AfterFunc(d, l.lingerDone)
		return
	}
	l.linger.Reset(d)
}

// lingerDone makes the partly filled batch ready. The timer's goroutine
// hands the request to a kept sender goroutine, or becomes the sender when
// none waits (senders.go).
func (l *lane) lingerDone() {
	l.mu.Lock()
	if len(l.pending) == 0 || l.stopped {
		l.mu.Unlock()
		return
	}
	l.lingered = true
	start := l.startSender()
	if l.failing {
		l.armRetry() // the next probe may carry them
	}
	l.mu.Unlock()
	if start {
		l.p.senders.here(l.sender)
	}
}

// retryDue makes the retries due by now ready.
func (l *lane) retryDue() {
	l.mu.Lock()
	l.retryAt = time.Time{}
	if l.stopped {
		l.mu.Unlock()
		return
	}
	start := l.startSender()
	if !start && l.senders < l.maxSenders() {
		// Not due yet (the timer fired early): wait again. With every
		// sender running, they take the due retries themselves.
		l.armRetry()
	}
	l.mu.Unlock()
	if start {
		l.p.senders.here(l.sender)
	}
}

// armRetry sets the retry timer to the earliest due group; while the
// destination is failing, not before the next probe, and to the probe
// when new messages wait. l.mu is held.
func (l *lane) armRetry() {
	var due time.Time
	for i := range l.retries {
		if g := l.dueOf(&l.retries[i]); due.IsZero() || g.Before(due) {
			due = g
		}
	}
	if l.failing {
		if l.pendingReady() && (due.IsZero() || l.probeAt.Before(due)) {
			due = l.probeAt
		}
		if !due.IsZero() && due.Before(l.probeAt) {
			due = l.probeAt
		}
	}
	if due.IsZero() {
		return
	}
	if !l.retryAt.IsZero() && !due.Before(l.retryAt) {
		return
	}
	l.retryAt = due
	d := time.Until(due)
	if l.retryT == nil {
		l.retryT = time.AfterFunc(d, l.retryDue)
		return
	}
	l.retryT.Reset(d)
}

// dueOf is when g may be sent again: at the end of its backoff, but while
// the pipeline drains (a stop) and the destination fails, at the next
// probe at the latest: the drain ends early only once a probe after the
// stop failed too (drainend.go), and after a long outage each group's
// backoff has grown to delivery.retry.max_backoff (30 s), so with no new
// message to carry (AMQP's credit used up, the intake stopped) the probes
// waited for retries to come due and a stop took up to twice that, or the
// whole shutdown_timeout. l.mu is held.
func (l *lane) dueOf(g *retryGroup) time.Time {
	if l.failing && l.p.closing.Load() && l.probeAt.Before(g.due) {
		return l.probeAt
	}
	return g.due
}

// limits returns the batch bounds: the tuning's, lowered to the sink's.
func (l *lane) limits() (n, size int) {
	t := l.p.tune.Load()
	n, size = t.BatchSize, t.BatchBytes
	if l.lim.Messages > 0 {
		n = min(n, l.lim.Messages)
	}
	if l.lim.Bytes > 0 {
		size = min(size, l.lim.Bytes)
	}
	return n, size
}

// ready reports whether a batch can be taken now: while the destination is
// failing, only once the next probe is due. l.mu is held.
func (l *lane) ready() bool {
	if l.stopped {
		return false
	}
	if l.failing && time.Now().Before(l.probeAt) {
		return false
	}
	if l.pendingReady() {
		return true
	}
	if len(l.retries) > 0 {
		t := time.Now()
		for i := range l.retries {
			if !l.dueOf(&l.retries[i]).After(t) {
				return true
			}
		}
	}
	return false
}

// pendingReady reports whether the new messages make a batch: a full one,
// or the oldest lingered. l.mu is held.
func (l *lane) pendingReady() bool {
	if len(l.pending) == 0 {
		return false
	}
	if l.lingered {
		return true
	}
	n, size := l.limits()
	return len(l.pending) >= n || l.pendBytes >= size
}

// maxSenders is how many senders may run: MaxRequestsPerDestination, or
// one (the probe) while the destination is failing. l.mu is held.
func (l *lane) maxSenders() int {
	if l.failing {
		return 1
	}
	return l.p.cfg.MaxRequestsPerDestination
}

// startSender counts a new sender when a batch is ready and fewer than
// maxSenders run; the caller then runs l.sender. l.mu is held.
func (l *lane) startSender() bool {
	if l.senders >= l.maxSenders() || !l.ready() {
		return false
	}
	l.senders++
	l.p.wg.Add(1)
	return true
}

// take returns the next ready batch, due retries first, or nil, and
// whether it is a probe (the destination was failing); with nil the
// calling sender is counted out and must stop (so are the senders beyond
// the probe while the destination is failing).
func (l *lane) take() (_ []*item, probe bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ready() || l.senders > l.maxSenders() {
		l.senders--
		if l.idle() {
			l.idleSince = l.p.now()
		}
		// The retry timer may have fired while this sender still ran
		// (and the next probe moved later meanwhile): what is held waits
		// on a timer again.
		l.armRetry()
		return nil, false
	}
	n, size := l.limits()
	batch := make([]*item, 0, min(n, len(l.pending)+l.retryCount()))
	bytes := 0
	fits := func(it *item) bool {
		return len(batch) < n && (len(batch) == 0 || bytes+it.size <= size)
	}
	if len(l.retries) > 0 {
		t := time.Now()
		kept := l.retries[:0]
		for _, g := range l.retries {
			if l.dueOf(&g).After(t) {
				kept = append(kept, g)
				continue
			}
			k := 0
			for k < len(g.items) && fits(g.items[k]) {
				batch = append(batch, g.items[k])
				bytes += g.items[k].size
				k++
			}
			if k < len(g.items) {
				g.items = g.items[k:]
				kept = append(kept, g)
			}
		}
		clear(l.retries[len(kept):])
		l.retries = kept
		l.armRetry()
	}
	k := 0
	for k < len(l.pending) && fits(l.pending[k]) {
		batch = append(batch, l.pending[k])
		bytes += l.pending[k].size
		l.pendBytes -= l.pending[k].size
		k++
	}
	if k == 0 && l.senders < l.maxSenders() {
		l.startPending() // retries filled the batch
	}
	if k > 0 {
		l.space.Notify()
		rest := copy(l.pending, l.pending[k:])
		clear(l.pending[rest:])
		l.pending = l.pending[:rest]
		if rest > 0 {
			l.armLinger(l.p.tune.Load().Linger)
		} else {
			l.lingered = false
			if l.linger != nil {
				l.linger.Stop()
			}
		}
	}
	return batch, l.failing
}

// startPending has the linger timer start a sender at once when the new
// messages make a batch that no sender takes (the retries came first, or
// they waited for a probe). l.mu is held.
func (l *lane) startPending() {
	if !l.pendingReady() {
		return
	}
	if l.linger == nil {
		l.linger = time.AfterFunc(0, l.lingerDone)
		return
	}
	l.linger.Reset(0)
}

func (l *lane) retryCount() int {
	n := 0
	for _, g := range l.retries {
		n += len(g.items)
	}
	return n
}

// retryLater puts items back on the lane, due after the backoff of the
// most-tried one; a send to the destination that succeeds meanwhile makes
// them due sooner (see sendOK). It reports false when the lane is stopped:
// the caller releases them.
func (l *lane) retryLater(items []*item) bool {
	p := l.p
	attempts := 0
	for _, it := range items {
		attempts = max(attempts, it.attempts)
	}
	retry := p.tune.Load().Retry
	b := Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff, attempt: attempts - 1}
	wait := b.Next()
	p.log.Debug("MNS send failed; retrying", "dest", l.dest.String(), "messages", len(items), "attempt", attempts, "backoff", wait, "err", items[0].lastErr)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || p.sendCtx.Err() != nil {
		return false
	}
	l.retries = append(l.retries, retryGroup{items: items, due: now.Add(wait), soonest: now.Add(retry.InitialBackoff)})
	l.armRetry()
	return true
}

// expired removes the held messages whose retry time ran out
// (Retry.MaxAge) while the destination fails and the probes carried other
// messages, and returns them for the caller to dead-letter, as their own
// retries would have; a new message that no probe carried gets the
// destination's last error.
func (l *lane) expired() []*item {
	p := l.p
	if p.tune.Load().Retry.MaxAge <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*item
	gone := func(it *item) bool {
		reason := p.exhausted(it)
		if reason == "" {
			return false
		}
		err := it.lastErr
		if err == nil {
			err = errors.New(l.lastErr)
		}
		it.lastErr, it.class = fmt.Errorf("%s: %w", reason, err), ClassRetriesExhausted
		out = append(out, it)
		return true
	}
	kept := l.retries[:0]
	for _, g := range l.retries {
		if g.items = slices.DeleteFunc(g.items, gone); len(g.items) > 0 {
			kept = append(kept, g)
		}
	}
	clear(l.retries[len(kept):])
	l.retries = kept
	n := len(out)
	l.pending = slices.DeleteFunc(l.pending, gone)
	for _, it := range out[n:] {
		l.pendBytes -= it.size
	}
	if len(out) > n {
		l.space.Notify()
	}
	return out
}

// stop takes nothing more and returns every message the lane holds, for
// the caller to release.
func (l *lane) stop() []*item {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.linger != nil {
		l.linger.Stop()
	}
	if l.retryT != nil {
		l.retryT.Stop()
	}
	out := l.pending
	for _, g := range l.retries {
		out = append(out, g.items...)
	}
	l.pending, l.retries, l.pendBytes = nil, nil, 0
	return out
}

// Failing lists the destinations whose last request failed whole (an MNS
// outage, a refused credential), each with that request's error, for
// readiness: it changes with the first failed request and the first
// success, without waiting for a periodic check. It lists failingListed of
// them at most, in name order, and then one line that says how many more
// fail; FailingCount counts them all.
func (p *Pipeline) Failing() []string {
	var failing []*lane
	for _, l := range p.laneList() {
		l.mu.Lock()
		if l.failing {
			failing = append(failing, l)
		}
		l.mu.Unlock()
	}
	slices.SortFunc(failing, func(a, b *lane) int { return strings.Compare(a.dest.String(), b.dest.String()) })
	var out []string
	for _, l := range failing[:min(len(failing), failingListed)] {
		l.mu.Lock()
		out = append(out, fmt.Sprintf("MNS sends to %s failing: %s", l.dest, l.lastErr))
		l.mu.Unlock()
	}
	if more := len(failing) - failingListed; more > 0 {
		out = append(out, fmt.Sprintf("MNS sends to %d more destinations failing (%d in all; an account's throttling or an outage fails them all at once)", more, len(failing)))
	}
	return out
}

// FailingCount is how many destinations' last request failed whole.
func (p *Pipeline) FailingCount() int {
	return p.sumLanes(func(l *lane) int {
		if l.failing {
			return 1
		}
		return 0
	})
}

// probeAtStop sets each failing lane's retry timer again when the drain
// begins: from then on its retries are due at its next probe (dueOf).
func (p *Pipeline) probeAtStop() {
	for _, l := range p.laneList() {
		l.mu.Lock()
		if l.failing && !l.stopped {
			l.armRetry()
		}
		l.mu.Unlock()
	}
}

// stopLanes stops every lane and releases what they hold.
func (p *Pipeline) stopLanes() {
	for _, l := range p.laneList() {
		p.releaseAll(l.stop())
	}
}

// sendFailed records a request that failed whole (retryable), a probe
// when it was taken while the destination was failing; it logs that the
// destination is failing (not per retry, and at most once a minute),
// sets when the next probe may start (a failed probe grows the backoff; a
// request sent before the failure was known does not) and returns the
// channel that the next success closes.
func (l *lane) sendFailed(n int, err error, now time.Time, probe bool) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	// probeAt is wall clock, as the lane's timers; now (the pipeline's
	// clock) dates the log line.
	wall := time.Now()
	if probe && l.failing {
		l.probeOf = l.failedAt
	}
	l.failedAt = wall
	if Unanswered(err) {
		// No answer within the time limit: counts as a failed probe too
		// (drainend.go).
		l.probeOf = wall
	}
	if !l.failing || !wall.Before(l.probeAt) {
		if !l.failing {
			l.probeFails = 0
		}
		retry := l.p.tune.Load().Retry
		b := Backoff{Min: retry.InitialBackoff, Max: min(retry.MaxBackoff, maxProbeInterval), attempt: l.probeFails}
		l.probeAt = wall.Add(b.Next())
		l.probeFails++
	}
	if !l.failing {
		l.failing = true
		l.wake = make(chan struct{})
		l.space.Notify() // add no longer waits for room in a failing lane
		if !l.logged && now.Sub(l.lastLog) >= stateLogEvery {
			l.logFailing(err, now)
		}
	} else if s := statusLabel(err); l.logged && s != l.loggedStatus && s != "canceled" &&
		(l.lastReason.IsZero() || now.Sub(l.lastReason) >= stateLogEvery) {
		l.loggedStatus, l.lastReason = s, now
		l.p.log.Warn("MNS sends still failing, now for another reason", "dest", l.dest.String(), "err", err)
	}
	l.failRetries += int64(n)
	l.lastErr = err.Error()
	return l.wake
}

// logFailing logs that the destination fails, unless failLogBurst
// destinations were logged in the pipeline's window: then the first one
// left out says that more fail, and a later failure (after the window) says
// how many were left out, each counted once a stateLogEvery. A destination
// left out is not logged as recovered either. l.mu is held.
func (l *lane) logFailing(err error, now time.Time) {
	p := l.p
	if n := p.failLog.takeSuppressed(now); n > 0 {
		p.log.Warn(moreFailedLine, "count", n, "window", deadLogWindow)
	}
	if ok, first := p.failLog.allowOf(now, failLogBurst); !ok {
		if first {
			p.log.Warn(moreFailingLine, "logged", failLogBurst, "window", deadLogWindow, "err", err)
		}
		// Counted once a stateLogEvery, as a logged one is logged: a
		// throttle that lets some requests through fails it again and
		// again.
		l.lastLog = now
		return
	}
	l.logged, l.lastLog, l.since, l.failRetries = true, now, now, 0
	l.loggedStatus = statusLabel(err)
	p.log.Warn("MNS sends failing; holding the messages and retrying with backoff", "dest", l.dest.String(), "err", err)
}

// sendOK records a request with at least one message accepted: the retries
// waiting on this destination become due as soon as their initial backoff
// allows and the new messages that waited at once, so a backlog drains as
// soon as MNS is back rather than after each backoff, and the recovery is
// logged when the failure was logged.
func (l *lane) sendOK(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.okAt = time.Now()
	if !l.failing {
		return
	}
	l.failing = false
	l.probeAt, l.probeFails = time.Time{}, 0
	close(l.wake)
	if len(l.retries) > 0 {
		for i := range l.retries {
			g := &l.retries[i]
			if g.soonest.Before(g.due) {
				g.due = g.soonest
			}
		}
		l.armRetry()
	}
	l.startPending()
	if l.logged && now.Sub(l.lastLog) >= time.Second {
		l.logged = false
		l.p.log.Info("MNS sends recovered", "dest", l.dest.String(), "after", now.Sub(l.since).Round(time.Millisecond), "retries", l.failRetries)
	}
}

// heldForRetry is how many messages wait for a retry (for tests).
func (p *Pipeline) heldForRetry() int { return p.sumLanes((*lane).retryCount) }

// pendingCount is how many new messages wait in the lanes (for tests).
func (p *Pipeline) pendingCount() int {
	return p.sumLanes(func(l *lane) int { return len(l.pending) })
}

// laneList returns the lanes there are now, copied under p.mu so that each
// can then be locked on its own.
func (p *Pipeline) laneList() []*lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Values(p.lanes))
}

// sumLanes adds up count over the lanes, each read under its lock.
func (p *Pipeline) sumLanes(count func(*lane) int) int {
	n := 0
	for _, l := range p.laneList() {
		l.mu.Lock()
		n += count(l)
		l.mu.Unlock()
	}
	return n
}
