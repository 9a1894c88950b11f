package rawio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server's end.
func pair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	t.Cleanup(func() { w.Close(); s.Close() })
	return w, s
}

func TestWrapsTCPOnly(t *testing.T) {
	c, _ := pair(t)
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("Wrap(TCP) = %T, want *Conn", c)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if w := Wrap(a); w != a {
		t.Errorf("Wrap(pipe) = %T, want the pipe itself", w)
	}
}

// TestReadsAndWritesEverything: 4 MiB written at once (more than the
// socket takes, so the write waits for room) and read in small pieces
// arrive exactly, both ways; the peer's close is io.EOF.
func TestReadsAndWritesEverything(t *testing.T) {
	c, s := pair(t)
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(s, int64(len(data))))
		got <- b
	}()
	if n, err := c.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(data))
	}
	go func() {
		s.Write(data)
		s.Close()
	}()
	var back bytes.Buffer
	buf := make([]byte, 1000)
	for {
		n, err := c.Read(buf)
		back.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
	if !bytes.Equal(back.Bytes(), data) {
		t.Fatalf("read %d bytes, not the %d the peer wrote", back.Len(), len(data))
	}
}

// TestErrorsAsNetConn: a read deadline is a timeout (os.ErrDeadlineExceeded
// in a *net.OpError), a read after Close is net.ErrClosed, and a write to
// a reset connection is an error, as with net.Conn.
func TestErrorsAsNetConn(t *testing.T) {
	c, s := pair(t)
	c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	var oe *net.OpError
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("read past the deadline: %v, want a read timeout", err)
	}
	// The text too is net.Conn's: operators read it in logs (the poller's
	// own "raw-read" error is not wrapped in a second one).
	if want := fmt.Sprintf("read tcp %s->%s: i/o timeout", c.LocalAddr(), c.RemoteAddr()); err == nil || err.Error() != want {
		t.Errorf("read past the deadline says %q, want %q as net.Conn says", err, want)
	}
	c.SetReadDeadline(time.Time{})
	s.(*net.TCPConn).SetLinger(0)
	s.Close() // a reset
	var werr error
	for range 100 {
		if _, werr = c.Write(make([]byte, 64<<10)); werr != nil {
			break
		}
	}
	if werr == nil || !errors.As(werr, &oe) || oe.Op != "write" {
		t.Errorf("writes to a reset connection: %v, want a write error", werr)
	}
	c.Close()
	_, err = c.Read(make([]byte, 10))
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	if want := fmt.Sprintf("read tcp %s->%s: use of closed network connection", c.LocalAddr(), c.RemoteAddr()); err == nil || err.Error() != want {
		t.Errorf("read after Close says %q, want %q as net.Conn says", err, want)
	}
}

// TestReadAndWriteAllocateNothing: a read or write is once per message on
// the STOMP socket and once per request on MNS's, so it must not allocate
// (a closure handed to the poller per call did: three allocations a read).
func TestReadAndWriteAllocateNothing(t *testing.T) {
	c, s := pair(t)
	if _, ok := c.(*Conn); !ok {
		t.Skip("raw I/O is Linux only")
	}
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	// s is a plain net.Conn, which allocates nothing per call either.
	if allocs != 0 {
		t.Errorf("a raw Write and Read allocate %.1f objects, want 0", allocs)
	}
}

// TestWriteFileAppendsEverything: WriteFile appends all of its bytes to a
// regular file, and names the file when the write fails.
func TestWriteFileAppendsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789\n"), 10000)
	for _, part := range [][]byte{want[:7], want[7:70000], want[70000:]} {
		if n, err := WriteFile(f, part); err != nil || n != len(part) {
			t.Fatalf("WriteFile: %d of %d, %v", n, len(part), err)
		}
	}
	f.Close()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes, want the %d written", len(got), len(want))
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := WriteFile(ro, []byte("x")); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("WriteFile to a read-only file: %v, want an error naming %s", err, path)
	}
}

// BenchmarkWriteFile is the de-dup journal's per-request append (a
// 64-byte line) with WriteFile, and, for the cost of its SyscallConn and
// closure per call, with the raw write alone on a RawConn taken once.
func BenchmarkWriteFile(b *testing.B) {
	line := make([]byte, 64)
	open := func(b *testing.B) *os.File {
		f, err := os.Create(filepath.Join(b.TempDir(), "journal"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return f
	}
	b.Run("WriteFile", func(b *testing.B) {
		f := open(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := WriteFile(f, line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hoisted", func(b *testing.B) {
		f := open(b)
		rc, err := f.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		var n int
		fn := func(fd uintptr) bool {
			n, _ = write(fd, line)
			return true
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := rc.Write(fn); err != nil || n != len(line) {
				b.Fatal(err, n)
			}
		}
	})
}
