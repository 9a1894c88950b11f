package bridge

import (
	"errors"
	"log/slog"
	"sync"
	"time"
)

// deadLetterNow dead-letters one item from Handle (invalid or unroutable).
// The first write is made in the caller's goroutine. When it fails, or
// while earlier ones wait for a failing target, the item waits in
// p.intakeDead (held, counting against the in-flight bounds) and one
// goroutine retries the waiting items in turn (retryIntakeDeadLetters): the
// source goes on with the messages behind it, a failing target gets one
// write per backoff interval however many wait (not one per message), an
// entry the target keeps refusing does not hold up the others, and a
// shutdown does not wait for a target that keeps failing: the drain
// deadline releases them, or the drain ends sooner (drainend.go).
func (p *Pipeline) deadLetterNow(it *item, reason string, class DeadLetterClass) {
	it.lastErr, it.class = errors.New(reason), class
	w := p.deadWrite([]*item{it})
	if !p.intakeDead.waiting() && p.newDeadRetry().try(w) {
		return
	}
	p.deadWaits.add(w)
	if p.intakeDead.add(w) {
		go p.retryIntakeDeadLetters()
	}
}

// retryIntakeDeadLetters writes the waiting intake dead letters one at a
// time, oldest first, until none waits: a stored one is accepted and the
// next written at once; after a failure the write goes to the back of the
// queue and the next waits the backoff.
func (p *Pipeline) retryIntakeDeadLetters() {
	r := p.newDeadRetry()
	for w, ok := p.intakeDead.take(); ok; w, ok = p.intakeDead.take() {
		if !r.try(w) {
			p.intakeDead.putBack(w)
			r.wait()
		}
	}
}

// deadLetter stores items (a lane's) in the dead-letter sink, then accepts
// them upstream. While the dead-letter sink fails, the caller (a lane's
// sender) retries the same write with backoff, the deliveries held; at the
// drain deadline they are released.
func (p *Pipeline) deadLetter(items []*item) {
	w := p.deadWrite(items)
	r := p.newDeadRetry()
	for !r.try(w) {
		r.wait()
	}
}

// deadLetter is deadLetter from one of the lane's senders, which counts as
// writing dead letters meanwhile.
func (l *lane) deadLetter(items []*item) {
	l.mu.Lock()
	l.deadLettering++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.deadLettering--
		l.mu.Unlock()
	}()
	l.p.deadLetter(items)
}

// deadWrite is one write to the dead-letter sink: the items and their
// entries (dated once, so a target that already has them in its file does
// not write them again on a retry).
type deadWrite struct {
	items   []*item
	entries []DeadLetter
}

// deadWrite is the write of items, dated now.
func (p *Pipeline) deadWrite(items []*item) *deadWrite {
	entries := make([]DeadLetter, len(items))
	now := p.now()
	for i, it := range items {
		reason := "unknown"
		if it.lastErr != nil {
			reason = it.lastErr.Error()
		}
		entries[i] = DeadLetter{Message: &it.d.Message, Reason: reason, Class: it.class, Dest: it.dest, Attempts: it.attempts, Time: now,
			Redeliverable: it.d.Redeliverable()}
	}
	return &deadWrite{items, entries}
}

// deadRetry is how one writer (a lane's sender, the intake retry) writes
// dead letters while the target may fail: it owns the backoff between
// failed writes, and the release of the items once the drain deadline
// passed. Which write comes next after a failure is the writer's policy.
// A stop asks a failing target again at once, and then at least every
// maxProbeInterval, as a failing destination's probes: the drain ends
// sooner when the target still fails (drainend.go).
type deadRetry struct {
	p         *Pipeline
	b         Backoff
	drainSeen bool // the wait no longer ends at the stop: it did once
}

func (p *Pipeline) newDeadRetry() *deadRetry {
	retry := p.tune.Load().Retry
	return &deadRetry{p: p, b: Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff}, drainSeen: p.closing.Load()}
}

// try writes w once. It reports true when w is done with: stored (then
// accepted upstream, and the backoff starts again from its minimum), or
// released because the drain deadline passed, before or during the write.
// After a failure (logged once and shown by Stats, see deadFailing) it
// reports false: the caller waits and tries again.
// A write that failed waits in p.deadWaits until it is done with.
func (r *deadRetry) try(w *deadWrite) bool {
	p := r.p
	if p.sendCtx.Err() != nil {
		p.deadWaits.remove(w)
		p.releaseAll(w.items)
		return true
	}
	err := p.cfg.DeadLetters.DeadLetter(p.sendCtx, w.entries)
	switch {
	case err == nil:
		r.b.Reset()
		p.deadFail.ok(p.log, p.now())
		p.deadWaits.remove(w)
		p.deadLettered(w.items, w.entries)
	case p.sendCtx.Err() != nil:
		p.deadWaits.remove(w)
		p.releaseAll(w.items)
	default:
		p.deadWaits.add(w)
		p.noteDeadLetterFailure(err)
		return false
	}
	return true
}

// wait waits the backoff after a failed write (it grows while writes fail),
// or until the drain deadline passed. The stop ends the wait once, and from
// then on it waits maxProbeInterval at most.
func (r *deadRetry) wait() {
	d := r.b.Next()
	stop := r.p.closed
	if r.drainSeen {
		d, stop = min(d, maxProbeInterval), nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-stop:
		r.drainSeen = true
	case <-r.p.sendCtx.Done():
	}
}

// intakeDeadLetters are the intake dead letters that wait for a failing
// target, oldest first, and whether a goroutine retries them.
type intakeDeadLetters struct {
	mu      sync.Mutex
	waits   []*deadWrite
	running bool
}

// waiting reports whether a retry runs: a new dead letter waits behind it
// instead of trying the failing target itself.
func (q *intakeDeadLetters) waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running
}

// add queues w; it reports whether the caller must start the retrying
// goroutine (none runs).
func (q *intakeDeadLetters) add(w *deadWrite) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waits = append(q.waits, w)
	start := !q.running
	q.running = true
	return start
}

// putBack queues w again, at the back.
func (q *intakeDeadLetters) putBack(w *deadWrite) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waits = append(q.waits, w)
}

// take removes the oldest waiting write; with none left it reports false,
// and the retrying goroutine ends.
func (q *intakeDeadLetters) take() (*deadWrite, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waits) == 0 {
		q.waits, q.running = nil, false
		return nil, false
	}
	w := q.waits[0]
	q.waits[0] = nil
	q.waits = q.waits[1:]
	return w, true
}

// deadWaiting are the dead-letter writes that wait for a failing target:
// the intake's queued ones, and a lane sender's between its retries. A stop
// counts their deliveries (drainend.go).
type deadWaiting struct {
	mu     sync.Mutex
	writes map[*deadWrite]struct{}
}

func (q *deadWaiting) add(w *deadWrite) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.writes == nil {
		q.writes = make(map[*deadWrite]struct{})
	}
	q.writes[w] = struct{}{}
}

func (q *deadWaiting) remove(w *deadWrite) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.writes, w)
}

// noteDeadLetterFailure records a dead-letter write that returned err: the
// target fails (logged once, /readyz), and the pipeline waits for it, it is
// not stuck (liveness.go).
func (p *Pipeline) noteDeadLetterFailure(err error) {
	p.answered(p.now())
	p.deadFail.failed(p.log, err, p.now())
}

// deadLettered logs, counts and accepts items once entries are stored.
func (p *Pipeline) deadLettered(items []*item, entries []DeadLetter) {
	for _, e := range entries {
		switch ok, first := p.deadLog.allowOf(p.now(), deadLogBurst); {
		case ok:
			p.log.Warn("message dead-lettered", "messageId", e.Message.MessageID, "topic", e.Message.Topic, "dest", destString(e.Dest), "reason", e.Reason)
		case first:
			p.log.Warn(moreDeadLine, "logged", deadLogBurst, "window", deadLogWindow)
		}
	}
	if n := p.deadLog.takeSuppressed(p.now()); n > 0 {
		p.log.Warn("more messages dead-lettered; not logged one by one (see the dead-letter target and the dead_lettered_total metric)", "count", n, "window", deadLogWindow)
	}
	p.m.deadLettered(entries)
	for _, it := range items {
		p.done(it.d, Accepted, &p.stats.deadLettered)
	}
}

// deadFailing is the state of the dead-letter writes across all the
// pipeline's writers: the first failure is logged once (at most once a
// stateLogEvery), and the recovery once; meanwhile the messages are held,
// which stops intake once the pipeline is full.
type deadFailing struct {
	mu      sync.Mutex
	err     string // "" while writes succeed
	logged  bool
	lastLog time.Time
	since   time.Time
	// For a stop (drainend.go), by the wall clock: the last failed write;
	// the failed write before it when none was stored in between (or the
	// last one, when it got no answer within its time limit); the last
	// write stored.
	failedAt, retryOf, okAt time.Time
}

func (d *deadFailing) failed(log *slog.Logger, err error, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wall := time.Now()
	if d.err != "" {
		d.retryOf = d.failedAt
	}
	d.failedAt = wall
	if Unanswered(err) {
		d.retryOf = wall
	}
	if d.err == "" {
		d.since = now
	}
	d.err = err.Error()
	if !d.logged && (d.lastLog.IsZero() || now.Sub(d.lastLog) >= stateLogEvery) {
		d.logged, d.lastLog = true, now
		log.Error("dead-letter write failed; holding the messages and retrying (the source pauses once the pipeline is full)", "err", err)
	}
}

func (d *deadFailing) ok(log *slog.Logger, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.okAt = time.Now()
	if d.err == "" {
		return
	}
	d.err = ""
	if d.logged {
		d.logged = false
		log.Info("dead-letter write recovered", "after", now.Sub(d.since).Round(time.Millisecond))
	}
}

func (d *deadFailing) current() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// deadLogWindow and deadLogBurst bound the dead-letter log lines: at most
// deadLogBurst a window, then moreDeadLine once, and the count of the rest
// with the first dead letter after the window.
const (
	deadLogWindow = time.Minute
	deadLogBurst  = 20
	moreDeadLine  = "more messages dead-lettered; the others are not logged one by one for the minute (the dead-letter target has each with its destination and reason, dead_lettered_total counts them)"
)

// logLimiter lets a burst of events a window through and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

// allowOf lets burst events a window through; first says that the event
// refused is the first refused in its window.
func (l *logLimiter) allowOf(now time.Time, burst int) (ok, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= deadLogWindow {
		l.start, l.n = now, 0
	}
	l.n++
	if l.n > burst {
		l.suppressed++
		return false, l.n == burst+1
	}
	return true, false
}

// takeSuppressed returns the count suppressed once the window has passed
// (and resets it), else 0.
func (l *logLimiter) takeSuppressed(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.suppressed == 0 || now.Sub(l.start) < deadLogWindow {
		return 0
	}
	n := l.suppressed
	l.suppressed = 0
	return n
}

func destString(d Destination) string {
	if d.Kind == 0 {
		return ""
	}
	return d.String()
}
