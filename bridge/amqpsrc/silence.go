package amqpsrc

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/monotime"
)

// readWatch is the server side of an AMQP connection as the source sees
// it: it passes the bytes through to the client unchanged and notes when the
// last one arrived. Every AMQP frame counts, empty (heart-beat) frames too,
// so a live connection is never silent for long: the server must send a
// frame within the idle-time-out the bridge advertises.
type readWatch struct {
	net.Conn
	last   monotime.Stamp // when the last byte was read
	silent atomic.Bool    // the watchdog closed the connection
	limit  time.Duration
	idle   string // the operator's name of Config.IdleTimeout
}

func newReadWatch(c net.Conn, limit time.Duration, idle string) *readWatch {
	w := &readWatch{Conn: c, limit: limit, idle: idle}
	w.last.Store(time.Now())
	return w
}

func (w *readWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.last.Store(time.Now())
	}
	return n, err
}

// watch closes the socket once nothing has been read for limit, and
// returns when done is closed. The client then fails the connection at
// once (it has no idle timeout of its own). It checks every
// tenth of limit, so a silence is noticed within 11/10 of limit (33 s for
// the default 30 s).
func (w *readWatch) watch(done <-chan struct{}) {
	every := w.limit / 10
	t := time.NewTicker(every)
	defer t.Stop()
	prev := time.Now()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			now := time.Now()
			if w.silentAt(now, prev, every) {
				w.silent.Store(true)
				_ = w.Conn.Close()
				return
			}
			prev = now
		}
	}
}

// silentAt tells whether the connection has been silent for limit at now,
// for a check that runs every period and last ran at prev. Time this process
// did not run (SIGSTOP, a paused VM or container, a starved box), told by a
// check that runs late (source.Paused), is not the server's silence: what the
// server sent meanwhile waits unread in the socket (its close, when it timed
// the bridge out), so the silence counts again from now.
func (w *readWatch) silentAt(now, prev time.Time, period time.Duration) bool {
	if _, paused := source.Paused(prev, now, period); paused {
		w.last.Store(now)
		return false
	}
	return now.Sub(w.last.Load()) >= w.limit
}

// cause wraps err with the silence, when the watchdog ended the connection.
func (w *readWatch) cause(err error) error {
	if w == nil || !w.silent.Load() {
		return err
	}
	return fmt.Errorf("silent connection: nothing from the server for %s (the idle-time-out the bridge advertises, "+
		"half of %s), so it was dropped: %w", w.limit, w.idle, err)
}
