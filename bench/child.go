package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
)

// The harness starts the bridge as a separate process by re-executing its
// own binary with childEnv set: the child then runs exactly what
// cmd/iot-mns-bridge runs (app.Main), so its CPU time and peak RSS are the
// bridge's alone. cpuProfileEnv, when set in the child, names a file that
// receives a CPU profile of the whole child run.
const (
	childEnv      = "IOT_MNS_BENCH_CHILD"
	cpuProfileEnv = "IOT_MNS_BENCH_CPUPROFILE"
)

// isChild reports whether this process was started by the harness as the
// bridge.
func isChild() bool { return os.Getenv(childEnv) == "bridge" }

// runChild runs the bridge command line in os.Args[1:] until SIGTERM or
// SIGINT and returns its exit code.
func runChild() int {
	if path := os.Getenv(cpuProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench child: cpu profile: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench child: cpu profile: %v\n", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return app.Main(ctx, os.Args[1:], app.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}
