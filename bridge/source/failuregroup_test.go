package source

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineHandler keeps each record as "LEVEL msg k=v ...".
type lineHandler struct {
	mu    *sync.Mutex
	lines *[]string
}

func (h lineHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	*h.lines = append(*h.lines, b.String())
	h.mu.Unlock()
	return nil
}
func (h lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h lineHandler) WithGroup(string) slog.Handler      { return h }

// testGroup is a FailureGroup of total connections whose log lines are
// kept in lines and whose windows end only when the test calls them, in
// the order they started.
func testGroup(total int) (g *FailureGroup, lines *[]string, windows *[]func()) {
	lines, windows = new([]string), new([]func())
	g = NewFailureGroup(total, slog.New(lineHandler{new(sync.Mutex), lines}))
	g.after = func(_ time.Duration, f func()) { *windows = append(*windows, f) }
	return g, lines, windows
}

// TestFailureGroupLogsAThrottledGroupOnce: 40 connections throttled
// together make one ERROR line that counts them (each connection logged
// its own ERROR: 21 lines in the same millisecond), one when the failure
// holds every connection, one when they are all connected again; each
// connection's failure is at debug.
func TestFailureGroupLogsAThrottledGroupOnce(t *testing.T) {
	g, lines, windows := testGroup(40)
	throttled := func(i int) string {
		return fmt.Sprintf("edge-gw-01-%d: login refused: throttled: the consumer group made too many connection attempts (%d in the last minute)", i, 100+i)
	}
	for i := range 21 {
		g.Failed(fmt.Sprintf("edge-gw-01-%d", i), throttled(i))
	}
	if len(*windows) != 1 {
		t.Fatalf("%d windows started for one kind of failure, want 1", len(*windows))
	}
	(*windows)[0]() // the window ends
	for i := 21; i < 40; i++ {
		g.Failed(fmt.Sprintf("edge-gw-01-%d", i), throttled(i))
	}
	for i := range 40 {
		g.Connected(fmt.Sprintf("edge-gw-01-%d", i))
	}
	var errs, infos []string
	debug := 0
	for _, l := range *lines {
		switch {
		case strings.HasPrefix(l, "ERROR "):
			errs = append(errs, l)
		case strings.HasPrefix(l, "INFO "):
			infos = append(infos, l)
		case strings.HasPrefix(l, "DEBUG source connect failed conn="):
			debug++
		}
	}
	want := []string{
		"ERROR source connect failed; retrying with backoff connections_failing=21 connections=40 first=edge-gw-01-0 err=" + throttled(0),
		"ERROR source connect failing on every connection; retrying with backoff connections=40 err=" + throttled(39),
	}
	if strings.Join(errs, "\n") != strings.Join(want, "\n") {
		t.Errorf("ERROR lines:\n%s\nwant:\n%s", strings.Join(errs, "\n"), strings.Join(want, "\n"))
	}
	if len(infos) != 1 || !strings.HasPrefix(infos[0], "INFO source connect failure over: every connection that met it is connected connections_failed=40 connections=40") {
		t.Errorf("INFO lines: %q, want one saying the failure is over", infos)
	}
	if debug != 40 {
		t.Errorf("%d connection failures at debug, want 40", debug)
	}
}

// TestFailureGroupBlipIsNotAnnounced: connections that fail and connect
// again within the window leave no ERROR line; a failure that comes back
// later is announced anew.
func TestFailureGroupBlipIsNotAnnounced(t *testing.T) {
	g, lines, windows := testGroup(2)
	g.Failed("c-0", "connection reset")
	g.Connected("c-0")
	(*windows)[0]()
	g.Failed("c-1", "connection reset")
	if len(*windows) != 2 {
		t.Fatalf("%d windows, want a new one for the failure that came back", len(*windows))
	}
	(*windows)[1]()
	n := 0
	for _, l := range *lines {
		if strings.HasPrefix(l, "ERROR ") {
			n++
			if !strings.Contains(l, "connections_failing=1 connections=2 first=c-1") {
				t.Errorf("line %q", l)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d ERROR lines, want 1 (the blip unannounced):\n%s", n, strings.Join(*lines, "\n"))
	}
}
