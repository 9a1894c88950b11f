//go:build !unix

package app

import "time"

// canMeasureCPU is false: runtime.max_procs 0 keeps Go's choice here, as
// the governor could never raise GOMAXPROCS from 1.
const canMeasureCPU = false

func processCPU() time.Duration { return 0 }
