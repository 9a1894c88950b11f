package iotsim

import (
	"context"
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

func (f *fifo) push(e *entry) { f.items = append(f.items, e) }

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
	for _, e := range es {
		g.backlog.push(e)
	}
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
	for _, e := range es {
		g.retry.push(e)
	}
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
