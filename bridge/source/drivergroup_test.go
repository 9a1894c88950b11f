package source

import (
	"context"
	"errors"
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
// them, running until the test closes it.
func groupDriver(t *testing.T, conns int) (d *Driver, f *fakeDialer, lines func() []string, windows *manualWindows, errc chan error) {
	t.Helper()
	log, lines := testLog()
	f = &fakeDialer{dialed: make(chan *fakeLink, 2*conns)}
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

// TestDriverSaysNothingAfterItsSourceStopped: a connect failure's window
// still open when the source stops is stopped, and one that ends anyway
// logs nothing after the shutdown lines. Before, the window ended after
// Close logged "source connect failed; retrying with backoff
// connections_failing=2".
func TestDriverSaysNothingAfterItsSourceStopped(t *testing.T) {
	d, f, lines, windows, errc := groupDriver(t, 2)
	f.mu.Lock()
	f.err = errors.New("dial tcp 127.0.0.1:61614: connect: connection refused")
	f.mu.Unlock()
	waitUntil(t, "the connect failures were not logged", func() bool {
		all := lines()
		return countPrefix(all, "DEBUG source connect failed conn=gw-0 ") > 0 && countPrefix(all, "DEBUG source connect failed conn=gw-1 ") > 0
	})
	closeDriver(t, d, errc)
	if n := windows.running(); n != 0 {
		t.Errorf("%d windows running after Close, want 0", n)
	}
	before := len(lines())
	windows.end(0)
	if after := lines()[before:]; len(after) != 0 {
		t.Errorf("lines after Close:\n%s", strings.Join(after, "\n"))
	}
}
