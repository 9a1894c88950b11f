package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// The throwaway AccessKey the simulator, the emulator and the bridge share.
const (
	benchAccessKeyID     = "LTAIbenchAccessKey"
	benchAccessKeySecret = "bench-secret-not-for-production"
	benchProductKey      = "a1BenchProduct"
	benchQueue           = "telemetry-" + benchProductKey
	benchDevices         = 100
)

// testbed is the IoT platform simulator and the MNS emulator on loopback,
// in the harness process, shared by every scenario. Each scenario uses its
// own consumer group, so leftovers of one never reach the next.
type testbed struct {
	dir    string // temp dir for configs, CA, spools, logs
	sim    *iotsim.Server
	emu    *mnsemu.Emulator
	mnsSrv *http.Server
	mnsURL string
	caFile string
}

// newTestbed starts the simulator and the emulator. Close stops them.
func newTestbed(dir string) (*testbed, error) {
	tb := &testbed{dir: dir}
	tb.emu = mnsemu.New(mnsemu.Config{
		AccessKeys: map[string]string{benchAccessKeyID: benchAccessKeySecret},
		Queues:     []string{benchQueue}, AutoCreate: true,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testbed: MNS emulator listen: %w", err)
	}
	tb.mnsSrv = &http.Server{Handler: tb.emu, ReadHeaderTimeout: 5 * time.Second}
	go tb.mnsSrv.Serve(ln)
	tb.mnsURL = "http://" + ln.Addr().String()

	// A deep group queue: the outage scenario leaves its backlog on the
	// platform side (as the real platform keeps undelivered messages).
	tb.sim, err = iotsim.Start(iotsim.Config{
		Secrets:   map[string]string{benchAccessKeyID: benchAccessKeySecret},
		QueueSize: 2_000_000,
		AMQPAddr:  "127.0.0.1:0", // the AMQP scenarios
	})
	if err != nil {
		tb.mnsSrv.Close()
		return nil, fmt.Errorf("testbed: IoT platform simulator: %w", err)
	}
	tb.caFile = filepath.Join(dir, "simulator-ca.pem")
	if err := os.WriteFile(tb.caFile, tb.sim.CACertPEM(), 0o600); err != nil {
		tb.Close()
		return nil, fmt.Errorf("testbed: write CA: %w", err)
	}
	return tb, nil
}

// Close stops the simulator and the emulator.
func (tb *testbed) Close() {
	tb.sim.Close()
	tb.mnsSrv.Close()
}

// resetMNS drops every stored message and sets the per-request latency.
func (tb *testbed) resetMNS(latency time.Duration) {
	tb.emu.Reset()
	tb.emu.SetFaults(mnsemu.Faults{Latency: latency})
}

// bridgeSpec is what varies between the bridge runs.
type bridgeSpec struct {
	// Protocol is the source protocol: "" or "stomp" (ack auto, the
	// default), or "amqp" (the simulator's AMQP 1.0 listener; settled
	// after MNS has the message).
	Protocol    string
	Connections int
	// Credit, when > 0, is source.amqp.credit (default 64).
	Credit int
	Spool  bool
	// Properties turns on mns.properties.platform and a MessageGroupId per
	// device: every message carries five user properties and a group id.
	Properties bool
	// MaxInFlightBytes, when not empty, is delivery.max_in_flight_bytes.
	MaxInFlightBytes string
}

// config returns the bridge's YAML for one run: everything at its default
// except the endpoints, the one route to benchQueue and quiet logs.
func (tb *testbed) config(runDir, group, httpAddr string, s bridgeSpec) ([]byte, error) {
	c := config.Default()
	src := &c.Source
	src.Protocol, src.Endpoint = "stomp", tb.sim.Addr()
	if s.Protocol == "amqp" {
		src.Protocol, src.Endpoint = "amqp", tb.sim.AMQPAddr()
	}
	src.ClientID, src.ConsumerGroupID, src.SignMethod, src.Connections = "bench-bridge", group, "hmacsha1", s.Connections
	src.Credentials = config.Credentials{AccessKeyID: benchAccessKeyID, AccessKeySecret: benchAccessKeySecret}
	src.TLS = config.TLS{CAFile: tb.caFile, ServerName: "localhost"}
	if s.Credit > 0 {
		src.AMQP.Credit = s.Credit
	}
	c.MNS.Endpoint = tb.mnsURL
	route := config.Route{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}
	if s.Properties {
		c.MNS.Properties.Platform = true
		route.MessageGroupID = "{deviceName}"
	}
	c.Routes = []config.Route{route}
	if bridgeReadGather >= 0 {
		c.Source.STOMP.ReadGather = bridgeReadGather
	}
	c.Delivery.MaxRequestsPerDestination = bridgeRequestsPerDestination
	c.Delivery.MaxRequests = max(c.Delivery.MaxRequests, 2*bridgeRequestsPerDestination)
	c.DefaultRoute = config.DefaultRoute{DeadLetter: true}
	if s.MaxInFlightBytes != "" {
		n, err := config.ParseSize(s.MaxInFlightBytes)
		if err != nil {
			return nil, fmt.Errorf("max_in_flight_bytes: %w", err)
		}
		c.Delivery.MaxInFlightBytes = n
	}
	c.Delivery.DeadLetter.File = filepath.Join(runDir, "dead-letter.jsonl")
	c.Spool.Dir = "" // written out: with ack auto the spool is on by default
	if s.Spool {
		c.Spool.Dir = filepath.Join(runDir, "spool")
	}
	c.HTTP.Listen = httpAddr
	c.Log.Level, c.Log.SummaryInterval = "warn", 0
	data, err := config.Marshal(&c)
	return append([]byte("# generated by go run ./bench\n"), data...), err
}

// startBridge writes the config for s into a fresh directory and starts the
// bridge as a child process (childbridge). When profile is not empty the
// child writes a CPU profile there.
func (tb *testbed) startBridge(name, group string, s bridgeSpec, profile string) (*childbridge.Proc, error) {
	runDir := filepath.Join(tb.dir, name)
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("start bridge %s: %w", name, err)
	}
	httpAddr, err := childbridge.FreeAddr()
	if err != nil {
		return nil, fmt.Errorf("start bridge %s: %w", name, err)
	}
	cfgPath := filepath.Join(runDir, "bridge.yaml")
	cfg, err := tb.config(runDir, group, httpAddr, s)
	if err != nil {
		return nil, fmt.Errorf("start bridge %s: config: %w", name, err)
	}
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("start bridge %s: %w", name, err)
	}
	var env []string
	if profile != "" {
		env = append(env, childbridge.CPUProfileEnv+"="+profile)
	}
	p, err := childbridge.Start(cfgPath, httpAddr, filepath.Join(runDir, "bridge.log"), env...)
	if err != nil {
		return nil, fmt.Errorf("start bridge %s: %w", name, err)
	}
	return p, nil
}
