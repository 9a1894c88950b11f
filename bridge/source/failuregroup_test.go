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

// manualWindows stands for time.AfterFunc in a FailureGroup: its windows
// end only when the test ends them, and it records which were stopped.
type manualWindows struct {
	mu      sync.Mutex
	ends    []func() // each window's end, in the order they started
	stopped []bool
}

func (w *manualWindows) after(_ time.Duration, f func()) func() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	i := len(w.ends)
	w.ends, w.stopped = append(w.ends, f), append(w.stopped, false)
	return func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		was := !w.stopped[i]
		w.stopped[i] = true
		return was
	}
}

// count is how many windows started.
func (w *manualWindows) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ends)
}

// want fails t unless n windows started; which says which they are.
func (w *manualWindows) want(t *testing.T, n int, which string) {
	t.Helper()
	if got := w.count(); got != n {
		t.Fatalf("%d windows started, want %d: %s", got, n, which)
	}
}

// end ends window i, as its timer would (even a stopped one: a timer that
// fired as it was stopped).
func (w *manualWindows) end(i int) {
	w.mu.Lock()
	f := w.ends[i]
	w.mu.Unlock()
	f()
}

// running is how many windows are neither ended by the test nor stopped
// (the test ends none in the tests that ask).
func (w *manualWindows) running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, s := range w.stopped {
		if !s {
			n++
		}
	}
	return n
}

// testLog is a logger that keeps each record as a line (see lineHandler),
// and the lines.
func testLog() (*slog.Logger, func() []string) {
	mu, lines := new(sync.Mutex), new([]string)
	return slog.New(lineHandler{mu, lines}), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), *lines...)
	}
}

// testGroup is a FailureGroup of total connections whose log lines are
// kept in lines and whose windows end only when the test ends them.
func testGroup(total int) (g *FailureGroup, lines func() []string, windows *manualWindows) {
	log, lines := testLog()
	windows = new(manualWindows)
	g = NewFailureGroup(total, log)
	g.after = windows.after
	return g, lines, windows
}

// byLevel is lines whose level is level (e.g. "WARN").
func byLevel(lines []string, level string) []string {
	var out []string
	for _, l := range lines {
		if strings.HasPrefix(l, level+" ") {
			out = append(out, l)
		}
	}
	return out
}

// checkLines checks that lines but those at debug are want.
func checkLines(t *testing.T, lines, want []string) {
	t.Helper()
	var got []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "DEBUG ") {
			got = append(got, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
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
	windows.want(t, 1, "one for one kind of failure")
	windows.end(0)
	for i := 21; i < 40; i++ {
		g.Failed(fmt.Sprintf("edge-gw-01-%d", i), throttled(i))
	}
	for i := range 40 {
		g.Connected(fmt.Sprintf("edge-gw-01-%d", i))
	}
	var errs, infos []string
	debug := 0
	for _, l := range lines() {
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
	windows.end(0)
	g.Failed("c-1", "connection reset")
	windows.want(t, 2, "a new one for the failure that came back")
	windows.end(1)
	n := 0
	for _, l := range lines() {
		if strings.HasPrefix(l, "ERROR ") {
			n++
			if !strings.Contains(l, "connections_failing=1 connections=2 first=c-1") {
				t.Errorf("line %q", l)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d ERROR lines, want 1 (the blip unannounced):\n%s", n, strings.Join(lines(), "\n"))
	}
}

// TestFailureGroupLogsConnectionsLostTogetherOnce: 40 connections lost
// together (the platform restarted a node) make one WARN line that counts
// them and names the causes with how many connections each ended (each
// connection logged its own WARN, and its own INFO when it reconnected:
// 80 lines), and one INFO line when the last of them is connected again;
// each loss is at debug.
func TestFailureGroupLogsConnectionsLostTogetherOnce(t *testing.T) {
	g, lines, windows := testGroup(40)
	reset := func(i int) string {
		return fmt.Sprintf("read tcp 127.0.0.1:%d->127.0.0.1:61614: read: connection reset by peer", 40000+i)
	}
	const restarting = "ERROR frame: node restarting"
	for i := range 40 {
		conn := fmt.Sprintf("edge-gw-01-%d", i)
		g.Connected(conn) // its first connect: nothing to say
		if i < 30 {
			g.Lost(conn, reset(i))
		} else {
			g.Lost(conn, restarting)
		}
	}
	windows.want(t, 1, "one for one loss")
	windows.end(0)
	for i := range 40 {
		if i == 39 {
			if infos := byLevel(lines(), "INFO"); len(infos) != 0 {
				t.Errorf("INFO lines with one connection still lost: %q", infos)
			}
		}
		g.Connected(fmt.Sprintf("edge-gw-01-%d", i))
	}
	all := lines()
	want := "WARN source connections lost; reconnecting connections_lost=40 connections=40 first=edge-gw-01-0 err=" +
		reset(0) + " (30 connections); " + restarting + " (10 connections)"
	if warns := byLevel(all, "WARN"); len(warns) != 1 || warns[0] != want {
		t.Errorf("WARN lines:\n%s\nwant:\n%s", strings.Join(warns, "\n"), want)
	}
	want = "INFO source connections reconnected: every connection lost is connected again connections_lost=40 connections=40"
	if infos := byLevel(all, "INFO"); len(infos) != 1 || infos[0] != want {
		t.Errorf("INFO lines:\n%s\nwant:\n%s", strings.Join(infos, "\n"), want)
	}
	debug := 0
	for _, l := range byLevel(all, "DEBUG") {
		if strings.HasPrefix(l, "DEBUG source connection lost; reconnecting conn=") {
			debug++
		}
	}
	if debug != 40 || len(all) != 42 {
		t.Errorf("%d losses at debug, %d lines in all; want 40 and 42:\n%s", debug, len(all), strings.Join(all, "\n"))
	}
}

// TestFailureGroupLossBackWithinItsWindow: connections lost and connected
// again within the window still make the loss's line, and the line that
// it is over right after it; the line names one cause as it is, and at
// most maxLossCauses causes; a loss after the window is a new one.
func TestFailureGroupLossBackWithinItsWindow(t *testing.T) {
	g, lines, windows := testGroup(6)
	for i, cause := range []string{"EOF", "EOF", "heart-beat missed", "ERROR frame: bye", "connection reset", "tls: bad record MAC"} {
		conn := fmt.Sprintf("c-%d", i)
		g.Lost(conn, cause)
		g.Connected(conn)
	}
	windows.end(0)
	g.Lost("c-3", "EOF")
	windows.want(t, 2, "a new one for the loss after the first window")
	windows.end(1)
	want := []string{
		"WARN source connections lost; reconnecting connections_lost=6 connections=6 first=c-0 err=EOF (2 connections); heart-beat missed (1 connection); ERROR frame: bye (1 connection); 2 other causes",
		"INFO source connections reconnected: every connection lost is connected again connections_lost=6 connections=6",
		"WARN source connections lost; reconnecting connections_lost=1 connections=6 first=c-3 err=EOF",
	}
	checkLines(t, lines(), want)
}

// TestFailureGroupSaysNothingAfterStop: Stop stops the windows running,
// and a window that ends anyway (its timer fired as it was stopped) or a
// connection's news after it log nothing.
func TestFailureGroupSaysNothingAfterStop(t *testing.T) {
	g, lines, windows := testGroup(3)
	g.Failed("c-0", "connection refused")
	g.Lost("c-1", "EOF")
	g.Stop()
	if n := windows.running(); n != 0 {
		t.Errorf("%d windows running after Stop, want 0", n)
	}
	before := len(lines())
	windows.end(0)
	windows.end(1)
	g.Failed("c-2", "connection refused")
	g.Lost("c-0", "EOF")
	g.Connected("c-0")
	g.Connected("c-1")
	if after := lines()[before:]; len(after) != 0 || windows.count() != 2 {
		t.Errorf("after Stop: %d windows started in all (want 2), lines:\n%s", windows.count(), strings.Join(after, "\n"))
	}
}

// TestFailureGroupLossesWhileAnOutageIsOpenJoinIt: a loss spread over more
// than the window (a platform restarting its nodes one after another) is
// one outage while any connection of it is still down: the losses within
// OutageQuietWindow of its WARN line join it, at debug, and start no
// window; its INFO line at recovery counts them, and the recovery stops
// the quiet window; a loss once every connection is back is a new outage.
// Before, each window of the spread loss made a WARN line of its own.
func TestFailureGroupLossesWhileAnOutageIsOpenJoinIt(t *testing.T) {
	g, lines, windows := testGroup(4)
	g.Lost("c-0", "EOF")
	g.Lost("c-1", "EOF")
	windows.end(0)
	windows.want(t, 2, "the loss's and the quiet window after its WARN line")
	g.Lost("c-2", "ERROR frame: node restarting")
	g.Connected("c-0")
	g.Lost("c-0", "EOF") // lost again while the outage is open
	if n := windows.count(); n != 2 {
		for i := 2; i < n; i++ {
			windows.end(i)
		}
		t.Errorf("%d windows started while the outage was open, want 2", n)
	}
	for _, c := range []string{"c-0", "c-1", "c-2"} {
		g.Connected(c)
	}
	if !windows.stopped[1] {
		t.Errorf("the quiet window still runs after the outage is over")
	}
	windows.end(1) // as if its timer fired as it was stopped: nothing
	g.Lost("c-3", "EOF")
	windows.want(t, 3, "a new one for the loss after the recovery")
	windows.end(2)
	want := []string{
		"WARN source connections lost; reconnecting connections_lost=2 connections=4 first=c-0 err=EOF",
		"INFO source connections reconnected: every connection lost is connected again connections_lost=3 connections=4 connections_lost_after_warn=1",
		"WARN source connections lost; reconnecting connections_lost=1 connections=4 first=c-3 err=EOF",
	}
	checkLines(t, lines(), want)
	if n := countPrefix(lines(), "DEBUG source connection lost; reconnecting conn="); n != 5 {
		t.Errorf("%d losses at debug, want 5", n)
	}
}

// TestFailureGroupSaysHowManyAreUpWhenTheStartTakesLong: connections that
// are not all up when the start's window ends make one line that counts
// those up and names the causes of the others, with how many connections
// each holds (a connection not answered yet is still dialling); one INFO
// line once every connection is up. Each connection's connect is the
// Supervisor's, at debug.
func TestFailureGroupSaysHowManyAreUpWhenTheStartTakesLong(t *testing.T) {
	g, lines, windows := testGroup(10)
	g.Start()
	throttled := func(i int) string {
		return fmt.Sprintf("login refused: throttled: the consumer group made too many connection attempts (%d in the last minute)", 100+i)
	}
	for i := range 6 {
		g.Connected(fmt.Sprintf("c-%d", i))
	}
	g.Failed("c-6", throttled(6))
	g.Failed("c-7", "dial tcp 127.0.0.1:61614: connect: connection refused")
	g.Failed("c-7", throttled(7)) // its latest failure is its cause
	g.Failed("c-8", throttled(8))
	windows.end(0) // the start's
	windows.end(1) // the throttle's: its ERROR line
	windows.end(2) // the refusal's: over already
	for i := 6; i < 10; i++ {
		g.Connected(fmt.Sprintf("c-%d", i))
	}
	want := []string{
		"WARN source not connected on every connection yet; retrying the others with backoff connections_up=6 connections=10 err=" +
			throttled(6) + " (3 connections); still dialling (1 connection)",
		"ERROR source connect failed; retrying with backoff connections_failing=3 connections=10 first=c-6 err=" + throttled(6),
		"INFO source connect failure over: every connection that met it is connected connections_failed=3 connections=10 err=" + throttled(6),
		"INFO source connected connections=10",
	}
	checkLines(t, lines(), want)
}

// TestFailureGroupStartLineOnceEveryConnectionIsUpAtOnce: the start's
// INFO line waits until every connection is up at the same time (one
// lost meanwhile is not up), and comes once; a start whose connections
// are all up before its window ends says nothing more when it ends.
func TestFailureGroupStartLineOnceEveryConnectionIsUpAtOnce(t *testing.T) {
	g, lines, windows := testGroup(3)
	g.Start()
	g.Connected("c-0")
	g.Connected("c-1")
	g.Lost("c-0", "EOF")
	g.Connected("c-2")
	if infos := byLevel(lines(), "INFO"); len(infos) != 0 {
		t.Errorf("INFO lines with c-0 lost: %q", infos)
	}
	g.Connected("c-0")
	windows.end(0) // the start's, stopped as every connection came up
	windows.end(1) // the loss's
	g.Lost("c-1", "EOF")
	g.Connected("c-1")
	if n := countPrefix(lines(), "INFO source connected connections=3"); n != 1 {
		t.Errorf("%d start lines, want 1:\n%s", n, strings.Join(lines(), "\n"))
	}
	if n := countPrefix(lines(), "WARN source not connected"); n != 0 {
		t.Errorf("%d lines that not every connection is up, want 0:\n%s", n, strings.Join(lines(), "\n"))
	}
}

// TestFailureGroupStartLineNotWhenTheConnectFailureSaidIt: with no
// connection up when the start's window ends, and every one failing to
// connect for a failure whose ERROR line is logged, the start's WARN line
// would repeat it: it does not come. It comes when a connection is still
// dialling (the ERROR line does not say so), or when the failure's line is
// not logged yet. Before, the WARN line came with connections_up=0 after
// the ERROR line had said the same.
func TestFailureGroupStartLineNotWhenTheConnectFailureSaidIt(t *testing.T) {
	const refused = "dial tcp 127.0.0.1:61614: connect: connection refused"
	g, lines, windows := testGroup(3)
	g.Start()
	for i := range 3 {
		g.Failed(fmt.Sprintf("c-%d", i), refused)
	}
	windows.end(1) // the failure's: its ERROR line
	windows.end(0) // the start's
	want := []string{
		"ERROR source connect failed; retrying with backoff connections_failing=3 connections=3 first=c-0 err=" + refused,
	}
	checkLines(t, lines(), want)

	g, lines, windows = testGroup(3)
	g.Start()
	g.Failed("c-0", refused)
	g.Failed("c-1", refused)
	windows.end(1)
	windows.end(0) // c-2 still dialling
	want = []string{
		"ERROR source connect failed; retrying with backoff connections_failing=2 connections=3 first=c-0 err=" + refused,
		"WARN source not connected on every connection yet; retrying the others with backoff connections_up=0 connections=3 err=" +
			refused + " (2 connections); still dialling (1 connection)",
	}
	checkLines(t, lines(), want)

	g, lines, windows = testGroup(2)
	g.Start()
	g.Failed("c-0", refused)
	g.Failed("c-1", refused)
	windows.end(0) // the start's, before the failure's line
	want = []string{
		"WARN source not connected on every connection yet; retrying the others with backoff connections_up=0 connections=2 err=" + refused,
	}
	checkLines(t, lines(), want)
}

// TestFailureGroupLossLongAfterTheOutagesLineIsNews: an outage held open
// by a connection that never comes back (its redials fail) hushes the
// losses only for OutageQuietWindow after its latest WARN line: a loss
// after that starts a window, at whose end a WARN line counts the
// connections lost since the previous line (those joined quietly too),
// names their causes and says how many of the outage are still down; it
// starts a new quiet window. When the outage is all back within such a
// window, its WARN line (connections_down=0) comes at the window's end,
// then the INFO line, which counts each connection lost once, and no
// quiet window starts. Before, every later loss of the outage was at debug
// only, for as long as it stayed open.
func TestFailureGroupLossLongAfterTheOutagesLineIsNews(t *testing.T) {
	const refused = "dial tcp 127.0.0.1:61614: connect: connection refused"
	g, lines, windows := testGroup(5)
	for i := range 5 {
		g.Connected(fmt.Sprintf("c-%d", i))
	}
	g.Lost("c-0", "EOF")
	g.Lost("c-1", "EOF")
	g.Failed("c-1", refused) // c-1's redials fail until the end
	windows.end(0)           // the loss's: its WARN line
	windows.end(1)           // c-1's connect failure's: its ERROR line
	g.Connected("c-0")
	g.Lost("c-2", "heart-beat missed") // within the quiet window: at debug
	g.Connected("c-2")
	windows.want(t, 3, "the loss's, c-1's connect failure's, the quiet window after the WARN line")
	windows.end(2) // the quiet window is over
	g.Lost("c-3", "ERROR frame: node restarting")
	g.Lost("c-0", "EOF")
	windows.want(t, 4, "a new one for the loss after the quiet window")
	windows.end(3)
	windows.want(t, 5, "a new quiet window after the second WARN line")
	g.Lost("c-4", "EOF") // within the new quiet window: at debug
	windows.want(t, 5, "none for a loss within the quiet window")
	for _, c := range []string{"c-0", "c-3", "c-4"} {
		g.Connected(c)
	}
	windows.end(4) // the second quiet window is over
	g.Lost("c-2", "EOF")
	g.Connected("c-2")
	g.Connected("c-1")
	if n := countPrefix(lines(), "INFO source connections reconnected"); n != 0 {
		t.Errorf("%d lines that the outage is over before its window's WARN line, want 0", n)
	}
	windows.end(5)
	windows.want(t, 6, "no quiet window after the outage is over")
	want := []string{
		"WARN source connections lost; reconnecting connections_lost=2 connections=5 first=c-0 err=EOF",
		"ERROR source connect failed; retrying with backoff connections_failing=1 connections=5 first=c-1 err=" + refused,
		"WARN source connections lost; reconnecting connections_lost=3 connections_down=3 connections=5 first=c-2 err=heart-beat missed (1 connection); ERROR frame: node restarting (1 connection); EOF (1 connection)",
		"INFO source connect failure over: every connection that met it is connected connections_failed=1 connections=5 err=" + refused,
		"WARN source connections lost; reconnecting connections_lost=2 connections_down=0 connections=5 first=c-4 err=EOF",
		"INFO source connections reconnected: every connection lost is connected again connections_lost=5 connections=5",
	}
	checkLines(t, lines(), want)
	if n := countPrefix(lines(), "DEBUG source connection lost; reconnecting conn="); n != 7 {
		t.Errorf("%d losses at debug, want 7", n)
	}
}
