package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// peers is a running IoT platform simulator and MNS emulator on loopback.
type peers struct {
	sim    *iotsim.Server
	emu    *mnsemu.Emulator
	mnsURL string
	caFile string
	dir    string
}

const (
	testAK     = "LTAItestAccessKey"
	testSecret = "test-secret-0123456789"
	testToken  = "STS.testSecurityToken"
)

func startPeers(t testing.TB, emuCfg mnsemu.Config, simCfg iotsim.Config) *peers {
	t.Helper()
	if emuCfg.AccessKeys == nil {
		emuCfg.AccessKeys = map[string]string{testAK: testSecret}
	}
	if simCfg.Secrets == nil {
		simCfg.Secrets = map[string]string{testAK: testSecret}
	}
	emu, addr := testpeers.StartMNS(t, emuCfg)
	dir := t.TempDir()
	sim, ca := testpeers.StartIoT(t, simCfg, dir)
	return &peers{sim: sim, emu: emu, mnsURL: "http://" + addr, caFile: ca, dir: dir}
}

// config returns the bridge config for the peers, built from
// config.Default(): STOMP with client-individual acks, telemetry routed to
// telemetry-{productKey}, the rest to "unrouted", no HTTP listener, log
// level warn. Tests change what they need and write it with writeConfig.
func (p *peers) config() *config.Config {
	c := configtest.New()
	c.Source.Endpoint = p.sim.Addr()
	c.Source.ClientID = "e2e-bridge"
	c.Source.ConsumerGroupID = "g1"
	c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
	c.Source.TLS = config.TLS{CAFile: p.caFile, ServerName: "localhost"}
	c.Source.STOMP.Ack = "client-individual"
	c.MNS.Endpoint = p.mnsURL
	c.Routes = []config.Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	c.DefaultRoute.Queue = "unrouted"
	c.HTTP.Listen = ""
	c.Log.Level = "warn"
	return c
}

// amqpConfig is the peers' config over the simulator's AMQP listener.
func (p *peers) amqpConfig() *config.Config {
	c := p.config()
	c.Source.Protocol, c.Source.Endpoint = "amqp", p.sim.AMQPAddr()
	c.Source.STOMP = config.Default().Source.STOMP
	return c
}

// writeConfig writes c as bridge.yaml in the peers' directory and returns
// its path.
func (p *peers) writeConfig(t testing.TB, c *config.Config) string {
	t.Helper()
	return configtest.Write(t, p.dir, "bridge.yaml", c)
}

// publishSeq publishes n messages with the ids prefix-00000 ..
// prefix-(n-1), on /pk1/dev0..4/user/data (routed to telemetry-pk1), each
// with the body {"seq":i}. countIDs finds them at MNS.
func (p *peers) publishSeq(prefix string, n int) {
	for i := 0; i < n; i++ {
		p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%5), MessageID: fmt.Sprintf("%s-%05d", prefix, i),
			Body: []byte(fmt.Sprintf(`{"seq":%d}`, i))})
	}
}

// publishPlain publishes n messages without a message id on
// /pk1/dev<i>/user/x (routed to telemetry-pk1), each with the body "hello".
func (p *peers) publishPlain(n int) {
	for i := 0; i < n; i++ {
		p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/x", i), Body: []byte("hello")})
	}
}

// arrivedIDs returns how often each message id is stored in queue (bodies
// are JSON envelopes).
func arrivedIDs(t *testing.T, emu *mnsemu.Emulator, queue string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for body, n := range testpeers.Bodies(t, emu, queue) {
		var env struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("envelope: %v: %q", err, body)
		}
		ids[env.MessageID] += n
	}
	return ids
}

// countIDs counts the messages with the ids prefix-00000 .. prefix-(n-1) in
// queue: how many of them arrived, and how many times more than once.
func countIDs(t *testing.T, emu *mnsemu.Emulator, queue, prefix string, n int) (distinct, dups int) {
	t.Helper()
	ids := arrivedIDs(t, emu, queue)
	for i := 0; i < n; i++ {
		if k := ids[fmt.Sprintf("%s-%05d", prefix, i)]; k > 0 {
			distinct++
			dups += k - 1
		}
	}
	return distinct, dups
}

// fileLines returns the number of lines in the file at path (a dead-letter
// file's entries, a journal's ids); 0 while it cannot be read.
func fileLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte("\n"))
}

// waitFor polls cond until it holds or the (generous, failure-only) deadline
// passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, d, cond)
}

// waitForEach waits until count reaches n. limit is a hang guard between
// two steps (count growing), not for all n: under -race on a loaded
// machine the whole run takes minutes, and a stall still fails.
func waitForEach(t *testing.T, what string, n int, limit time.Duration, count func() int) {
	t.Helper()
	for got, prev := 0, -1; got < n; prev = got {
		waitFor(t, fmt.Sprintf("more than %d of %d %s", got, n, what), limit, func() bool {
			got = count()
			return got > prev && got > 0 || got >= n
		})
	}
}

// TestPipelineFullNamesTheBound: with MNS failing every request, the
// pipeline fills up to delivery.max_in_flight and says so naming the key:
// the pipeline speaks of its own fields and the wiring gives it the keys
// (config.PipelineNames).
func TestPipelineFullNamesTheBound(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Faults: mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503}}, iotsim.Config{})
	c := p.config()
	c.Delivery.MaxInFlight = 2
	c.ShutdownTimeout = time.Second // MNS never takes the messages held
	logs := &testpeers.SyncBuffer{}
	runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: NewLogger(config.Log{Level: "info"}, logs)})
	p.publishSeq("full", 5)
	waitFor(t, "the pipeline full, naming delivery.max_in_flight", time.Minute, func() bool {
		return strings.Contains(logs.String(), "the pipeline holds as much as it may") && strings.Contains(logs.String(), "bound=delivery.max_in_flight ")
	})
}

// TestRunForwards10000BinaryMessagesByteForByte is issue 4's "done when":
// "iot-mns-bridge run" with a config pointing at the simulator and the
// emulator forwards 10,000 messages, and every one is at the emulator with
// an identical body. Bodies are random binary, so this also proves the
// encode=base64 path (platform → bridge) and base64 MNS bodies.
func TestRunForwards10000BinaryMessagesByteForByte(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Faults: mnsemu.Faults{Latency: 2 * time.Millisecond}}, iotsim.Config{})
	cfg := p.config()
	cfg.Source.STOMP.EncodeBase64 = true
	path := p.writeConfig(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		exited <- Main(ctx, []string{"run", "-config", path}, Stdio{Out: &bytes.Buffer{}, Err: &stderr})
	}()

	const n = 10000
	rng := rand.New(rand.NewPCG(1, 2))
	want := make(map[string][]byte, n)
	for i := 0; i < n; i++ {
		body := make([]byte, 16+rng.IntN(600))
		for j := range body {
			body[j] = byte(rng.UintN(256))
		}
		id := fmt.Sprintf("msg-%05d", i)
		want[id] = body
		p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%7), MessageID: id, Body: body})
	}
	waitForEach(t, "messages at the emulator", n, 2*time.Minute, func() int { return p.emu.Depth("telemetry-pk1") })
	cancel()
	select {
	case code := <-exited:
		if code != ExitOK {
			t.Fatalf("run exited %d: %s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not exit after cancel")
	}

	// Bodies are random, so they identify their messages.
	byBody := make(map[string]string, n)
	for id, w := range want {
		byBody[string(w)] = id
	}
	got := map[string]bool{}
	for _, m := range p.emu.Messages("telemetry-pk1") {
		body, err := m.DecodedBody()
		if err != nil {
			t.Fatalf("stored body is not base64: %v", err)
		}
		if id, ok := byBody[string(body)]; ok {
			got[id] = true
		}
	}
	if len(got) != n {
		t.Fatalf("%d of %d bodies arrived identical", len(got), n)
	}
	if st := p.sim.Stats(); st.Acked < n || st.MaxConnsPerClientID > 1 {
		t.Errorf("simulator stats %+v: want every message acked and one connection per client id", st)
	}
	if strings.Contains(stderr.String(), testSecret) {
		t.Error("the log contains the AccessKey secret")
	}
}

// TestRedeliveriesAreSuppressedWithinTheWindow: the platform redelivers a
// message (same messageId) that MNS already has; the bridge settles it
// without sending it again and counts it.
func TestRedeliveriesAreSuppressedWithinTheWindow(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	path := p.writeConfig(t, p.config())
	b := runBridge(t, mustLoad(t, path), Options{})
	publish := func() {
		for i := 0; i < 100; i++ {
			p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev/user/x", MessageID: fmt.Sprintf("dup-%03d", i), Body: []byte("x")})
		}
	}
	publish()
	waitFor(t, "first copies forwarded", time.Minute, func() bool { return b.Stats().Forwarded == 100 })
	publish()
	waitFor(t, "redeliveries suppressed", time.Minute, func() bool { return b.Stats().Duplicates == 100 })
	if n := len(p.emu.Messages("telemetry-pk1")); n != 100 {
		t.Fatalf("%d messages at MNS, want 100", n)
	}
	// The duplicates are counted before their ACK frames reach the simulator:
	// wait for every delivery to be settled there.
	waitFor(t, "all 200 deliveries acked at the simulator", time.Minute, func() bool { return p.sim.Stats().Acked == 200 })
	if st := p.sim.Stats(); st.Acked != 200 {
		t.Fatalf("simulator acked %d, want all 200 deliveries settled", st.Acked)
	}
}
