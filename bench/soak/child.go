package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
)

// The soak starts the bridge as a separate process by re-executing its own
// binary with childEnv set: the child then runs exactly what
// cmd/iot-mns-bridge runs (app.Main), so its RSS, heap and goroutines are
// the bridge's alone.
const childEnv = "IOT_MNS_SOAK_CHILD"

// isChild reports whether this process was started by the soak as the
// bridge.
func isChild() bool { return os.Getenv(childEnv) == "bridge" }

// runChild runs the bridge command line in os.Args[1:] until SIGTERM or
// SIGINT and returns its exit code.
func runChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return app.Main(ctx, os.Args[1:], app.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
}
