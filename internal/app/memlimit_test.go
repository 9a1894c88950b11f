package app

import (
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// TestMemoryBudgetHoldsTheDedupWindow: the soft memory limit's budget
// holds the de-dup window beside delivery.max_in_flight_bytes. The window
// is allocated whole at start (up to 510 MB at delivery.dedup.size's
// bound, 31 MB at the 600,000 ids its error message suggests for 1,000
// msgs/s); a budget of the byte bound + 16 MiB alone put the limit below
// the live heap, and the runtime collected without end once the pipeline
// held its bound (or from the start, with a large window).
func TestMemoryBudgetHoldsTheDedupWindow(t *testing.T) {
	for _, size := range []int{0, 100_000, 600_000, bridge.MaxDedupSize} {
		cfg := config.Default()
		cfg.Delivery.Dedup.Size = size
		window := int64(bridge.DedupBytes(size))
		if got, least := memoryBudget(&cfg), int64(cfg.Delivery.MaxInFlightBytes)+window+heapAllowance; got < least {
			t.Errorf("dedup.size %d: budget %d, want at least max_in_flight_bytes %d + the window %d + %d", size, got,
				int64(cfg.Delivery.MaxInFlightBytes), window, heapAllowance)
		}
	}
}
