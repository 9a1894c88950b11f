// Command iot-mns-bridge forwards Alibaba Cloud IoT Platform server-side
// subscription messages (STOMP over TLS or AMQP 1.0) to MNS queues and
// topics. Run "iot-mns-bridge help" for the subcommands.
//
// main only parses the command line, turns SIGINT/SIGTERM into a cancelled
// context and maps errors to exit codes; the work is in internal/app, which
// wires the data path: a source (bridge/stompsrc or bridge/amqpsrc, on
// bridge/source) → optionally the spool (bridge/spool) → the pipeline
// (bridge) → the MNS sink (sinks/mns), each delivery settled back at its
// source; package bridge's doc maps the folders and files.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.MainOS(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
