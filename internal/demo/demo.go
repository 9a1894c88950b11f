// Package demo runs the whole data path on one machine: the IoT platform
// simulator and the MNS emulator in-process, the real bridge between them
// with a generated config, and a simulated fleet; it reports what arrived in
// MNS (sent, forwarded, lost, duplicates, latency). It is what
// "iot-mns-bridge demo" runs. The bridge itself is handed in (Options.Start),
// so this package depends on the bridge's contract, not on the program.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// The demo's throwaway AccessKey, accepted by the simulator and the emulator.
const (
	demoAccessKeyID     = "LTAIdemoAccessKey"
	demoAccessKeySecret = "demo-secret-not-for-production"
	demoGroup           = "DEFAULT_GROUP"
	demoProductKey      = "a1DemoProduct"
)

// demoQueues and demoTopics are where the demo config routes messages.
var (
	demoQueues = []string{"telemetry-" + demoProductKey, "thing-events", "iot-unrouted"}
	demoTopics = []string{"device-status"}
)

// Bridge is what the demo needs of the bridge it runs.
type Bridge interface {
	// Run runs the bridge until ctx is done.
	Run(ctx context.Context) error
	// Stats returns the pipeline's counters.
	Stats() bridge.Stats
}

// StartFunc builds the bridge for cfg, logging at logLevel; it calls
// onReady once the bridge is ready (consuming, MNS reachable).
type StartFunc func(cfg *config.Config, logLevel string, onReady func()) (Bridge, error)

// Options are the demo's knobs (the flags of "iot-mns-bridge demo").
type Options struct {
	// Protocol is the source protocol: "stomp" (default) or "amqp" (the
	// simulator's AMQP 1.0 listener).
	Protocol     string
	Devices      int
	Rate         float64
	Duration     time.Duration
	Ack          string
	EncodeBase64 bool
	Connections  int
	MNSLatency   time.Duration
	Keep         bool // keep the simulator and emulator running afterwards; the files stay, and Run says where
	Dir          string
	LogLevel     string
	Progress     bool
	// SimQueueSize bounds the messages the simulator's group holds waiting
	// for a subscriber (0: the simulator's default); tests make it small.
	SimQueueSize int
	// Start builds the bridge under test; required.
	Start StartFunc
}

// Result is what the demo measured.
type Result struct {
	Sent, Forwarded, Lost, Duplicates int
	// Requeued counts, after an interrupted run, the messages not in MNS
	// that the platform (the simulator) still holds for redelivery: they are
	// not lost. Lost counts only what is neither in MNS nor held there.
	Requeued int
	Elapsed  time.Duration
	P50, P99 time.Duration
	Samples  []string
}

// Run starts the IoT platform simulator and the MNS emulator in-process,
// runs the real bridge against them with a generated config, drives a
// simulated fleet, and reports what arrived in MNS. Progress and the summary
// go to out.
func Run(ctx context.Context, o Options, out io.Writer) (Result, error) {
	var res Result
	if o.Start == nil {
		return res, errors.New("demo: Options.Start is nil: the demo needs a bridge to run")
	}
	dir := o.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "iot-mns-bridge-demo-")
		if err != nil {
			return res, err
		}
		dir = d
		if !o.Keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("-dir %s: %w", dir, err)
	}

	emu := mnsemu.New(mnsemu.Config{
		AccessKeys: map[string]string{demoAccessKeyID: demoAccessKeySecret},
		// Only the demo's destinations exist, as on MNS: a config pointed at
		// the kept emulator with a mistyped name is told QueueNotExist.
		Queues: demoQueues, Topics: demoTopics,
		Faults: mnsemu.Faults{Latency: o.MNSLatency},
	})
	mnsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, fmt.Errorf("demo: MNS emulator: %w", err)
	}
	mnsSrv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	go mnsSrv.Serve(mnsLn)
	defer mnsSrv.Close()

	// The platform's rules for the group and the instance (a public one,
	// whose logins carry no iotInstanceId): a config pointed at the kept
	// simulator with another consumer group or instance id is refused.
	simCfg := iotsim.Config{Secrets: map[string]string{demoAccessKeyID: demoAccessKeySecret}, QueueSize: o.SimQueueSize,
		KnownGroups: []string{demoGroup}, CheckInstance: true}
	switch o.Protocol {
	case "", "stomp":
		o.Protocol = "stomp"
	case "amqp":
		simCfg.AMQPAddr = "127.0.0.1:0"
	default:
		return res, fmt.Errorf("demo: protocol %q: use stomp or amqp", o.Protocol)
	}
	sim, err := iotsim.Start(simCfg)
	if err != nil {
		return res, fmt.Errorf("demo: IoT platform simulator: %w", err)
	}
	defer sim.Close()
	srcAddr, srcURL := sim.Addr(), "stomp+ssl://"+sim.Addr()
	if o.Protocol == "amqp" {
		srcAddr, srcURL = sim.AMQPAddr(), "amqps://"+sim.AMQPAddr()
	}
	caFile := filepath.Join(dir, "simulator-ca.pem")
	if err := os.WriteFile(caFile, sim.CACertPEM(), 0o600); err != nil {
		return res, err
	}
	cfgPath := filepath.Join(dir, "demo.yaml")
	cfgData, err := demoConfig(o, srcAddr, "http://"+mnsLn.Addr().String(), caFile)
	if err != nil {
		return res, fmt.Errorf("demo: config: %w", err)
	}
	kept, err := writeConfig(cfgPath, cfgData, time.Now())
	if err != nil {
		return res, fmt.Errorf("demo: config: %w", err)
	}
	if kept != "" {
		fmt.Fprintf(out, "Your edited %s is kept as %s; the demo writes its own config each run.\n", cfgPath, kept)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return res, fmt.Errorf("demo: generated config: %w", err)
	}
	fmt.Fprintf(out, "IoT platform simulator: %s   MNS emulator: http://%s   config: %s\n", srcURL, mnsLn.Addr(), cfgPath)

	ready := make(chan struct{})
	var readyOnce sync.Once
	b, err := o.Start(cfg, o.LogLevel, func() { readyOnce.Do(func() { close(ready) }) })
	if err != nil {
		return res, err
	}
	bctx, stopBridge := context.WithCancel(ctx)
	defer stopBridge()
	bridgeDone := make(chan error, 1)
	go func() { bridgeDone <- b.Run(bctx) }()

	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		stopBridge()
		<-bridgeDone
		return res, errors.New("demo: the bridge did not become ready within 30s (see the log above)")
	case <-ctx.Done():
		stopBridge()
		<-bridgeDone
		return res, ctx.Err()
	}

	fleet := iotsim.Fleet{
		ProductKey: demoProductKey, Devices: o.Devices, Rate: o.Rate, Duration: o.Duration,
		Types: []string{iotsim.KindTelemetry, iotsim.KindTelemetry, iotsim.KindBinary, iotsim.KindStatus, iotsim.KindProperty, iotsim.KindEvent, iotsim.KindLifecycle},
	}
	start := time.Now()
	// On a terminal the progress line is rewritten in place; elsewhere
	// (logs, CI) each update is a line of its own.
	lineStart, lineEnd := "", "\n"
	if isTerminal(out) {
		lineStart, lineEnd = "\r", ""
	}
	progressDone := make(chan struct{})
	var sentMu sync.Mutex
	sent := 0
	go func() {
		defer close(progressDone)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		prev, prevT := int64(0), start
		for {
			select {
			case <-bctx.Done():
				return
			case <-t.C:
			}
			st := b.Stats()
			now := time.Now()
			rate := float64(st.Forwarded-prev) / now.Sub(prevT).Seconds()
			prev, prevT = st.Forwarded, now
			sentMu.Lock()
			n := sent
			sentMu.Unlock()
			if o.Progress {
				fmt.Fprintf(out, "%s%5.1fs  sent %7d  received %7d  forwarded %7d  %7.0f msg/s   %s",
					lineStart, now.Sub(start).Seconds(), n, st.Received, st.Forwarded, rate, lineEnd)
			}
		}
	}()
	seq := 0
	_, ferr := fleet.Run(bctx, func(m iotsim.Message) {
		m.MessageID = fmt.Sprintf("demo-%08d", seq+1)
		m.GenerateTime = time.Now().UnixMilli()
		// Gives up when the run is interrupted while the group is full.
		if sim.PublishContext(bctx, demoGroup, m) != nil {
			return
		}
		seq++
		sentMu.Lock()
		sent++
		sentMu.Unlock()
	})
	if ferr != nil {
		return res, ferr
	}
	total := seq
	// Wait for the bridge to forward everything (bounded).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st := b.Stats()
		if st.Forwarded+st.DeadLettered >= int64(total) && st.InFlight == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.Elapsed = time.Since(start)
	stopBridge()
	if err := <-bridgeDone; err != nil {
		return res, err
	}
	<-progressDone
	if o.Progress && lineEnd == "" {
		fmt.Fprintln(out)
	}

	res.Sent = total
	res = collectDemo(emu, total, res)
	if ctx.Err() != nil {
		// Interrupted: what the platform still holds is redelivered to the
		// next consumer of the group, not lost.
		res.Requeued = min(res.Lost, sim.Stats().Pending)
		res.Lost -= res.Requeued
	}
	st := b.Stats()
	res.Forwarded = int(st.Forwarded)
	printDemo(out, res, st.DeadLettered)

	if o.Keep {
		fmt.Fprintf(out, "\nKeeping the simulator and emulator running until Ctrl-C. Point your own bridge at them:\n"+
			"  config (edit as you like): %s\n  source: %s over TLS at %s, CA %s\n  MNS: http://%s\n  AccessKey: %s / %s\n"+
			"  They refuse what the platform and MNS refuse: consumer groups other than %s, an iot_instance_id (a public instance has none),\n"+
			"  queues other than %s and topics other than %s, so check -connect shows a mistake.\n",
			cfgPath, o.Protocol, srcAddr, caFile, mnsLn.Addr(), demoAccessKeyID, demoAccessKeySecret,
			demoGroup, strings.Join(demoQueues, ", "), strings.Join(demoTopics, ", "))
		kf := fleet
		kf.Duration = 0
		kf.Count = 0
		// Nothing consumes unless the user points a bridge here: once the
		// group is full, publishing waits (said once), and gives up at Ctrl-C.
		now, cancelNow := context.WithCancel(context.Background())
		cancelNow()
		saidFull := false
		kf.Run(ctx, func(m iotsim.Message) {
			if sim.PublishContext(now, demoGroup, m) == nil {
				return
			}
			if !saidFull {
				saidFull = true
				fmt.Fprintf(out, "The simulator's group is full and nothing consumes it: the fleet waits for a consumer (Ctrl-C to stop).\n")
			}
			_ = sim.PublishContext(ctx, demoGroup, m)
		})
		<-ctx.Done()
		// The files stay: the user may have edited the config.
		fmt.Fprintf(out, "\nThe demo's files stay in %s (config, CA, dead-letter file; the config holds the demo's AccessKey)", dir)
		if o.Dir == "" {
			fmt.Fprintf(out, "; remove them when done: rm -r %s", dir)
		}
		fmt.Fprintln(out)
	}
	return res, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// collectDemo reads everything the emulator stored and compares it with
// the messages sent (ids demo-00000001 .. demo-<total>).
func collectDemo(emu *mnsemu.Emulator, total int, res Result) Result {
	seen := make(map[string]int, total)
	var lat []time.Duration
	add := func(where string, m mnsemu.StoredMessage) {
		body, err := m.DecodedBody()
		if err != nil {
			return
		}
		var env struct {
			MessageID    string `json:"messageId"`
			GenerateTime int64  `json:"generateTime"`
			Topic        string `json:"topic"`
		}
		if json.Unmarshal(body, &env) != nil {
			return
		}
		seen[env.MessageID]++
		if seen[env.MessageID] == 1 && env.GenerateTime > 0 {
			lat = append(lat, m.EnqueueTime.Sub(time.UnixMilli(env.GenerateTime)))
		}
		if len(res.Samples) < 4 && (len(res.Samples) == 0 || !strings.Contains(strings.Join(res.Samples, ""), where)) {
			text := string(body)
			if len(text) > 220 {
				text = text[:220] + "..."
			}
			res.Samples = append(res.Samples, fmt.Sprintf("%s: %s", where, text))
		}
	}
	for _, q := range demoQueues {
		for _, m := range emu.Messages(q) {
			add("queue "+q, m)
		}
	}
	for _, t := range demoTopics {
		for _, m := range emu.Published(t) {
			add("topic "+t, m)
		}
	}
	for i := 1; i <= total; i++ {
		n := seen[fmt.Sprintf("demo-%08d", i)]
		if n == 0 {
			res.Lost++
		} else {
			res.Duplicates += n - 1
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50 = lat[len(lat)/2]
		res.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res
}

func printDemo(out io.Writer, r Result, deadLettered int64) {
	rate := float64(r.Forwarded) / r.Elapsed.Seconds()
	if r.Requeued > 0 {
		fmt.Fprintf(out, "\nInterrupted: %d messages not yet in MNS are still held by the platform (simulator) for redelivery; they are not lost.\n", r.Requeued)
	}
	fmt.Fprintf(out, "\nSummary\n  sent          %d\n  forwarded     %d\n  lost          %d\n  duplicates    %d\n  dead-lettered %d\n"+
		"  rate          %.0f msg/s over %.1fs\n  latency       p50 %s  p99 %s (generateTime → stored in MNS)\n",
		r.Sent, r.Forwarded, r.Lost, r.Duplicates, deadLettered, rate, r.Elapsed.Seconds(), r.P50.Round(100*time.Microsecond), r.P99.Round(100*time.Microsecond))
	if len(r.Samples) > 0 {
		fmt.Fprintln(out, "\nA few messages as they arrived in MNS (JSON envelope):")
		for _, s := range r.Samples {
			fmt.Fprintln(out, "  "+s)
		}
	}
	if r.Lost == 0 {
		fmt.Fprintln(out, "\nOK: nothing lost.")
	} else {
		fmt.Fprintf(out, "\nFAILED: %d messages lost.\n", r.Lost)
	}
}

// demoConfig is the config the demo runs the bridge with: the defaults
// but for the simulator and emulator, the demo's routes and quiet logs, as
// YAML (writeConfig puts the header before it).
func demoConfig(o Options, simAddr, mnsEndpoint, caFile string) ([]byte, error) {
	c := config.Default()
	src := &c.Source
	src.Protocol, src.Endpoint, src.ClientID, src.ConsumerGroupID = o.Protocol, simAddr, "demo-bridge", demoGroup
	src.SignMethod, src.Connections = "hmacsha256", o.Connections
	src.Credentials = config.Credentials{AccessKeyID: demoAccessKeyID, AccessKeySecret: demoAccessKeySecret}
	src.TLS = config.TLS{CAFile: caFile, ServerName: "localhost"}
	if o.Protocol != "amqp" { // check refuses a block of the other protocol
		src.STOMP.Ack, src.STOMP.EncodeBase64, src.STOMP.HeartBeat = o.Ack, o.EncodeBase64, 10*time.Second
	}
	c.MNS.Endpoint, c.MNS.BodyEncoding = mnsEndpoint, "base64"
	c.Routes = []config.Route{
		{Match: "/as/mqtt/status/{productKey}/{deviceName}", Topic: "device-status", MessageTag: "{productKey}"},
		{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"},
		{Match: "/{productKey}/{deviceName}/thing/#", Queue: "thing-events"},
	}
	c.DefaultRoute.Queue = "iot-unrouted"
	c.Envelope = "json"
	c.Delivery.DeadLetter.File = "dead-letter.jsonl"
	// Each demo run has a fresh emulator: a journal from an earlier run in
	// the same -dir would suppress this run's messages.
	c.Delivery.Dedup.File = ""
	c.HTTP.Listen = ""
	c.Log.Level, c.Log.SummaryInterval = o.LogLevel, 0
	c.ShutdownTimeout = 10 * time.Second
	return config.Marshal(&c)
}
