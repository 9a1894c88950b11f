package iotsim

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// entry is one message of a consumer group, queued or out for delivery.
type entry struct {
	msg        Message
	deliveries int // MESSAGE frames sent for it so far
}

// fifo is a slice-backed first-in first-out queue. Not safe for concurrent use.
type fifo struct {
	items []*entry
	head  int
}

func (f *fifo) len() int { return len(f.items) - f.head }

func (f *fifo) push(es ...*entry) { f.items = append(f.items, es...) }

func (f *fifo) pop() *entry {
	if f.head == len(f.items) {
		return nil
	}
	e := f.items[f.head]
	f.items[f.head] = nil
	f.head++
	switch {
	case f.head == len(f.items):
		f.items, f.head = f.items[:0], 0
	case f.head >= 1024 && f.head*2 >= len(f.items):
		n := copy(f.items, f.items[f.head:])
		clear(f.items[n:])
		f.items, f.head = f.items[:n], 0
	}
	return e
}

// group holds the messages of one consumer group: redeliveries, served
// first; fresh messages, bounded by limit; and the backlog (the platform's
// accumulation queue) of messages whose push timed out or was rejected.
// Connections of the group pull from it, so each message goes to exactly one
// of them. Safe for concurrent use.
//
// The backlog is retried in rounds, as the platform does: a round starts
// backlogInterval after the previous one ended (or after the first message
// entered an empty backlog) and takes the messages in the backlog at its
// start; they are pushed at most backlogRate a second for the whole group,
// in between live messages. backlogInterval 0 makes every backlog message
// due at once, backlogRate 0 lifts the rate bound; both 0 is "redeliver at
// once".
type group struct {
	name            string
	limit           int
	backlogInterval time.Duration
	backlogRate     float64

	mu      sync.Mutex
	retry   fifo          // unacked messages given back; never bounded
	fresh   fifo          // published, never delivered; at most limit
	backlog fifo          // timed out or rejected; never bounded
	due     int           // backlog messages of the current round not yet pushed
	roundAt time.Time     // when the next round starts (zero: none scheduled)
	nextAt  time.Time     // the earliest time of the next backlog push (pacing)
	timer   *time.Timer   // wakes the connections for a round or a paced push
	timerAt time.Time     // when timer fires
	ready   chan struct{} // closed when a message is queued
	space   chan struct{} // closed when fresh has room again
	closed  bool
}

func newGroup(name string, limit int, backlogInterval time.Duration, backlogRate float64) *group {
	return &group{name: name, limit: limit, backlogInterval: backlogInterval, backlogRate: backlogRate,
		ready: make(chan struct{}), space: make(chan struct{})}
}

// toBacklog puts messages whose push timed out (or was rejected) in the
// backlog, to be retried in the next round.
func (g *group) toBacklog(es ...*entry) {
	if len(es) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.backlog.push(es...)
	if g.due == 0 && g.roundAt.IsZero() {
		g.roundAt = time.Now().Add(g.backlogInterval)
	}
	g.signalReadyLocked()
}

// takeBacklogLocked returns the next backlog message when one is due and
// the pacing allows it; otherwise nil, after arming the timer for when one
// will be.
func (g *group) takeBacklogLocked(now time.Time) *entry {
	if g.backlog.len() == 0 {
		return nil
	}
	if g.due == 0 {
		if now.Before(g.roundAt) {
			g.wakeAtLocked(g.roundAt)
			return nil
		}
		g.due = g.backlog.len() // a new round: what is in the backlog now
	}
	if g.backlogRate > 0 && now.Before(g.nextAt) {
		g.wakeAtLocked(g.nextAt)
		return nil
	}
	e := g.backlog.pop()
	g.due--
	if g.backlogRate > 0 {
		if g.nextAt.Before(now) {
			g.nextAt = now
		}
		g.nextAt = g.nextAt.Add(time.Duration(float64(time.Second) / g.backlogRate))
	}
	switch {
	case g.due > 0:
	case g.backlog.len() > 0:
		g.roundAt = now.Add(g.backlogInterval) // the round is over
	default:
		g.roundAt = time.Time{}
	}
	return e
}

// wakeAtLocked makes sure the waiting connections are woken at t.
func (g *group) wakeAtLocked(t time.Time) {
	if g.closed || (g.timer != nil && !g.timerAt.After(t)) {
		return
	}
	if g.timer != nil {
		g.timer.Stop()
	}
	g.timerAt = t
	g.timer = time.AfterFunc(time.Until(t), func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.timer = nil
		g.signalReadyLocked()
	})
}

// put queues a fresh message, blocking while the group holds limit fresh
// messages. It returns ctx.Err() or ErrClosed without queuing.
func (g *group) put(ctx context.Context, e *entry) error {
	for {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return ErrClosed
		}
		if g.fresh.len() < g.limit {
			g.fresh.push(e)
			g.signalReadyLocked()
			g.mu.Unlock()
			return nil
		}
		space := g.space
		g.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// requeue gives unacked messages back; they are delivered before fresh ones.
func (g *group) requeue(es ...*entry) {
	if len(es) == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.retry.push(es...)
	g.signalReadyLocked()
}

// take returns the next message, or nil and a channel that is closed when one
// may be available. Redeliveries come first, then a due backlog message
// when the pacing allows one, then fresh messages.
func (g *group) take() (*entry, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.retry.pop(); e != nil {
		return e, nil
	}
	if e := g.takeBacklogLocked(time.Now()); e != nil {
		return e, nil
	}
	if e := g.fresh.pop(); e != nil {
		if g.fresh.len() == g.limit-1 && !g.closed {
			close(g.space)
			g.space = make(chan struct{})
		}
		return e, nil
	}
	return nil, g.ready
}

// queued returns the number of messages waiting for delivery, backlog
// included, and the backlog alone.
func (g *group) queued() (all, backlog int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.retry.len() + g.fresh.len() + g.backlog.len(), g.backlog.len()
}

// close wakes and fails blocked publishers.
func (g *group) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.space)
		if g.timer != nil {
			g.timer.Stop()
			g.timer = nil
		}
	}
}

func (g *group) signalReadyLocked() {
	close(g.ready)
	g.ready = make(chan struct{})
}

// sent is a message out on one connection awaiting its settlement (a STOMP
// ACK or NACK, an AMQP disposition) until deadline, the ACK timeout. Both
// protocols' deliveries embed it, so that one set of rules gives their
// messages back: in the order they were sent, to the group's retry queue
// (connection gone, NACK) or to its backlog (ACK timeout, platform log 9650).
type sent struct {
	e        *entry
	seq      int64 // the connection's send order
	deadline time.Time
}

func (d *sent) out() *sent { return d }

// outstanding is a protocol's delivery: it embeds sent.
type outstanding interface{ out() *sent }

// inOrder returns the deliveries' messages in the order they were sent, so
// that redeliveries keep the original order.
func inOrder[D outstanding](ds []D) []*entry {
	slices.SortFunc(ds, func(a, b D) int { return cmp.Compare(a.out().seq, b.out().seq) })
	es := make([]*entry, len(ds))
	for i, d := range ds {
		es[i] = d.out().e
	}
	return es
}

// unsettled is a connection's deliveries awaiting settlement, by the
// protocol's delivery id (STOMP ack id, AMQP delivery-id). mu is the
// connection's lock: it guards m, which is nil once the connection is gone.
// The connection reads and changes m itself under mu; the methods below
// take mu.
type unsettled[K comparable, D outstanding] struct {
	mu *sync.Mutex
	m  map[K]D
}

func newUnsettled[K comparable, D outstanding](mu *sync.Mutex) unsettled[K, D] {
	return unsettled[K, D]{mu: mu, m: make(map[K]D)}
}

// len returns the number of deliveries awaiting settlement.
func (u *unsettled[K, D]) len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.m)
}

// untrack removes the delivery k and reports whether it was there.
func (u *unsettled[K, D]) untrack(k K) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.m[k]
	delete(u.m, k)
	return ok
}

// takeLate removes the deliveries whose deadline has passed at now and
// returns their messages in send order.
func (u *unsettled[K, D]) takeLate(now time.Time) []*entry {
	u.mu.Lock()
	defer u.mu.Unlock()
	var late []D
	for k, d := range u.m {
		if !now.Before(d.out().deadline) {
			late = append(late, d)
			delete(u.m, k)
		}
	}
	return inOrder(late)
}

// takeAll removes every delivery and returns their messages in send order.
func (u *unsettled[K, D]) takeAll() []*entry {
	u.mu.Lock()
	defer u.mu.Unlock()
	return takeAllLocked(u.m)
}

// takeAllLocked removes every delivery from pending and returns their
// messages in send order. The caller holds the lock that guards pending.
func takeAllLocked[K comparable, D outstanding](pending map[K]D) []*entry {
	all := make([]D, 0, len(pending))
	for k, d := range pending {
		all = append(all, d)
		delete(pending, k)
	}
	return inOrder(all)
}

// ackTimedOut puts the messages a connection did not settle within the ACK
// timeout in g's backlog, counts and logs them (platform log 9650).
func (s *Server) ackTimedOut(g *group, log *slog.Logger, back []*entry) {
	s.expired.Add(int64(len(back)))
	log.Info("ACK timeout (9650): to the backlog", "messages", len(back), "ackTimeout", s.cfg.AckTimeout)
	g.toBacklog(back...)
}

// countSent adds n (1 before a write, -1 to take it back after a failed
// one) to the delivered count, to the redelivered count for a redelivery
// and to the acked count for a message settled as it is sent (STOMP ack
// auto, AMQP pre-settled). Counting before the write means a client that has
// the message always sees it in Stats.
func (s *Server) countSent(n int64, redelivery, settled bool) {
	s.delivered.Add(n)
	if redelivery {
		s.redelivered.Add(n)
	}
	if settled {
		s.acked.Add(n)
	}
}

// send counts e as delivered and writes it with write; when the write
// fails it undoes the delivery: the counts go back, and the message goes
// back to g when it was settled as it was sent or untrack finds it still
// pending (and removes it). When untrack does not, an ACK timeout or the
// connection's end already gave it back.
func (s *Server) send(g *group, e *entry, redelivery, settled bool, untrack func() bool, write func() error) error {
	s.countSent(1, redelivery, settled)
	err := write()
	if err != nil {
		s.countSent(-1, redelivery, settled)
		if settled || untrack() {
			e.deliveries--
			g.requeue(e)
		}
	}
	return err
}

// signals is how a connection of either protocol tells its goroutines that
// it is closed (done) or that its send loop has work (kick).
type signals struct {
	done chan struct{} // closed when the connection is closed
	kick chan struct{} // capacity 1: wakes the send loop
}

func newSignals() signals {
	return signals{done: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// isClosed reports whether the connection was closed.
func (s *signals) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// wake makes the send loop look again; it never blocks.
func (s *signals) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
