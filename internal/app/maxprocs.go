package app

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// procsChoice is what GOMAXPROCS becomes at start, and why.
type procsChoice struct {
	n    int    // the new GOMAXPROCS; 0 leaves it as Go set it
	from string // "GOMAXPROCS" (the environment), "go", "spool", "runtime.max_procs" or "auto"
}

// chooseMaxProcs decides GOMAXPROCS from the environment's GOMAXPROCS
// (which wins: Go applied it already), runtime.max_procs, whether the spool
// is on, and goProcs, what Go chose (the CPUs, or the cgroup's CPU limit).
// max_procs N > 0 caps Go's choice at N; 0 (auto) starts at 1 and leaves
// the rest to the governor where it can measure the process's CPU time
// (unix), unless the spool is on: its commits wait in
// fdatasync holding their thread's P, and with a single P every goroutine
// waits with them (a third less throughput at full rate, measured).
func chooseMaxProcs(env string, maxProcs, goProcs int, spool bool) procsChoice {
	switch {
	case env != "":
		return procsChoice{from: "GOMAXPROCS"}
	case maxProcs == 0 && spool:
		return procsChoice{from: "spool"}
	case maxProcs == 0 && goProcs > 1 && canMeasureCPU:
		return procsChoice{n: 1, from: "auto"}
	case maxProcs <= 0 || maxProcs >= goProcs:
		return procsChoice{from: "go"}
	}
	return procsChoice{n: maxProcs, from: "runtime.max_procs"}
}

// applyMaxProcs sets GOMAXPROCS as runtime.max_procs says unless the
// GOMAXPROCS environment variable is set, and says what it did. With
// max_procs 0 (auto) it starts at 1 and runs the governor until ctx ends.
func applyMaxProcs(ctx context.Context, cfg *config.Config, log *slog.Logger) {
	goProcs := runtime.GOMAXPROCS(0)
	c := chooseMaxProcs(os.Getenv("GOMAXPROCS"), cfg.Runtime.MaxProcs, goProcs, cfg.Spool.Dir != "")
	switch c.from {
	case "GOMAXPROCS":
		log.Info("GOMAXPROCS from the environment (it wins over runtime.max_procs)", "gomaxprocs", goProcs)
	case "spool":
		log.Info("GOMAXPROCS as Go chose it: the spool is on (runtime.max_procs 0 keeps one P only without the spool, whose commits hold a P while they wait for the disk)",
			"gomaxprocs", goProcs)
	case "go":
		log.Info("GOMAXPROCS as Go chose it (the CPUs or the cgroup's CPU limit)",
			"gomaxprocs", goProcs, "max_procs", cfg.Runtime.MaxProcs)
	case "auto":
		runtime.GOMAXPROCS(1)
		log.Info("GOMAXPROCS 1 while the bridge needs less than 70% of a core, up to Go's choice when it needs more (runtime.max_procs 0: automatic; the GOMAXPROCS environment variable overrides it)",
			"gomaxprocs", 1, "go_choice", goProcs)
		g := &procsGovernor{max: goProcs, cur: 1, set: func(n int) { runtime.GOMAXPROCS(n) }, log: log}
		go g.run(ctx, time.Second, processCPU)
	default:
		runtime.GOMAXPROCS(c.n)
		log.Info("GOMAXPROCS capped by runtime.max_procs (the GOMAXPROCS environment variable overrides it)",
			"gomaxprocs", c.n, "go_choice", goProcs)
	}
}

// The governor's thresholds: raise GOMAXPROCS (double it) when the process
// used more than raiseAt of its Ps' time over a period; lower it (halve it)
// once it used less than lowerAt of the lower count's time for lowerAfter
// periods in a row.
const (
	raiseAt    = 0.7
	lowerAt    = 0.5
	lowerAfter = 30
)

// procsGovernor keeps GOMAXPROCS at 1 while the bridge needs less than
// most of a core, and raises it (up to max) when it needs more. One P is
// cheaper at moderate rates: with two, the goroutines of a message wake
// each other across threads (bench/README, "Cost per message, third
// pass"); but a bridge that needs more than a core must get it.
type procsGovernor struct {
	max, cur int
	low      int // periods in a row under the lowering threshold
	set      func(int)
	log      *slog.Logger
}

// step takes the cores the process used over the last period (CPU time /
// wall time) and changes GOMAXPROCS when the thresholds say so.
func (g *procsGovernor) step(cores float64) {
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

func (g *procsGovernor) change(n int, cores float64) {
	g.log.Info("GOMAXPROCS changed to follow the bridge's CPU use (runtime.max_procs 0: automatic)",
		"gomaxprocs", n, "was", g.cur, "cores_used", float64(int(cores*100))/100)
	g.cur = n
	g.set(n)
}

// run measures the process's CPU time every period (cpu returns the total
// so far) and steps, until ctx ends.
func (g *procsGovernor) run(ctx context.Context, period time.Duration, cpu func() time.Duration) {
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
