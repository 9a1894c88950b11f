package amqpsrc

import (
	"net"
	"sync"
)

// holdWriter is the connection as go-amqp writes to it: while held, frames
// are gathered in memory instead of written, and Flush writes them all in
// one socket write (one TLS record for up to 16 KB).
//
// go-amqp writes every frame on its own: one disposition per settled
// message is one TLS record and one write system call, and at full rate
// those writes were a quarter of the bridge's CPU. The link's settler holds
// the writer while it settles what is queued and flushes once it is done.
//
// go-amqp takes a held frame as written, as it takes a frame the kernel
// buffered; a flush that fails closes the socket, so go-amqp fails the
// connection at its next read and the platform redelivers whatever is
// unsettled. The write deadlines go-amqp sets reach the socket as they are,
// and the flush honours the last one. Close closes at once (it never waits
// for a write): what a hold gathered then is not sent, as after a crash;
// the link's Close lets the settler finish first.
type holdWriter struct {
	net.Conn

	mu   sync.Mutex
	held bool
	buf  []byte
	err  error // a failed flush: every later write fails with it
}

// maxHeld bounds what a hold gathers: beyond it, a write flushes.
const maxHeld = 64 << 10

func newHoldWriter(c net.Conn) *holdWriter { return &holdWriter{Conn: c} }

// Write gathers p while the writer is held, else writes what was gathered
// and p.
func (w *holdWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf) == 0 && !w.held {
		return w.Conn.Write(p)
	}
	w.buf = append(w.buf, p...)
	if w.held && len(w.buf) < maxHeld {
		return len(p), nil
	}
	if err := w.flushLocked(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Hold makes the writes gather until Flush.
func (w *holdWriter) Hold() {
	w.mu.Lock()
	w.held = true
	w.mu.Unlock()
}

// Flush ends the hold and writes what was gathered. A failed write closes
// the connection and is returned by every later Write and Flush.
func (w *holdWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held = false
	if w.err != nil {
		return w.err
	}
	return w.flushLocked()
}

func (w *holdWriter) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.Conn.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
		_ = w.Conn.Close()
	}
	return err
}
