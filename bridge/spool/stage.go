package spool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Stage puts the local spool between the source and the pipeline:
//
//	source ──Intake──► spool (group-committed fsync) ──settle upstream──► done
//	                      └──feeder (in key order)──► pipeline ──accepted──► spool.Delete
//
// A delivery is settled upstream as soon as its message is durable in the
// spool (with STOMP client-individual and AMQP that is the ACK/Accept); the
// feeder then forwards from the spool, and a message leaves the spool only
// when MNS accepted it or it was dead-lettered. Released messages (shutdown)
// stay in the spool and are forwarded again on the next start.
//
// When the spool is full (Options.MaxBytes) or its commits fail (disk full,
// I/O errors), Intake blocks, so the source stops consuming. A full spool
// is logged once per episode (Stats.Full: from the first refusal until it
// holds 90% of MaxBytes or less), whether Intake or the retry of failed
// commits meets it, and so is the room again. On failed commits the messages
// whose commit failed are kept in memory and appended again with backoff
// until a commit succeeds. They are never released while the bridge runs
// (with STOMP ack auto a release would lose them; with client acks it would
// make the platform redeliver in a storm); at shutdown they are released
// when the platform redelivers them and handed back (Close) when not.
type Stage struct {
	sp       *Spool
	pipeline bridge.Handler
	log      *slog.Logger

	earlier uint64 // the last key when the Stage was made: up to it, what an earlier run left

	// The retry of failed commits: stop ends it (Close); retries counts the
	// retry scheduled or running, for Close to wait for.
	stop    context.Context
	cancel  context.CancelFunc
	retries sync.WaitGroup

	mu      sync.Mutex
	failed  []*bridge.Delivery // commits failed: to append again
	failing error              // the last commit error while commits fail, nil when healthy
	retry   bool               // a retry of failed is scheduled or running
	closed  bool               // Close was called: no more retries
	full    bool               // a full spool was logged, its room again not yet
	held    window             // committed, not yet forwarded: the feeder takes them from here

	fromMemory, readBack atomic.Int64 // messages the feeder forwarded from held and from the file
	// requeued counts the messages the feeder forwarded that the pipeline
	// released (shutdown): they stay in the spool. released counts those
	// Close gave back upstream: they never reached the spool.
	requeued, released atomic.Int64
}

// Bounds of the window of committed messages that the feeder forwards from
// memory. Beyond them (MNS slower than the platform for a while, an outage)
// committed messages are only in the file and the feeder reads them back.
// When MNS keeps up, the feeder takes each commit's messages (about 20 at
// 5,000 msgs/s) as soon as it is durable, so a small window serves them all;
// a larger one would only hold more memory while a backlog builds (about
// 2 KB a small STOMP message: the Delivery, its headers, body and map).
const (
	windowLen   = 1024
	windowBytes = 2 << 20
	// heldOverhead is what a held message costs besides its body, for
	// windowBytes.
	heldOverhead = 1024
)

// window is a bounded FIFO of committed deliveries in key order. The writer
// calls the done functions in key order, so appending keeps it sorted.
// After a message did not fit, the window takes none until the feeder has
// emptied it: the feeder then reads back one long run of keys instead of
// short runs between the few messages that found room one at a time.
type window struct {
	q        []heldMsg // q[head:] are held
	head     int
	bytes    int
	dropped  uint64 // 1 + the highest key that did not fit; 0: none
	overflow bool   // a message did not fit and the window has not been empty since
}

type heldMsg struct {
	key uint64
	d   *bridge.Delivery
}

func heldSize(d *bridge.Delivery) int { return len(d.Body) + heldOverhead }

// push holds d under key, or only notes its key when the window is full:
// the feeder then reads it back from the file.
func (w *window) push(key uint64, d *bridge.Delivery) {
	n := len(w.q) - w.head
	if w.overflow || n >= windowLen || (n > 0 && w.bytes+heldSize(d) > windowBytes) {
		w.dropped = max(w.dropped, key+1)
		w.overflow = n > 0
		return
	}
	if w.head > 0 && len(w.q) == cap(w.q) {
		// Slide the held ones to the front instead of growing.
		w.q = w.q[:copy(w.q, w.q[w.head:])]
		w.head = 0
	}
	w.q = append(w.q, heldMsg{key, d})
	w.bytes += heldSize(d)
}

// take returns the held delivery with key next, after dropping those below
// next (the feeder read them back). When next is not held, it returns the
// last key that the feeder must read back from the file before the window
// can serve again (the one before the first held, or the last dropped),
// and ok false; gapTo < next means there is nothing to read.
func (w *window) take(next uint64) (d *bridge.Delivery, gapTo uint64, ok bool) {
	for w.head < len(w.q) {
		h := w.q[w.head]
		if h.key > next {
			return nil, h.key - 1, false
		}
		w.q[w.head] = heldMsg{}
		w.head++
		w.bytes -= heldSize(h.d)
		if w.head == len(w.q) {
			w.q, w.head, w.overflow = w.q[:0], 0, false
		}
		if h.key == next {
			return h.d, 0, true
		}
	}
	if w.dropped > next {
		return nil, w.dropped - 1, false
	}
	return nil, 0, false
}

// NewStage returns the stage that spools deliveries in sp and forwards
// them to next (the pipeline's Handle); Feed must run for them to leave the
// spool. The messages in sp when NewStage is called are what an earlier
// run left: Feed reads them back first, whenever it starts; the ones
// Intake commits later reach it through memory.
func NewStage(sp *Spool, next bridge.Handler, log *slog.Logger) *Stage {
	stop, cancel := context.WithCancel(context.Background())
	return &Stage{sp: sp, pipeline: next, log: log, earlier: sp.notified.Load(), stop: stop, cancel: cancel}
}

// retryWait is the pause between attempts while the spool is full or its
// commits fail.
const retryWait = 200 * time.Millisecond

// Intake is the bridge.Handler given to the source. It returns once d is
// queued for a durable write; it blocks while the spool is full or its
// commits fail, until they succeed again or ctx is done.
func (s *Stage) Intake(ctx context.Context, d *bridge.Delivery) error {
	for {
		if err := s.waitFailed(ctx); err != nil {
			return err
		}
		err := s.sp.Append(ctx, &d.Message, s.committed(d))
		if err == nil {
			s.noteRoom()
			return nil
		}
		switch {
		case errors.Is(err, ErrFull):
			s.noteFull(err)
		case !bridge.Retryable(err):
			// A message larger than the whole spool: forward it directly.
			return s.pipeline(ctx, d)
		default:
			return err
		}
		if err := sleep(ctx, retryWait); err != nil {
			return err
		}
	}
}

// committed returns the Append callback for d: on success it settles d
// upstream and holds it for the feeder (the commit's notice, Spool.stored,
// wakes it once the commit's callbacks have run); on failure it keeps d for
// another append. Writes fail (s.failing: Intake waits) from a failure
// until a success of a commit that stored all its messages
// (Spool.commitsFail): near a full disk a commit stores the messages that
// fit and fails the others, and each such commit logged "succeed again"
// and "failing" and let Intake through between. It runs on the spool's
// writer goroutine and must not block.
func (s *Stage) committed(d *bridge.Delivery) func(uint64, error) {
	return func(key uint64, err error) {
		s.mu.Lock()
		if err != nil {
			s.failed = append(s.failed, d)
			if s.failing == nil {
				s.log.Error("spool writes failing: not consuming until they succeed; the messages are held in memory", "err", err)
			}
			s.failing = err
			s.scheduleRetry()
			s.mu.Unlock()
			return
		}
		if s.failing != nil && !s.sp.commitsFail() {
			s.failing = nil
			// Not "consuming": the held messages are appended first, and
			// the spool may be full (logged apart).
			s.log.Info("spool writes succeed again")
		}
		s.mu.Unlock()
		d.Accept()
		s.mu.Lock()
		s.held.push(key, d)
		s.mu.Unlock()
	}
}

// scheduleRetry appends the messages whose commit failed again after
// retryWait, unless a retry is already scheduled or running (it schedules
// the next one when it ends) or the Stage is closed. The retry does not
// wait for another Intake: a source gone quiet (a low-rate box at night)
// must not leave them in memory, neither spooled nor forwarded. s.mu must
// be held.
func (s *Stage) scheduleRetry() {
	if s.retry || s.closed {
		return
	}
	s.retry = true
	s.retries.Add(1)
	time.AfterFunc(retryWait, s.retryFailed)
}

// retryFailed appends the messages whose commit failed again, in the order
// they were first appended. Those it could not append (the spool full) wait
// for the next retry, or for Close once the spool or the Stage is closed;
// those whose commit fails again are added back by committed.
func (s *Stage) retryFailed() {
	defer s.retries.Done()
	s.mu.Lock()
	retry := s.failed
	s.failed = nil
	s.mu.Unlock()
	closed := false
	for i, d := range retry {
		if err := s.sp.Append(s.stop, &d.Message, s.committed(d)); err != nil {
			closed = errors.Is(err, ErrClosed)
			if errors.Is(err, ErrFull) {
				s.noteFull(err)
			}
			s.mu.Lock()
			s.failed = append(s.failed, retry[i:]...)
			s.mu.Unlock()
			break
		}
		s.noteRoom()
	}
	s.mu.Lock()
	s.retry = false
	if len(s.failed) > 0 && !closed {
		s.scheduleRetry()
	}
	s.mu.Unlock()
}

// waitFailed blocks while commits fail or the messages whose commit failed
// are not all appended again (Intake's message goes after them), until
// then or ctx is done (ctx's error).
func (s *Stage) waitFailed(ctx context.Context) error {
	for {
		s.mu.Lock()
		wait := s.failing != nil || s.retry
		s.mu.Unlock()
		if !wait {
			return nil
		}
		if err := sleep(ctx, retryWait); err != nil {
			return err
		}
	}
}

// Close ends the retries of failed commits and waits for the commits
// already queued (their messages are then in the spool or held here). It
// releases the messages still held after failed commits (shutdown) that
// the platform redelivers, and returns the others (STOMP ack auto) for the
// caller to keep: releasing those would lose them. The caller stops
// calling Intake first.
func (s *Stage) Close() (keep []*bridge.Delivery) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.retries.Wait()
	s.sp.sync()
	s.mu.Lock()
	held := s.failed
	s.failed = nil
	s.mu.Unlock()
	released := 0
	for _, d := range held {
		if !d.Redeliverable() {
			keep = append(keep, d)
			continue
		}
		d.Release()
		released++
	}
	s.released.Add(int64(released))
	if released > 0 {
		s.log.Warn("released messages that never reached the spool (the platform redelivers them)", "count", released)
	}
	return keep
}

// noteFull logs a full spool (err wraps ErrFull), once per episode: until
// noteRoom sees the spool out of it.
func (s *Stage) noteFull(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full {
		s.full = true
		// The source reads again as soon as one message fits, so as fast
		// as MNS takes them; the episode (and this line) ends at 90%.
		s.log.Warn("spool full: not consuming until MNS takes messages, then only as fast as MNS takes them, "+
			"until the spool holds 90% of max_bytes or less",
			"max_bytes", s.sp.maxBytes, "err", err)
	}
}

// noteRoom is called after an Append succeeded: when a full spool was
// logged and the spool is out of that episode (Stats.Full), it logs the
// room again. Near the bound an Append finds room for one message now and
// then; that is not the episode's end.
func (s *Stage) noteRoom() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full && !s.sp.Stats().Full {
		s.full = false
		s.log.Info("spool has room again; consuming")
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Releases returns how many deliveries the Stage gave back upstream (at
// Close: they never reached the spool; the platform redelivers them) and
// how many messages it fed the pipeline released (they stay in the spool).
// The pipeline's own count of releases holds both those it fed and those
// Intake handed it directly (a message larger than the whole spool).
func (s *Stage) Releases() (upstream, requeued int64) {
	return s.released.Load(), s.requeued.Load()
}

// spoolSettler deletes a forwarded message from the spool; a released one
// stays there, counted in requeued.
type spoolSettler struct {
	sp       *Spool
	requeued *atomic.Int64
}

func (ss spoolSettler) Settle(d *bridge.Delivery, o bridge.Outcome) {
	switch o {
	case bridge.Accepted:
		ss.sp.Delete(d.Token.(uint64))
	case bridge.Released:
		ss.requeued.Add(1)
	}
}

// Feed forwards spooled messages into the pipeline in key order, starting
// with what an earlier run left, until ctx is done. It blocks in the next
// handler when the pipeline is full. A message committed in this run is
// forwarded from memory (the delivery that Intake took) while it fits in
// the window; the others are read back from the file: an earlier run's
// (the keys up to the last one when the Stage was made, so this run's
// commits are not among them however late Feed starts), the ones that did
// not fit, and any the window missed (appended besides Intake, or taken
// from it for a forward that failed), up to the last key whose commit the
// window has heard of. It wakes for each commit that stored Appends (the
// spool's notice, after their callbacks), and while a forward or a read
// back fails it tries again every retryWait; otherwise it sleeps. Once ctx
// is done it hands over nothing more, not even the rest of a read back: the
// pipeline would take what it has room for, for a drain that can only give
// it back.
func (s *Stage) Feed(ctx context.Context) {
	settler := spoolSettler{sp: s.sp, requeued: &s.requeued}
	next := uint64(0) // every key below has been forwarded
	forward := func(key uint64, m bridge.Message) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.pipeline(ctx, bridge.NewDelivery(m, settler, key)); err != nil {
			return err
		}
		next = key + 1
		return nil
	}
	readBack := func(to uint64) bool {
		upper, err := s.sp.replay(next, to, func(key uint64, m bridge.Message) error {
			s.readBack.Add(1)
			return forward(key, m)
		})
		if err == nil {
			next = max(next, upper+1) // what is missing below upper+1 was deleted
			return true
		}
		if ctx.Err() == nil {
			s.log.Error("reading the spool failed; retrying", "err", err)
		}
		return false
	}
	// retry is armed while a forward or a read back failed (ok false),
	// only then: an idle feeder has no timer.
	retry := time.NewTimer(retryWait)
	retry.Stop()
	defer retry.Stop()
	armed := false
	ok := readBack(s.earlier)
	for ctx.Err() == nil {
		if ok {
			// Loaded before take: every key up to it that this Stage
			// committed is in the window, or taken, or noted as dropped.
			heard := s.sp.notified.Load()
			s.mu.Lock()
			d, gapTo, held := s.held.take(next)
			s.mu.Unlock()
			switch {
			case held:
				s.fromMemory.Add(1)
				ok = forward(next, d.Message) == nil
				continue
			case gapTo >= next:
				ok = readBack(gapTo)
				continue
			case heard >= next:
				// Whatever the window missed up to heard: a message whose
				// forward failed, one appended besides Intake.
				ok = readBack(heard)
				continue
			}
		} else if !armed {
			// Not pushed back by the notices that come meanwhile.
			retry.Reset(retryWait)
			armed = true
		}
		select {
		case <-ctx.Done():
			return
		case <-s.sp.stored:
		case <-retry.C:
			// A failed forward or read is tried again from next.
			ok, armed = true, false
		}
	}
}
