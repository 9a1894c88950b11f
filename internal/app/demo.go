package app

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/demo"
)

func cmdDemo(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("demo", stdio)
	o := demo.Options{Start: startDemoBridge}
	fs.StringVar(&o.Protocol, "protocol", "stomp", "source protocol: stomp | amqp (the simulator serves both, with the platform's rules)")
	fs.IntVar(&o.Devices, "devices", 50, "simulated devices")
	fs.Float64Var(&o.Rate, "rate", 1000, "messages per second from the whole fleet (the platform pushes about 1,000 per connection)")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long the fleet sends")
	fs.StringVar(&o.Ack, "ack", "client-individual", "STOMP ack mode: auto | client-individual (AMQP always settles after MNS has the message)")
	fs.BoolVar(&o.EncodeBase64, "encode-base64", true, "log in with encode=base64 (binary-safe bodies)")
	fs.IntVar(&o.Connections, "connections", 1, "source connections")
	fs.DurationVar(&o.MNSLatency, "mns-latency", 20*time.Millisecond, "latency the MNS emulator adds to each request")
	fs.BoolVar(&o.Keep, "keep", false, "after the run, keep the simulator and emulator running (until Ctrl-C) for your own config")
	fs.StringVar(&o.Dir, "dir", "", "where to write the generated config, CA and dead-letter file (default: a new temporary directory); run again in the same -dir, it writes its config again and keeps one you edited as demo.yaml.edited-TIME")
	fs.StringVar(&o.LogLevel, "log-level", "warn", "the bridge's log level: debug | info | warn | error")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	o.Progress = true
	if o.Protocol != "stomp" && o.Protocol != "amqp" {
		return usageErr("-protocol %q: use stomp or amqp", o.Protocol)
	}
	if o.Ack != "auto" && o.Ack != "client-individual" {
		return usageErr("-ack %q: use auto or client-individual", o.Ack)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, o.LogLevel) {
		return usageErr("-log-level %q: use debug, info, warn or error", o.LogLevel)
	}
	if o.Devices < 1 || o.Rate <= 0 || o.Duration <= 0 {
		return usageErr("-devices, -rate, -duration must be positive")
	}
	if err := source.CheckConnections(o.Connections); err != nil {
		return usageErr("-connections %v", err)
	}
	res, err := demo.Run(ctx, o, stdio.Out)
	if err != nil {
		return err
	}
	if res.Lost > 0 {
		return fmt.Errorf("%d of %d messages were lost", res.Lost, res.Sent)
	}
	return nil
}

// startDemoBridge is the demo's demo.StartFunc: this program's bridge,
// logging text to stderr.
func startDemoBridge(cfg *config.Config, logLevel string, onReady func()) (demo.Bridge, error) {
	return New(cfg, Options{
		Logger:  NewLogger(config.Log{Level: logLevel, Format: "text"}, os.Stderr),
		OnReady: onReady,
	})
}
