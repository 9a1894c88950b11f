//go:build !unix

package app

import "time"

// processCPU is not measured here: the governor never raises GOMAXPROCS.
func processCPU() time.Duration { return 0 }
