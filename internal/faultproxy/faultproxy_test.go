package faultproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// echoServer echoes every line back until the client goes away.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// waitStats waits (with a generous failure deadline) until cond holds for
// the proxy's stats: the proxy counts after the client already saw the
// effect.
func waitStats(t *testing.T, p *Proxy, cond func(Stats) bool) {
	t.Helper()
	waitfor.Until(t, "the expected stats", 10*time.Second, func() bool { return cond(p.Stats()) },
		func() string { return fmt.Sprintf("stats %+v", p.Stats()) })
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// echoing starts a proxy in front of an echo server and returns it with a
// client connection through it, on which first has made the round trip:
// the pipe is up.
func echoing(t *testing.T, first string) (*Proxy, net.Conn) {
	t.Helper()
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	if _, err := roundTrip(c, first); err != nil {
		t.Fatal(err)
	}
	return p, c
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends line and reads the echo, with a generous failure deadline.
func roundTrip(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return string(bytes.TrimSuffix([]byte(got), []byte("\n"))), err
}

func TestForwardsBothWays(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	for _, line := range []string{"a", "hello world", string(bytes.Repeat([]byte("x"), 100000))} {
		got, err := roundTrip(c, line)
		if err != nil || got != line {
			t.Fatalf("round trip of %d bytes: got %d bytes, err %v", len(line), len(got), err)
		}
	}
	// One active connection and as many bytes up as down. A pipe counts
	// after its write returns, so the echo can reach the client before the
	// upstream pipe has counted the last bytes: wait for the count.
	waitStats(t, p, func(st Stats) bool {
		return st.Accepted == 1 && st.Active == 1 && st.BytesUp == st.BytesDown && st.BytesUp > 0
	})
}

func TestCutClosesOpenConnectionsOnly(t *testing.T) {
	p, c := echoing(t, "before")
	if n := p.Cut(); n != 1 {
		t.Fatalf("Cut cut %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read after Cut: %v, want EOF", err)
	}
	c2 := dial(t, p)
	if got, err := roundTrip(c2, "after"); err != nil || got != "after" {
		t.Fatalf("new connection after Cut: %q, %v", got, err)
	}
	waitStats(t, p, func(st Stats) bool { return st.Cuts == 1 && st.Accepted == 2 })
}

func TestBlackholeStallsWithoutClosingAndHeals(t *testing.T) {
	p, c := echoing(t, "before")
	p.SetBlackhole(true)
	if _, err := io.WriteString(c, "held\n"); err != nil {
		t.Fatal(err)
	}
	// Nothing comes back while the blackhole is in force: the read times out
	// (not EOF, not reset).
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read during blackhole: %v, want a timeout", err)
	}
	// A new connection during the blackhole is accepted but stalls too.
	c2 := dial(t, p)
	io.WriteString(c2, "new\n")
	c2.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c2.Read(make([]byte, 1)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read on a new connection during blackhole: %v, want a timeout", err)
	}
	p.SetBlackhole(false)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "held\n" {
		t.Fatalf("after the blackhole: %q, %v, want the held line", got, err)
	}
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := bufio.NewReader(c2).ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("new connection after the blackhole: %q, %v", got, err)
	}
}

func TestResetAfterResetsMidStream(t *testing.T) {
	tests := []struct {
		name string
		dir  Direction
		n    int64
	}{
		{"downstream after 3 bytes", Downstream, 3},
		{"downstream at once", Downstream, 0},
		{"upstream after 5 bytes", Upstream, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c := echoing(t, "warm")
			if armed := p.ResetAfter(tt.dir, tt.n); armed != 1 {
				t.Fatalf("armed %d connections, want 1", armed)
			}
			io.WriteString(c, "0123456789\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read after reset: %q, %v, want connection reset", got, err)
			}
			if tt.dir == Downstream && int64(len(got)) != tt.n {
				t.Errorf("got %d bytes before the reset, want %d", len(got), tt.n)
			}
			waitStats(t, p, func(st Stats) bool { return st.Resets == 1 })
		})
	}
}

func TestLatencyDelaysEveryChunk(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	const d = 100 * time.Millisecond
	p.SetLatency(d)
	start := time.Now()
	if _, err := roundTrip(c, "slow"); err != nil {
		t.Fatal(err)
	}
	// One chunk each way, each delayed: at least 2d (a lower bound, not a
	// timing threshold on the machine's speed).
	if el := time.Since(start); el < 2*d {
		t.Errorf("round trip took %v with latency %v each way, want at least %v", el, d, 2*d)
	}
	p.SetLatency(0)
	if _, err := roundTrip(c, "fast"); err != nil {
		t.Fatal(err)
	}
}

func TestRefuseResetsNewConnections(t *testing.T) {
	p, open := echoing(t, "first")
	p.SetRefuse(true)
	// The kernel may complete the handshake before the proxy resets it, so
	// a refused connection fails at dial or at first use.
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c.Close()
		if _, err := roundTrip(c, "x"); err == nil {
			t.Fatal("a refused connection carried data")
		}
	}
	if got, err := roundTrip(open, "still"); err != nil || got != "still" {
		t.Fatalf("open connection while refusing: %q, %v", got, err)
	}
	p.SetRefuse(false)
	if got, err := roundTrip(dial(t, p), "back"); err != nil || got != "back" {
		t.Fatalf("after refusing: %q, %v", got, err)
	}
	waitStats(t, p, func(st Stats) bool { return st.Refused == 1 })
}

func TestTargetDownIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := startProxy(t, addr)
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("read through a proxy whose target is down succeeded")
		}
	}
	waitStats(t, p, func(st Stats) bool { return st.Refused == 1 })
	if st := p.Stats(); st.Refused != 1 || st.Active != 0 {
		t.Errorf("stats %+v: want 1 refused, none active", st)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	p, c := echoing(t, "x")
	p.SetBlackhole(true)
	io.WriteString(c, "held\n") // a pipe now waits in the blackhole
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Error("dial after Close succeeded")
	}
	if st := p.Stats(); st.Active != 0 {
		t.Errorf("%d connections active after Close", st.Active)
	}
}
