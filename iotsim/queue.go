package iotsim

import (
	"context"
	"sync"
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

// group is the backlog of one consumer group: redeliveries, served first,
// and fresh messages, bounded by limit. Connections of the group pull from it,
// so each message goes to exactly one of them. Safe for concurrent use.
type group struct {
	name  string
	limit int

	mu     sync.Mutex
	retry  fifo          // unacked messages given back; never bounded
	fresh  fifo          // published, never delivered; at most limit
	ready  chan struct{} // closed when a message is queued
	space  chan struct{} // closed when fresh has room again
	closed bool
}

func newGroup(name string, limit int) *group {
	return &group{name: name, limit: limit, ready: make(chan struct{}), space: make(chan struct{})}
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
// may be available.
func (g *group) take() (*entry, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.retry.pop(); e != nil {
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

// queued returns the number of messages waiting for delivery.
func (g *group) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.retry.len() + g.fresh.len()
}

// close wakes and fails blocked publishers.
func (g *group) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.space)
	}
}

func (g *group) signalReadyLocked() {
	close(g.ready)
	g.ready = make(chan struct{})
}
