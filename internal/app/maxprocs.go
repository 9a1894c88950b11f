package app

import (
	"log/slog"
	"os"
	"runtime"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// procsChoice is what GOMAXPROCS becomes at start, and why.
type procsChoice struct {
	n    int    // the new GOMAXPROCS; 0 leaves it as Go set it
	from string // "GOMAXPROCS" (the environment), "go" or "runtime.max_procs"
}

// chooseMaxProcs decides GOMAXPROCS from the environment's GOMAXPROCS
// (which wins: Go applied it already), runtime.max_procs (0: Go's choice)
// and goProcs, what Go chose (the CPUs, or the cgroup's CPU limit): the
// cap only lowers it.
func chooseMaxProcs(env string, maxProcs, goProcs int) procsChoice {
	switch {
	case env != "":
		return procsChoice{from: "GOMAXPROCS"}
	case maxProcs <= 0 || maxProcs >= goProcs:
		return procsChoice{from: "go"}
	}
	return procsChoice{n: maxProcs, from: "runtime.max_procs"}
}

// applyMaxProcs caps GOMAXPROCS at runtime.max_procs unless the GOMAXPROCS
// environment variable is set, and says what it did. Left alone, Go keeps
// following the cgroup's CPU limit.
func applyMaxProcs(cfg *config.Config, log *slog.Logger) {
	goProcs := runtime.GOMAXPROCS(0)
	c := chooseMaxProcs(os.Getenv("GOMAXPROCS"), cfg.Runtime.MaxProcs, goProcs)
	switch c.from {
	case "GOMAXPROCS":
		log.Info("GOMAXPROCS from the environment (it wins over runtime.max_procs)", "gomaxprocs", goProcs)
	case "go":
		log.Info("GOMAXPROCS as Go chose it (the CPUs or the cgroup's CPU limit; runtime.max_procs caps it)",
			"gomaxprocs", goProcs, "max_procs", cfg.Runtime.MaxProcs)
	default:
		runtime.GOMAXPROCS(c.n)
		log.Info("GOMAXPROCS capped by runtime.max_procs (the GOMAXPROCS environment variable overrides it)",
			"gomaxprocs", c.n, "go_choice", goProcs)
	}
}
