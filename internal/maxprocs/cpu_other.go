//go:build !unix

package maxprocs

import "time"

// canMeasureCPU is false: a limit of 0 (automatic) keeps Go's choice here, as
// the governor could never raise GOMAXPROCS from 1.
const canMeasureCPU = false

func processCPU() time.Duration { return 0 }
