package app

import (
	"log/slog"
	"os"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/memlimit"
)

// heapAllowance is the heap the bridge needs beside the messages it holds
// (delivery.max_in_flight_bytes) and the de-dup window: buffers of the
// requests in flight, the runtime. With the binary and the stacks, RSS
// stays within the bound plus about 40 MiB (see the bench's outage-45k
// row).
const heapAllowance = 16 << 20

// memoryBudget is the heap the config needs: the messages held
// (delivery.max_in_flight_bytes), the de-dup window, allocated whole at
// start (bridge.DedupBytes: 4.5 MB at the default 100,000 ids, 510 MB at
// the most), and heapAllowance. A soft limit below the window and the
// bound would have the runtime collect without end once they are reached.
func memoryBudget(cfg *config.Config) int64 {
	return int64(cfg.Delivery.MaxInFlightBytes) + int64(bridge.DedupBytes(cfg.Delivery.Dedup.Size)) + heapAllowance
}

// applyMemoryLimit gives the Go runtime a soft memory limit, unless
// GOMEMLIMIT is set: delivery.max_in_flight_bytes + heapAllowance, or 90%
// of the cgroup's (container's, systemd unit's) memory limit when that is
// lower, and says what it did. It warns when the cgroup leaves less room
// than the byte bound needs.
func applyMemoryLimit(cfg *config.Config, log *slog.Logger) {
	budget := memoryBudget(cfg)
	l, err := memlimit.Apply("/sys/fs/cgroup", "/proc/self/cgroup", os.Getenv, budget)
	if err != nil {
		log.Warn("the cgroup's memory limit could not be read; the Go soft memory limit ignores it (set GOMEMLIMIT to choose one)", "err", err)
	}
	switch l.From {
	case "":
		return
	case "GOMEMLIMIT":
		log.Info("Go soft memory limit from GOMEMLIMIT", "bytes", l.Bytes)
		return
	case "budget":
		log.Info("Go soft memory limit: delivery.max_in_flight_bytes + the de-dup window (delivery.dedup.size) + 16 MiB (GOMEMLIMIT overrides it)",
			"bytes", l.Bytes, "cgroup_limit", l.Cgroup)
		return
	}
	log.Info("Go soft memory limit: 90% of the cgroup's memory limit (GOMEMLIMIT overrides it)",
		"bytes", l.Bytes, "cgroup_limit", l.Cgroup, "file", l.From)
	if l.Bytes < budget {
		log.Warn("the cgroup's memory limit leaves less room than delivery.max_in_flight_bytes and the de-dup window need (about 16 MiB more heap); lower delivery.max_in_flight_bytes or delivery.dedup.size, or raise the limit",
			"limit", l.Bytes, "max_in_flight_bytes", int64(cfg.Delivery.MaxInFlightBytes), "dedup_window_bytes", int64(bridge.DedupBytes(cfg.Delivery.Dedup.Size)))
	}
}
