package source

import (
	"log/slog"
	"sync"
	"time"
)

// FailureGroupWindow is how long a FailureGroup gathers the connections
// that fail the same way before it logs them as one line.
const FailureGroupWindow = time.Second

// FailureGroup is shared by the Supervisors of one source's connections, so
// that a failure they meet together (a throttled consumer group, a refused
// login, the platform unreachable) is logged once with how many connections
// it holds, not once per connection: the first failure of a kind (see
// FailureShape) starts a window of FailureGroupWindow, at whose end one
// ERROR line names the failure and counts the connections that met it;
// later, one line when it holds every connection, and one when the last of
// them connects again. Each connection's own failures are logged at debug
// (and are in its ConnState). After Stop it says nothing. It is safe for
// concurrent use; the zero value is not: use NewFailureGroup.
type FailureGroup struct {
	total int
	log   *slog.Logger
	// after is time.AfterFunc returning the timer's Stop; a test's
	// replaces it.
	after func(time.Duration, func()) (stop func() bool)

	mu      sync.Mutex
	stopped bool
	windows map[int]func() bool // the Stop of each window running, by its number
	window  int                 // the number of the next window
	failing map[string]string   // connection -> shape of its current failure
	kinds   map[string]*failureKind
}

// failureKind is what the group has said of one shape of failure.
type failureKind struct {
	err       string // the first connection's error text
	first     string // the first connection that met it
	announced bool   // its line is logged
	every     bool   // the "every connection" line is logged
	peak      int    // the most connections that held it at once
}

// NewFailureGroup returns the group of total connections, logging to log.
func NewFailureGroup(total int, log *slog.Logger) *FailureGroup {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FailureGroup{total: total, log: log, after: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		windows: map[int]func() bool{}, failing: map[string]string{}, kinds: map[string]*failureKind{}}
}

// startWindow calls f, with g.mu held, at the end of a window of
// FailureGroupWindow unless the group stopped. Called with g.mu held.
func (g *FailureGroup) startWindow(f func()) {
	n := g.window
	g.window++
	g.windows[n] = g.after(FailureGroupWindow, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		delete(g.windows, n)
		if !g.stopped {
			f()
		}
	})
}

// Stop ends the group when its source stopped: the windows running are
// stopped and nothing more is logged. Idempotent.
func (g *FailureGroup) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	for n, stop := range g.windows {
		stop()
		delete(g.windows, n)
	}
}

// count is how many connections fail with shape. Called with g.mu held.
func (g *FailureGroup) count(shape string) int {
	n := 0
	for _, s := range g.failing {
		if s == shape {
			n++
		}
	}
	return n
}

// Failed records that conn failed to connect with msg.
func (g *FailureGroup) Failed(conn, msg string) {
	shape := FailureShape(msg)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	prev, had := g.failing[conn]
	g.failing[conn] = shape
	if had && prev != shape && g.count(prev) == 0 {
		// That failure gave way to another one: what is said of it
		// ends here.
		delete(g.kinds, prev)
	}
	n := g.count(shape)
	k := g.kinds[shape]
	if k == nil {
		k = &failureKind{err: msg, first: conn}
		g.kinds[shape] = k
		g.startWindow(func() { g.announce(shape) })
	}
	k.peak = max(k.peak, n)
	g.log.Debug("source connect failed", "conn", conn, "err", msg, "connections_failing", n, "connections", g.total)
	if k.announced && n == g.total && !k.every {
		k.every = true
		g.log.Error("source connect failing on every connection; retrying with backoff", "connections", g.total, "err", msg)
	}
}

// announce logs the line of the failure of shape at the end of its window,
// unless every connection that met it has connected meanwhile. Called with
// g.mu held.
func (g *FailureGroup) announce(shape string) {
	k := g.kinds[shape]
	if k == nil || k.announced {
		return
	}
	k.announced = true
	n := g.count(shape)
	if n == 0 {
		// Connected again within the window: a blip, at debug above.
		delete(g.kinds, shape)
		return
	}
	k.every = n == g.total
	g.log.Error("source connect failed; retrying with backoff", "connections_failing", n, "connections", g.total,
		"first", k.first, "err", k.err)
}

// Connected records that conn connected; it ends the failures it was part of
// once no connection holds them any more.
func (g *FailureGroup) Connected(conn string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	shape, ok := g.failing[conn]
	if !ok {
		return
	}
	delete(g.failing, conn)
	k := g.kinds[shape]
	if k == nil || g.count(shape) > 0 || !k.announced {
		return
	}
	delete(g.kinds, shape)
	g.log.Info("source connect failure over: every connection that met it is connected", "connections_failed", k.peak,
		"connections", g.total, "err", k.err)
}
