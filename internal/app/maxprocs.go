package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/maxprocs"
)

// applyMaxProcs sets GOMAXPROCS as runtime.max_procs says unless the
// GOMAXPROCS environment variable is set, and says what it did. With
// max_procs 0 (automatic) it starts at 1 and runs the governor until ctx
// ends; the spool (spool.dir set) keeps Go's choice.
func applyMaxProcs(ctx context.Context, cfg *config.Config, log *slog.Logger) {
	c := maxprocs.Apply(ctx, os.Getenv, cfg.Runtime.MaxProcs, cfg.Spool.Dir != "", procsChanged(log))
	switch c.From {
	case maxprocs.FromEnv:
		log.Info("GOMAXPROCS from the environment (it wins over runtime.max_procs)", "gomaxprocs", c.Go)
	case maxprocs.FromSpool:
		log.Info("GOMAXPROCS as Go chose it: the spool is on (runtime.max_procs 0 keeps one P only without the spool, whose commits hold a P while they wait for the disk)",
			"gomaxprocs", c.Go)
	case maxprocs.FromGo:
		log.Info("GOMAXPROCS as Go chose it (the CPUs or the cgroup's CPU limit)",
			"gomaxprocs", c.Go, "max_procs", cfg.Runtime.MaxProcs)
	case maxprocs.FromAuto:
		log.Info(fmt.Sprintf("GOMAXPROCS 1 while the bridge needs less than %d%% of a core, up to Go's choice when it needs more (runtime.max_procs 0: automatic; the GOMAXPROCS environment variable overrides it)", maxprocs.RaisePercent),
			"gomaxprocs", c.N, "go_choice", c.Go)
	default:
		log.Info("GOMAXPROCS capped by runtime.max_procs (the GOMAXPROCS environment variable overrides it)",
			"gomaxprocs", c.N, "go_choice", c.Go)
	}
}

// procsChanged logs each change of the GOMAXPROCS governor.
func procsChanged(log *slog.Logger) func(maxprocs.Change) {
	return func(c maxprocs.Change) {
		log.Info("GOMAXPROCS changed to follow the bridge's CPU use (runtime.max_procs 0: automatic)",
			"gomaxprocs", c.N, "was", c.Was, "cores_used", float64(int(c.Cores*100))/100)
	}
}
