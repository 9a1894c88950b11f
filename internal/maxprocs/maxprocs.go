// Package maxprocs decides GOMAXPROCS, the threads that run Go code at
// once, for a process that is cheaper on one P at moderate rates but must
// get more cores when it needs them: from the GOMAXPROCS environment
// variable (which wins: Go applied it already), a limit (N > 0 caps Go's
// choice at N; 0 is automatic), whether the process commits to disk, and
// Go's own choice (the CPUs, or the cgroup's CPU limit). With the automatic
// limit it starts at 1 and a governor raises GOMAXPROCS while the process
// uses most of its Ps and lowers it once it is mostly idle again.
//
// The package knows no config key and does not log: Apply returns what it
// decided and reports each change of the governor to its caller, which
// names its own settings to the operator (as package memlimit does for the
// memory limit).
package maxprocs

import (
	"context"
	"runtime"
	"time"
)

// Where a Choice came from.
const (
	FromEnv   = "GOMAXPROCS" // the environment variable; Go applied it already
	FromSpool = "spool"      // automatic, but the process commits to disk: Go's choice kept
	FromGo    = "go"         // Go's choice kept (one CPU, or a limit not under it)
	FromAuto  = "auto"       // automatic: 1 at start, then the governor
	FromLimit = "limit"      // the limit caps Go's choice
)

// Choice is what GOMAXPROCS becomes at start, and why.
type Choice struct {
	// N is the new GOMAXPROCS; 0 leaves it as Go set it.
	N int
	// From is one of the From constants.
	From string
	// Go is GOMAXPROCS as Go set it, before Apply (Apply fills it in).
	Go int
}

// Choose decides GOMAXPROCS from env (the GOMAXPROCS environment
// variable), limit, whether the process commits to disk (disk), and
// goProcs, what Go chose. limit N > 0 caps Go's choice at N; 0 (automatic)
// starts at 1 and leaves the rest to the governor where it can measure the
// process's CPU time (unix), unless disk is set: commits that wait in
// fdatasync hold their thread's P, and with a single P every goroutine
// waits with them (a third less throughput at full rate, measured).
func Choose(env string, limit, goProcs int, disk bool) Choice {
	switch {
	case env != "":
		return Choice{From: FromEnv}
	case limit == 0 && disk:
		return Choice{From: FromSpool}
	case limit == 0 && goProcs > 1 && canMeasureCPU:
		return Choice{N: 1, From: FromAuto}
	case limit <= 0 || limit >= goProcs:
		return Choice{From: FromGo}
	}
	return Choice{N: limit, From: FromLimit}
}

// Change is one change the governor made.
type Change struct {
	N, Was int     // GOMAXPROCS now, and before
	Cores  float64 // the cores the process used over the last period
}

// Apply sets GOMAXPROCS as Choose decides for getenv("GOMAXPROCS"), limit
// and disk, and returns the choice. When it is automatic (FromAuto) it
// starts at 1 and runs the governor until ctx ends, measuring the
// process's CPU time every second; changed (which may be nil) hears of
// every change it makes.
func Apply(ctx context.Context, getenv func(string) string, limit int, disk bool, changed func(Change)) Choice {
	goProcs := runtime.GOMAXPROCS(0)
	c := Choose(getenv("GOMAXPROCS"), limit, goProcs, disk)
	c.Go = goProcs
	if c.N > 0 {
		runtime.GOMAXPROCS(c.N)
	}
	if c.From == FromAuto {
		g := &governor{max: goProcs, cur: 1, set: func(n int) { runtime.GOMAXPROCS(n) }, changed: changed}
		go g.run(ctx, time.Second, processCPU)
	}
	return c
}

// RaisePercent is the governor's threshold of growth, in percent of its Ps'
// time (raiseAt); the texts that state it read it from here.
const RaisePercent = 70

// The governor's thresholds: raise GOMAXPROCS (double it) when the process
// used more than raiseAt of its Ps' time over a period; lower it (halve it)
// once it used less than lowerAt of the lower count's time for lowerAfter
// periods in a row.
const (
	raiseAt    = RaisePercent / 100.0
	lowerAt    = 0.5
	lowerAfter = 30
)

// governor keeps GOMAXPROCS at 1 while the process needs less than most of
// a core, and raises it (up to max) when it needs more. One P is cheaper
// at moderate rates: with two, the goroutines of a message wake each other
// across threads (bench/README, "Cost per message, third pass"); but a
// process that needs more than a core must get it.
type governor struct {
	max, cur int
	low      int // periods in a row under the lowering threshold
	set      func(int)
	changed  func(Change) // nil: nobody listens
}

// step takes the cores the process used over the last period (CPU time /
// wall time) and changes GOMAXPROCS when the thresholds say so.
func (g *governor) step(cores float64) {
	switch {
	case g.cur < g.max && cores > raiseAt*float64(g.cur):
		g.low = 0
		g.change(min(g.max, 2*g.cur), cores)
	case g.cur > 1 && cores < lowerAt*float64(g.cur/2):
		g.low++
		if g.low >= lowerAfter {
			g.low = 0
			g.change(g.cur/2, cores)
		}
	default:
		g.low = 0
	}
}

func (g *governor) change(n int, cores float64) {
	was := g.cur
	g.cur = n
	g.set(n)
	if g.changed != nil {
		g.changed(Change{N: n, Was: was, Cores: cores})
	}
}

// run measures the process's CPU time every period (cpu returns the total
// so far) and steps, until ctx ends.
func (g *governor) run(ctx context.Context, period time.Duration, cpu func() time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	last, lastAt := cpu(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		used, at := cpu(), time.Now()
		if wall := at.Sub(lastAt); wall > 0 {
			g.step(float64(used-last) / float64(wall))
		}
		last, lastAt = used, at
	}
}
