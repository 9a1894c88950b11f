// Package gatherconn is a net.Conn whose reads gather: while messages
// arrive densely, a read that finds its buffer empty first waits a short
// pause, so that one socket read, and one wake-up of the reading goroutine,
// serves the several messages that arrived meanwhile instead of one each.
//
// At a moderate rate (a few thousand small messages a second) a reader that
// takes each message as it arrives parks and wakes a thread for every one,
// and that costs more CPU than the message itself. At full rate the socket
// always holds more than a buffer and nothing pauses; at a low rate a read
// waits longer than the pause for its data, and nothing pauses either. A
// pause adds at most its length to a message's latency.
package gatherconn

import (
	"net"
	"sync/atomic"
	"time"
)

// BufferSize is the read buffer: one socket read takes up to this much.
const BufferSize = 32 << 10

// Conn wraps a net.Conn; its Read gathers (see the package comment) once
// Gather was called. Read is for one goroutine at a time (a TLS connection
// above it reads so); the other methods are the wrapped conn's.
type Conn struct {
	net.Conn
	pause time.Duration
	on    atomic.Bool

	buf  []byte
	r, w int
	err  error // a read error held until the buffer is drained
	// dense is set when the last socket read drained the socket (did not
	// fill its buffer) after waiting less than pause for data: the next
	// one pauses first.
	dense bool

	reads, pauses atomic.Int64

	// now and sleep are the clock (tests replace them).
	now   func() time.Time
	sleep func(time.Duration)
}

// New wraps c; once Gather is called, reads pause for pause (0: never).
func New(c net.Conn, pause time.Duration) *Conn {
	return &Conn{Conn: c, pause: pause, now: time.Now, sleep: time.Sleep}
}

// Gather turns the pauses on: call it after the handshake and the login,
// whose replies should not wait. Safe to call from any goroutine.
func (c *Conn) Gather() { c.on.Store(true) }

// Stats returns how many socket reads were made, and how many of them
// paused first. Safe to call from any goroutine.
func (c *Conn) Stats() (reads, pauses int64) { return c.reads.Load(), c.pauses.Load() }

// Read returns buffered data, or refills the buffer with one socket read
// (after a pause while the traffic is dense). A read into p of at least
// BufferSize bytes goes to p directly.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r < c.w {
		n := copy(p, c.buf[c.r:c.w])
		c.r += n
		return n, nil
	}
	if c.err != nil {
		err := c.err
		c.err = nil
		return 0, err
	}
	if c.dense && c.pause > 0 && c.on.Load() {
		c.pauses.Add(1)
		c.sleep(c.pause)
	}
	dst := p
	if len(p) < BufferSize {
		if c.buf == nil {
			c.buf = make([]byte, BufferSize)
		}
		dst = c.buf
	}
	start := c.now()
	n, err := c.Conn.Read(dst)
	c.reads.Add(1)
	c.dense = n > 0 && n < len(dst) && c.now().Sub(start) < c.pause
	if len(p) >= BufferSize {
		return n, err
	}
	k := copy(p, c.buf[:n])
	c.r, c.w = k, n
	if k < n && err != nil {
		c.err, err = err, nil // the rest of the data first
	}
	return k, err
}
