package app

import (
	"log/slog"
	"os"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/memlimit"
)

// applyMemoryLimit gives the Go runtime a soft memory limit of 90% of the
// cgroup's (container's, systemd unit's) memory limit unless GOMEMLIMIT is
// set, and says what it did. It warns when the cgroup leaves less room than
// delivery.max_in_flight_bytes needs.
func applyMemoryLimit(cfg *config.Config, log *slog.Logger) {
	l, err := memlimit.Apply("/sys/fs/cgroup", "/proc/self/cgroup", os.Getenv)
	switch {
	case err != nil:
		log.Warn("the cgroup's memory limit could not be read; the Go runtime runs without a soft memory limit (set GOMEMLIMIT to give one)", "err", err)
		return
	case l.From == "GOMEMLIMIT":
		log.Info("Go soft memory limit from GOMEMLIMIT", "bytes", l.Bytes)
	case l.Bytes > 0:
		log.Info("Go soft memory limit set from the cgroup's memory limit (GOMEMLIMIT overrides it)",
			"bytes", l.Bytes, "cgroup_limit", l.Cgroup, "file", l.From)
	default:
		return
	}
	// What the pipeline may hold, plus about 40 MiB for the rest of the
	// bridge (measured by the bench's outage row).
	if need := int64(cfg.Delivery.MaxInFlightBytes) + 40<<20; l.Bytes < need {
		log.Warn("the memory limit leaves less room than delivery.max_in_flight_bytes needs (about 40 MiB more); lower delivery.max_in_flight_bytes or raise the limit",
			"limit", l.Bytes, "max_in_flight_bytes", int64(cfg.Delivery.MaxInFlightBytes))
	}
}
