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
// goroutine retries the waiting items in turn: the source goes on with the
// messages behind it, a failing target gets one write per backoff interval
// however many wait (not one per message), an entry the target keeps
// refusing does not hold up the others, and a shutdown does not wait for a
// target that keeps failing: the drain deadline releases them.
func (p *Pipeline) deadLetterNow(it *item, reason string, class DeadLetterClass) {
	it.lastErr, it.class = errors.New(reason), class
	items := []*item{it}
	entries := p.deadEntries(items)
	if !p.intakeDead.waiting() {
		err := p.cfg.DeadLetters.DeadLetter(p.sendCtx, entries)
		if err == nil {
			p.deadLettered(items, entries)
			return
		}
		p.noteDeadLetterFailure(err)
	}
	if p.intakeDead.add(it, entries[0]) {
		go p.retryIntakeDeadLetters()
	}
}

// retryIntakeDeadLetters writes the waiting intake dead letters one at a
// time, oldest first, until none waits: a stored one is accepted and the
// next written at once; after a failure the item goes to the back of the
// queue and the next write waits a backoff that grows while writes fail.
// Once the drain deadline passed, each is released.
func (p *Pipeline) retryIntakeDeadLetters() {
	retry := p.tune.Load().Retry
	b := Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff}
	for {
		it, entry, ok := p.intakeDead.take()
		if !ok {
			return
		}
		items, entries := []*item{it}, []DeadLetter{entry}
		if p.sendCtx.Err() != nil {
			p.releaseAll(items)
			continue
		}
		err := p.cfg.DeadLetters.DeadLetter(p.sendCtx, entries)
		if err == nil {
			b.Reset()
			p.deadLettered(items, entries)
			continue
		}
		if p.sendCtx.Err() != nil {
			p.releaseAll(items)
			continue
		}
		p.noteDeadLetterFailure(err)
		p.intakeDead.putBack(it, entry)
		t := time.NewTimer(b.Next())
		select {
		case <-t.C:
		case <-p.sendCtx.Done():
			t.Stop()
		}
	}
}

// intakeDeadLetters are the intake dead letters that wait for a failing
// target, oldest first, each with its entry (dated once, so a target that
// already has it in its file does not write it again), and whether a
// goroutine retries them.
type intakeDeadLetters struct {
	mu      sync.Mutex
	waits   []deadWait
	running bool
}

// deadWait is one intake dead letter waiting: the item and its entry.
type deadWait struct {
	it    *item
	entry DeadLetter
}

// waiting reports whether a retry runs: a new dead letter waits behind it
// instead of trying the failing target itself.
func (q *intakeDeadLetters) waiting() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running
}

// add queues it with its entry; it reports whether the caller must start
// the retrying goroutine (none runs).
func (q *intakeDeadLetters) add(it *item, entry DeadLetter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waits = append(q.waits, deadWait{it, entry})
	start := !q.running
	q.running = true
	return start
}

// putBack queues it again, at the back.
func (q *intakeDeadLetters) putBack(it *item, entry DeadLetter) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waits = append(q.waits, deadWait{it, entry})
}

// take removes the oldest waiting dead letter; with none left it reports
// false, and the retrying goroutine ends.
func (q *intakeDeadLetters) take() (*item, DeadLetter, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waits) == 0 {
		q.waits, q.running = nil, false
		return nil, DeadLetter{}, false
	}
	w := q.waits[0]
	q.waits[0] = deadWait{}
	q.waits = q.waits[1:]
	return w.it, w.entry, true
}

// deadLetter stores items in the dead-letter sink, then accepts them
// upstream. While the dead-letter sink fails, the deliveries stay held and
// the write is retried with backoff; at shutdown they are released.
func (p *Pipeline) deadLetter(items []*item) {
	entries := p.deadEntries(items)
	err := p.cfg.DeadLetters.DeadLetter(p.sendCtx, entries)
	if err == nil || p.retryDeadLetter(items, entries, err) {
		p.deadLettered(items, entries)
	}
}

// deadEntries are the dead-letter sink's entries for items, dated now.
func (p *Pipeline) deadEntries(items []*item) []DeadLetter {
	entries := make([]DeadLetter, len(items))
	now := p.now()
	for i, it := range items {
		reason := "unknown"
		if it.lastErr != nil {
			reason = it.lastErr.Error()
		}
		entries[i] = DeadLetter{Message: &it.d.Message, Reason: reason, Class: it.class, Dest: it.dest, Attempts: it.attempts, Time: now}
	}
	return entries
}

// retryDeadLetter retries the failed write of entries (err) with backoff
// until it works (true) or the drain deadline passes: then it releases
// items and returns false.
func (p *Pipeline) retryDeadLetter(items []*item, entries []DeadLetter, err error) bool {
	retry := p.tune.Load().Retry
	b := Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff}
	for ; err != nil; err = p.cfg.DeadLetters.DeadLetter(p.sendCtx, entries) {
		if p.sendCtx.Err() != nil {
			p.releaseAll(items)
			return false
		}
		p.noteDeadLetterFailure(err)
		t := time.NewTimer(b.Next())
		select {
		case <-t.C:
		case <-p.sendCtx.Done():
			t.Stop()
			p.releaseAll(items)
			return false
		}
	}
	return true
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
	p.deadFail.ok(p.log, p.now())
	for _, e := range entries {
		if p.deadLog.allow(p.now()) {
			p.log.Warn("message dead-lettered", "messageId", e.Message.MessageID, "topic", e.Message.Topic, "dest", destString(e.Dest), "reason", e.Reason)
		}
	}
	if n := p.deadLog.takeSuppressed(p.now()); n > 0 {
		p.log.Warn("more messages dead-lettered; not logged one by one (see the dead-letter target and the dead_lettered_total metric)", "count", n, "window", deadLogWindow)
	}
	p.stats.deadLettered.Add(int64(len(items)))
	p.m.deadLettered(entries)
	for _, it := range items {
		p.done(it.d, Accepted)
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
}

func (d *deadFailing) failed(log *slog.Logger, err error, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
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
// deadLogBurst a window, then one line with the count of the rest.
const (
	deadLogWindow = time.Minute
	deadLogBurst  = 20
)

// logLimiter lets deadLogBurst events a window through and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

func (l *logLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= deadLogWindow {
		l.start, l.n = now, 0
	}
	l.n++
	if l.n > deadLogBurst {
		l.suppressed++
		return false
	}
	return true
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
