package amqpsrc

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// readWatch is the server side of an AMQP connection as the source sees
// it: it passes the bytes through to the client unchanged and notes when the
// last one arrived. Every AMQP frame counts, empty (heart-beat) frames too,
// so a live connection is never silent for long: the server must send a
// frame within the idle-time-out the bridge advertises.
type readWatch struct {
	net.Conn
	last   atomic.Int64 // unix nanoseconds of the last byte read
	silent atomic.Bool  // the watchdog closed the connection
	limit  time.Duration
	idle   string // the operator's name of Config.IdleTimeout
}

func newReadWatch(c net.Conn, limit time.Duration, idle string) *readWatch {
	w := &readWatch{Conn: c, limit: limit, idle: idle}
	w.last.Store(time.Now().UnixNano())
	return w
}

func (w *readWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.last.Store(time.Now().UnixNano())
	}
	return n, err
}

// watch closes the socket once nothing has been read for limit, and
// returns when done is closed. The client then fails the connection at
// once (it has no idle timeout of its own). It checks every
// tenth of limit, so a silence is noticed within 11/10 of limit (33 s for
// the default 30 s).
func (w *readWatch) watch(done <-chan struct{}) {
	t := time.NewTicker(w.limit / 10)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, w.last.Load())) >= w.limit {
				w.silent.Store(true)
				_ = w.Conn.Close()
				return
			}
		}
	}
}

// cause wraps err with the silence, when the watchdog ended the connection.
func (w *readWatch) cause(err error) error {
	if w == nil || !w.silent.Load() {
		return err
	}
	return fmt.Errorf("silent connection: nothing from the server for %s (the idle-time-out the bridge advertises, "+
		"half of %s), so it was dropped: %w", w.limit, w.idle, err)
}
