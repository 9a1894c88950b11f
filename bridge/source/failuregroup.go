package source

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// FailureGroupWindow is how long a FailureGroup gathers the connections
// that fail the same way, or are lost together, before it logs them as one
// line.
const FailureGroupWindow = time.Second

// FailureGroup is shared by the Supervisors of one source's connections, so
// that what they meet together is logged once with how many connections it
// holds, not once per connection:
//
//   - A connect failure (a throttled consumer group, a refused login, the
//     platform unreachable): the first failure of a kind (see FailureShape)
//     starts a window of FailureGroupWindow, at whose end one ERROR line
//     names the failure and counts the connections that met it; later, one
//     line when it holds every connection, and one when the last of them
//     connects again.
//   - Connections lost (the platform restarts a node, the network blips):
//     the first loss opens an outage and starts a window of
//     FailureGroupWindow, at whose end one WARN line counts the connections
//     lost in it and names the causes; one INFO line when the last of them
//     is connected again, which closes the outage. A loss while the outage
//     is open (some connection of it still down: the platform restarts its
//     nodes one after another) joins it, at debug: the INFO line counts it
//     (connections_lost_after_warn), and no new WARN line comes. A
//     connection that stays down keeps the outage open; its redials are
//     connect failures, logged as above.
//
// Each connection's own failures, losses and reconnects are logged at debug
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
	lost    map[string]*loss // connection -> the loss it is down in
	open    *loss            // the outage not over yet; nil when none
}

// failureKind is what the group has said of one shape of failure.
type failureKind struct {
	err       string // the first connection's error text
	first     string // the first connection that met it
	announced bool   // its line is logged
	every     bool   // the "every connection" line is logged
	peak      int    // the most connections that held it at once
}

// loss is one outage: the connections lost from its first loss until
// every one of them is connected again.
type loss struct {
	first     string            // the first connection lost
	conns     map[string]string // connection -> the shape of its cause
	causes    []lossCause       // each shape of cause, first met first
	down      int               // connections of it not connected again yet
	announced bool              // its line is logged
	warned    int               // the connections its line counted
}

// lossCause is one shape of cause of a loss, with its first text.
type lossCause struct{ shape, err string }

// maxLossCauses is how many causes of a loss its line names; it counts the
// others.
const maxLossCauses = 3

// NewFailureGroup returns the group of total connections, logging to log.
func NewFailureGroup(total int, log *slog.Logger) *FailureGroup {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FailureGroup{total: total, log: log, after: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		windows: map[int]func() bool{}, failing: map[string]string{}, kinds: map[string]*failureKind{}, lost: map[string]*loss{}}
}

// startWindow calls f at the end of a window of FailureGroupWindow (see
// live). Called with g.mu held.
func (g *FailureGroup) startWindow(f func()) {
	n := g.window
	g.window++
	g.windows[n] = g.after(FailureGroupWindow, func() {
		g.live(func() {
			delete(g.windows, n)
			f()
		})
	})
}

// live calls f with g.mu held, unless the group stopped.
func (g *FailureGroup) live(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.stopped {
		f()
	}
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
	g.live(func() {
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
	})
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

// Lost records that conn, connected, was lost with msg; the Supervisor
// redials it.
func (g *FailureGroup) Lost(conn, msg string) {
	shape := FailureShape(msg)
	g.live(func() {
		l := g.open
		if l == nil {
			l = &loss{first: conn, conns: map[string]string{}}
			g.open = l
			g.startWindow(func() { g.announceLoss(l) })
		}
		g.lost[conn] = l
		l.down++
		l.conns[conn] = shape
		if !slices.ContainsFunc(l.causes, func(c lossCause) bool { return c.shape == shape }) {
			l.causes = append(l.causes, lossCause{shape: shape, err: msg})
		}
		g.log.Debug("source connection lost; reconnecting", "conn", conn, "err", msg, "connections_lost", len(l.conns), "connections", g.total)
	})
}

// announceLoss logs the line of loss l at the end of its window, and the
// line that it is over if every connection of it is connected again
// already. Called with g.mu held.
func (g *FailureGroup) announceLoss(l *loss) {
	l.announced, l.warned = true, len(l.conns)
	g.log.Warn("source connections lost; reconnecting", "connections_lost", len(l.conns), "connections", g.total,
		"first", l.first, "err", l.causesText())
	if l.down == 0 {
		g.lossOver(l)
	}
}

// causesText names l's causes: the one cause's text, or each with how many
// connections it ended, first met first, at most maxLossCauses of them.
func (l *loss) causesText() string {
	if len(l.causes) == 1 {
		return l.causes[0].err
	}
	var b strings.Builder
	for i, c := range l.causes {
		if i == maxLossCauses {
			fmt.Fprintf(&b, "; %d other causes", len(l.causes)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		n := 0
		for _, s := range l.conns {
			if s == c.shape {
				n++
			}
		}
		unit := "connections"
		if n == 1 {
			unit = "connection"
		}
		fmt.Fprintf(&b, "%s (%d %s)", c.err, n, unit)
	}
	return b.String()
}

// lossOver logs that every connection of loss l is connected again, with
// how many were lost after its line, and closes it. Called with g.mu held.
func (g *FailureGroup) lossOver(l *loss) {
	if g.open == l {
		g.open = nil
	}
	args := []any{"connections_lost", len(l.conns), "connections", g.total}
	if later := len(l.conns) - l.warned; later > 0 {
		args = append(args, "connections_lost_after_warn", later)
	}
	g.log.Info("source connections reconnected: every connection lost is connected again", args...)
}

// Connected records that conn connected; it ends the failures and the
// loss it was part of once no connection holds them any more.
func (g *FailureGroup) Connected(conn string) {
	g.live(func() {
		if l := g.lost[conn]; l != nil {
			delete(g.lost, conn)
			l.down--
			if l.down == 0 && l.announced {
				g.lossOver(l)
			}
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
	})
}
