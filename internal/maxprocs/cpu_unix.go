//go:build unix

package maxprocs

import (
	"syscall"
	"time"
)

// canMeasureCPU says processCPU works, so the governor can run.
const canMeasureCPU = true

// processCPU is the CPU time (user + system) the process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
