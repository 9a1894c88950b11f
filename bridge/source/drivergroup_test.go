package source

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// waitUntil polls cond until it holds; it fails t, saying what did not
// happen, after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(time.Millisecond)
	}
}

// groupDriver is a Driver of conns fake connections (backoff 1-2 ms) that
// logs to lines, its FailureGroup's windows ending only when the test ends
// them, running until the test closes it. Every dial fails with dialErr
// from the first on, until the test changes f.err; nil: they connect.
func groupDriver(t *testing.T, conns int, dialErr error) (d *Driver, f *fakeDialer, lines func() []string, windows *manualWindows, errc chan error) {
	t.Helper()
	log, lines := testLog()
	f = &fakeDialer{dialed: make(chan *fakeLink, 2*conns), err: dialErr}
	d, err := New(Config{Protocol: "fake", ClientID: "gw", Connections: conns, MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond, Limiter: NewAttemptLimiter(1000, time.Minute), Logger: log}, f.dial)
	if err != nil {
		t.Fatal(err)
	}
	windows = new(manualWindows)
	d.group.after = windows.after
	errc = runDriver(d, context.Background(), func(context.Context, *bridge.Delivery) error { return nil })
	return d, f, lines, windows, errc
}

// connected reports whether every connection of d is up with reconnects
// reconnects.
func connected(d *Driver, reconnects int64) bool {
	for _, st := range d.ConnStates() {
		if !st.Connected || st.Reconnects != reconnects {
			return false
		}
	}
	return true
}

// closeDriver closes d and waits for Run.
func closeDriver(t *testing.T, d *Driver, errc chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := wait(t, errc); err != nil {
		t.Errorf("Run = %v", err)
	}
}

// countPrefix is how many of lines start with prefix.
func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// TestDriverLogsConnectionsLostTogetherOnce: the driver's 8 connections
// lost together (the redials refused a while) log one WARN line for the
// loss and one INFO line once all 8 are connected again; each loss and
// reconnect is at debug, and in ConnStates. Before, the Supervisors logged
// 8 WARN "source connection lost; reconnecting" and 8 INFO "source
// connected reconnect=true". The first connects make the start's one INFO
// line (TestDriverLogsTheFirstConnectsOnce).
func TestDriverLogsConnectionsLostTogetherOnce(t *testing.T) {
	const conns = 8
	d, f, lines, windows, errc := groupDriver(t, conns, nil)
	links := map[string]*fakeLink{}
	for range conns {
		l := next(t, f.dialed)
		links[l.id] = l
	}
	waitUntil(t, "the connections did not all connect", func() bool { return connected(d, 0) })
	f.mu.Lock()
	f.err = errors.New("dial tcp 127.0.0.1:61614: connect: connection refused")
	f.mu.Unlock()
	reset := func(i int) string {
		return fmt.Sprintf("read tcp 127.0.0.1:%d->127.0.0.1:61614: read: connection reset by peer", 40000+i)
	}
	for i := range conns {
		id := fmt.Sprintf("gw-%d", i)
		links[id].fail <- errors.New(reset(i))
		// Its loss is logged (at debug; by the old Supervisor at WARN)
		// before the next one, so that the first is gw-0.
		waitUntil(t, id+"'s loss was not logged", func() bool {
			return slices.ContainsFunc(lines(), func(l string) bool {
				return strings.Contains(l, " source connection lost; reconnecting conn="+id+" ")
			})
		})
	}
	windows.end(1) // the loss's window: the second started, after the start's
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	for range conns {
		next(t, f.dialed)
	}
	waitUntil(t, "the connections did not all connect again", func() bool { return connected(d, 1) })
	closeDriver(t, d, errc)

	all := lines()
	want := "WARN source connections lost; reconnecting connections_lost=8 connections=8 first=gw-0 err=" + reset(0)
	if warns := byLevel(all, "WARN"); len(warns) != 1 || warns[0] != want {
		t.Errorf("WARN lines:\n%s\nwant:\n%s", strings.Join(warns, "\n"), want)
	}
	want = "INFO source connections reconnected: every connection lost is connected again connections_lost=8 connections=8"
	if n := countPrefix(all, want); n != 1 {
		t.Errorf("%d lines %q, want 1", n, want)
	}
	if n, m := countPrefix(all, "INFO source connected connections=8"), countPrefix(all, "INFO source connected conn="); n != 1 || m != 0 {
		t.Errorf("%d INFO lines 'source connected connections=8' and %d of one connection, want 1 and 0: the start only", n, m)
	}
	reconnects := 0
	for _, l := range byLevel(all, "DEBUG") {
		if strings.HasPrefix(l, "DEBUG source connected conn=") && strings.HasSuffix(l, " reconnect=true") {
			reconnects++
		}
	}
	if reconnects != conns {
		t.Errorf("%d reconnects at debug, want %d", reconnects, conns)
	}
	if t.Failed() {
		t.Logf("lines:\n%s", strings.Join(all, "\n"))
	}
}

// TestDriverSaysNothingAfterItsSourceStopped: a connect failure's window
// still open when the source stops is stopped, and one that ends anyway
// logs nothing after the shutdown lines. Before, the window ended after
// Close logged "source connect failed; retrying with backoff
// connections_failing=2".
func TestDriverSaysNothingAfterItsSourceStopped(t *testing.T) {
	// Refused from the first dial: a refusal set after Run began could
	// come after both connected, and no failure would ever be logged.
	d, _, lines, windows, errc := groupDriver(t, 2, errors.New("dial tcp 127.0.0.1:61614: connect: connection refused"))
	waitUntil(t, "the connect failures were not logged", func() bool {
		all := lines()
		return countPrefix(all, "DEBUG source connect failed conn=gw-0 ") > 0 && countPrefix(all, "DEBUG source connect failed conn=gw-1 ") > 0
	})
	closeDriver(t, d, errc)
	if n := windows.running(); n != 0 {
		t.Errorf("%d windows running after Close, want 0", n)
	}
	before := len(lines())
	for i := range windows.count() { // the start's and the failure's
		windows.end(i)
	}
	if after := lines()[before:]; len(after) != 0 {
		t.Errorf("lines after Close:\n%s", strings.Join(after, "\n"))
	}
}

// TestDriverLogsTheFirstConnectsOnce: the driver's 8 connections coming
// up at the start log one INFO line once all 8 are up; each connection's
// first connect is at debug, and in ConnStates; the start's window is
// stopped then. Before, the Supervisors logged 8 INFO "source connected
// reconnect=false" lines (40 with source.connections: 40).
func TestDriverLogsTheFirstConnectsOnce(t *testing.T) {
	const conns = 8
	d, f, lines, windows, errc := groupDriver(t, conns, nil)
	for range conns {
		next(t, f.dialed)
	}
	waitUntil(t, "the connections did not all connect", func() bool { return connected(d, 0) })
	waitUntil(t, "the first connects were not all logged", func() bool {
		return countPrefix(lines(), "DEBUG source connected conn=") == conns
	})
	if n := windows.running(); n != 0 {
		t.Errorf("%d windows running with every connection up, want 0 (the start's stopped)", n)
	}
	closeDriver(t, d, errc)
	all := lines()
	want := []string{"INFO source connected connections=8"}
	if infos := byLevel(all, "INFO"); strings.Join(infos, "\n") != strings.Join(want, "\n") {
		t.Errorf("INFO lines:\n%s\nwant:\n%s", strings.Join(infos, "\n"), strings.Join(want, "\n"))
	}
	if n := countPrefix(all, "DEBUG source connected conn="); n != conns {
		t.Errorf("%d first connects at debug, want %d:\n%s", n, conns, strings.Join(all, "\n"))
	}
}
