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

// StartWindow is how long the connections have, from the start, to be all
// up before a FailureGroup says how many are and why the others are not:
// less than the default DialTimeout (15 s, the platform's deadline for a
// connect and its login), so that the line comes while a dial that hangs
// is still dialling.
const StartWindow = 10 * time.Second

// OutageQuietWindow is how long after an outage's WARN line a loss joins
// the outage at debug (see FailureGroup): a platform restarting its nodes
// one after another gives one line, while a loss long after it, with the
// outage still open because a connection of it never came back, is news
// and gets a line of its own.
const OutageQuietWindow = time.Minute

// FailureGroup is shared by the Supervisors of one source's connections, so
// that what they meet together is logged once with how many connections it
// holds, not once per connection:
//
//   - The start (from Start): one INFO line "source connected" once every
//     connection is up at the same time. If they are not all up when
//     StartWindow ends, one WARN line counts those up and names the causes
//     of the others (each's latest connect failure, or still dialling),
//     with how many connections each holds; not when none is up and the
//     connect failure of each has its ERROR line (below) already, which
//     says the same.
//   - A connect failure (a throttled consumer group, a refused login, the
//     platform unreachable): the first failure of a kind (see FailureShape)
//     starts a window of FailureGroupWindow, at whose end one ERROR line
//     names the failure and counts the connections that met it; later, one
//     line when it holds every connection, and one when the last of them
//     connects again.
//   - Connections lost (the platform restarts a node, the network blips):
//     the first loss opens an outage and starts a window of
//     FailureGroupWindow, at whose end one WARN line counts the connections
//     lost in it and names the causes; one INFO line when every connection
//     lost in the outage is connected again, which closes it. The outage
//     stays open while any connection of it is down: a connection that
//     never comes back keeps it open, and its redials are connect
//     failures, logged as above. A loss while it is open joins it: within
//     OutageQuietWindow of its latest WARN line (the platform restarts its
//     nodes one after another), or while a window of it runs, at debug
//     only; after that, the loss starts a window of FailureGroupWindow, at
//     whose end one more WARN line counts the connections lost since the
//     previous line (those that joined at debug too), names their causes,
//     and says how many connections of the outage are down
//     (connections_down), and a new quiet window starts: at most one WARN
//     line per quiet window. The INFO line counts the connections lost in
//     the whole outage (connections_lost, each once) and, of those, the
//     ones that no WARN line counted, lost after the latest one
//     (connections_lost_after_warn, when there are any). An outage whose
//     connections are all back before its window ends gets the window's
//     WARN line, then the INFO line.
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

	// The start (see Start): the connections up now, those ever up, the
	// latest failure of each never up, and its window's number; started
	// and allUp say whether it began and whether its line is logged.
	up, seen       map[string]bool
	notUp          causes
	startN         int
	started, allUp bool
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
	conns   map[string]bool // every connection lost in it
	since   causes          // of each connection lost since its latest line (all before the first)
	first   string          // the first connection lost since its latest line
	down    int             // connections of it not connected again yet
	warned  int             // the connections its lines counted
	pending bool            // a window of it runs: its line comes at its end
	quiet   int             // the number of the quiet window after its latest line; it runs while g.windows holds it (-1: none yet)
}

// causes are why some connections are down: the shape of each
// connection's cause, and each shape with its first text, first met
// first.
type causes struct {
	conns  map[string]string // connection -> the shape of its cause
	shapes []cause
}

// cause is one shape of cause, with its first text.
type cause struct{ shape, err string }

// maxCauses is how many causes a line names; it counts the others.
const maxCauses = 3

// NewFailureGroup returns the group of total connections, logging to log.
func NewFailureGroup(total int, log *slog.Logger) *FailureGroup {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FailureGroup{total: total, log: log, after: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		windows: map[int]func() bool{}, failing: map[string]string{}, kinds: map[string]*failureKind{}, lost: map[string]*loss{},
		up: map[string]bool{}, seen: map[string]bool{}, notUp: causes{conns: map[string]string{}}}
}

// startWindow calls f at the end of a window of d (see live) and returns
// the window's number. Called with g.mu held.
func (g *FailureGroup) startWindow(d time.Duration, f func()) int {
	n := g.window
	g.window++
	g.windows[n] = g.after(d, func() {
		g.live(func() {
			delete(g.windows, n)
			f()
		})
	})
	return n
}

// stopWindow stops window n if it runs. Called with g.mu held.
func (g *FailureGroup) stopWindow(n int) {
	if stop := g.windows[n]; stop != nil {
		stop()
		delete(g.windows, n)
	}
}

// Start begins the start of the connections (see FailureGroup): the
// Driver calls it once, as its Run begins, before they dial.
func (g *FailureGroup) Start() {
	g.live(func() {
		g.started = true
		g.startN = g.startWindow(StartWindow, g.announceStart)
	})
}

// announceStart logs, at the end of the start's window, how many
// connections are up and why the others are not, unless every one is up,
// or none is and the ERROR lines of their connect failures said so
// already (toldAll). Called with g.mu held.
func (g *FailureGroup) announceStart() {
	dialling := g.total - len(g.seen) - len(g.notUp.conns)
	if g.allUp || len(g.up) == 0 && dialling == 0 && g.toldAll() {
		return
	}
	why := g.notUp.counted()
	if dialling > 0 {
		why = append(why, causeCount{"still dialling", dialling})
	}
	g.log.Warn("source not connected on every connection yet; retrying the others with backoff", "connections_up", len(g.up),
		"connections", g.total, "err", causesText(why))
}

// toldAll is whether the connect failure of every connection never up
// has its ERROR line logged. Called with g.mu held.
func (g *FailureGroup) toldAll() bool {
	for _, shape := range g.notUp.conns {
		if k := g.kinds[shape]; k == nil || !k.announced {
			return false
		}
	}
	return true
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
			g.startWindow(FailureGroupWindow, func() { g.announce(shape) })
		}
		if g.started && !g.seen[conn] {
			g.notUp.add(conn, shape, msg)
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
		delete(g.up, conn)
		l := g.open
		if l == nil {
			l = &loss{conns: map[string]bool{}, since: causes{conns: map[string]string{}}, quiet: -1}
			g.open = l
		}
		if len(l.since.conns) == 0 {
			l.first = conn
		}
		if _, quiet := g.windows[l.quiet]; !l.pending && !quiet {
			// The outage's first loss, or one after its quiet window.
			l.pending = true
			g.startWindow(FailureGroupWindow, func() { g.announceLoss(l) })
		}
		g.lost[conn] = l
		l.down++
		l.conns[conn] = true
		l.since.add(conn, shape, msg)
		g.log.Debug("source connection lost; reconnecting", "conn", conn, "err", msg, "connections_lost", len(l.conns), "connections", g.total)
	})
}

// announceLoss logs the line of loss l at the end of one of its windows:
// the connections lost since its latest line and, after its first line,
// how many of it are down. Then it logs the line that it is over if every
// connection of it is connected again already, or starts its quiet window.
// Called with g.mu held.
func (g *FailureGroup) announceLoss(l *loss) {
	args := []any{"connections_lost", len(l.since.conns)}
	if l.warned > 0 {
		args = append(args, "connections_down", l.down)
	}
	args = append(args, "connections", g.total, "first", l.first, "err", causesText(l.since.counted()))
	g.log.Warn("source connections lost; reconnecting", args...)
	// Every connection of it is counted now: lost before this line or
	// since the previous one.
	l.pending, l.warned = false, len(l.conns)
	l.since = causes{conns: map[string]string{}}
	if l.down == 0 {
		g.lossOver(l)
		return
	}
	l.quiet = g.startWindow(OutageQuietWindow, func() {}) // its end is all it marks
}

// add records that conn is down for msg, of shape; a connection's latest
// cause replaces its earlier one.
func (c *causes) add(conn, shape, msg string) {
	c.conns[conn] = shape
	if !slices.ContainsFunc(c.shapes, func(s cause) bool { return s.shape == shape }) {
		c.shapes = append(c.shapes, cause{shape: shape, err: msg})
	}
}

// causeCount is a cause's text and how many connections it holds.
type causeCount struct {
	err   string
	conns int
}

// counted is each cause that holds a connection, with how many it holds,
// first met first.
func (c *causes) counted() []causeCount {
	var out []causeCount
	for _, s := range c.shapes {
		n := 0
		for _, shape := range c.conns {
			if shape == s.shape {
				n++
			}
		}
		if n > 0 {
			out = append(out, causeCount{s.err, n})
		}
	}
	return out
}

// causesText names causes: the one cause's text, or each with how many
// connections it holds, at most maxCauses of them.
func causesText(causes []causeCount) string {
	if len(causes) == 1 {
		return causes[0].err
	}
	var b strings.Builder
	for i, c := range causes {
		if i == maxCauses {
			fmt.Fprintf(&b, "; %d other causes", len(causes)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		unit := "connections"
		if c.conns == 1 {
			unit = "connection"
		}
		fmt.Fprintf(&b, "%s (%d %s)", c.err, c.conns, unit)
	}
	return b.String()
}

// lossOver logs that every connection of loss l is connected again, with
// how many were lost after its line, and closes it. Called with g.mu held.
func (g *FailureGroup) lossOver(l *loss) {
	if g.open == l {
		g.open = nil
	}
	g.stopWindow(l.quiet)
	args := []any{"connections_lost", len(l.conns), "connections", g.total}
	if later := len(l.conns) - l.warned; later > 0 {
		args = append(args, "connections_lost_after_warn", later)
	}
	g.log.Info("source connections reconnected: every connection lost is connected again", args...)
}

// Connected records that conn connected; it ends the failures and the
// loss it was part of once no connection holds them any more, and the
// start once every connection is up.
func (g *FailureGroup) Connected(conn string) {
	g.live(func() {
		g.up[conn], g.seen[conn] = true, true
		delete(g.notUp.conns, conn)
		defer g.startOver() // after the lines of what conn's connect ends
		if l := g.lost[conn]; l != nil {
			delete(g.lost, conn)
			l.down--
			if l.down == 0 && !l.pending {
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

// startOver logs, once, that every connection is up, and ends the start's
// window. Called with g.mu held.
func (g *FailureGroup) startOver() {
	if !g.started || g.allUp || len(g.up) < g.total {
		return
	}
	g.allUp = true
	g.stopWindow(g.startN)
	g.log.Info("source connected", "connections", g.total)
}
