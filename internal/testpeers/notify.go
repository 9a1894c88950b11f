package testpeers

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// NotifyListener collects the sd_notify datagrams sent to a socket it owns,
// as systemd's $NOTIFY_SOCKET would receive them: one string per datagram
// ("STOPPING=1\nSTATUS=..." is one).
type NotifyListener struct {
	conn *net.UnixConn
	done chan struct{}
	mu   sync.Mutex
	msgs []string
	log  *os.File // Log's file; nil when none
}

// ListenNotify listens on a new unixgram socket; Addr is the value for
// $NOTIFY_SOCKET. The socket is closed when the test ends.
func ListenNotify(t testing.TB) *NotifyListener {
	t.Helper()
	dir, err := os.MkdirTemp("", "opsn") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen for sd_notify: %v", err)
	}
	l := &NotifyListener{conn: conn, done: make(chan struct{})}
	t.Cleanup(func() { l.Stop() })
	go func() {
		defer close(l.done)
		defer func() { // no datagram comes any more: Log's file is done
			l.mu.Lock()
			if l.log != nil {
				l.log.Close()
			}
			l.mu.Unlock()
		}()
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, string(buf[:n]))
			if l.log != nil {
				l.log.Write(append(buf[:n:n], '\n'))
			}
			l.mu.Unlock()
		}
	}()
	return l
}

// Log appends every datagram from now on to a new file, each followed by a
// newline, and returns its path: a script that the test runs can wait on
// what the bridge told systemd (grep '^STATUS=connected ' FILE). The file
// is closed when the listener stops and removed when the test ends.
func (l *NotifyListener) Log(t testing.TB) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "notify-*.log")
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.log = f
	l.mu.Unlock()
	return f.Name()
}

// Addr is the socket's path, for $NOTIFY_SOCKET.
func (l *NotifyListener) Addr() string { return l.conn.LocalAddr().String() }

// Messages returns what arrived so far, in order.
func (l *NotifyListener) Messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

// Stop closes the socket and returns what arrived, in order.
func (l *NotifyListener) Stop() []string {
	l.conn.Close()
	<-l.done
	return l.Messages()
}
