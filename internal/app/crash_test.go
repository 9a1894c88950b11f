package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestMain lets tests run the test binary as iot-mns-bridge itself (a child
// process they can kill -9).
func TestMain(m *testing.M) {
	testpeers.RunTests(m, MainOS)
}

// child is the bridge running as a separate process.
type child = testpeers.Child

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	return testpeers.StartChild(t, testpeers.AsMainEnv+"=1", args...)
}

// TestKill9WithSpoolLosesNothing kills the bridge with SIGKILL three times
// mid-stream (STOMP client-individual, spool on): the upstream ACK follows
// the spool's fsync, so every message arrives at least once, none lost.
func TestKill9WithSpoolLosesNothing(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Faults: mnsemu.Faults{Latency: 5 * time.Millisecond}},
		iotsim.Config{AckTimeout: 5 * time.Second})
	spoolDir := filepath.Join(p.dir, "spool")
	cfg := p.config()
	cfg.Envelope, cfg.Spool.Dir = "json", spoolDir
	path := p.writeConfig(t, cfg)

	const n = 6000
	p.publishSeq("k", n)
	for round := 1; round <= 3; round++ {
		c := startChild(t, "run", "-config", path)
		target := round * n / 4
		waitFor(t, fmt.Sprintf("%d messages before kill %d", target, round), 2*time.Minute, func() bool {
			return len(p.emu.Messages("telemetry-pk1")) >= target
		})
		c.Kill9(t)
	}
	c := startChild(t, "run", "-config", path)
	waitFor(t, "every message after the last restart", 3*time.Minute, func() bool {
		return len(arrivedIDs(t, p.emu, "telemetry-pk1")) >= n
	})
	if code := c.Term(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, c.Out)
	}
	distinct, dups := countIDs(t, p.emu, "telemetry-pk1", "k", n)
	lost := n - distinct
	t.Logf("sent %d, arrived %d distinct, %d duplicates, lost %d over 3 kills", n, distinct, dups, lost)
	if lost != 0 {
		t.Fatalf("%d messages lost", lost)
	}
}

// TestKill9KeepsTheDedupWindow: the bridge process is killed with SIGKILL
// after forwarding; the platform then redelivers the same messages to the
// new process, which suppresses them from the journalled window.
func TestKill9KeepsTheDedupWindow(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	journal := filepath.Join(t.TempDir(), "dedup-window.log")
	cfg := p.config()
	cfg.Delivery.Dedup.File = journal
	path := p.writeConfig(t, cfg)
	publish := func() {
		for i := 0; i < 100; i++ {
			p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev/user/x", MessageID: fmt.Sprintf("k9d-%03d", i), Body: []byte("x")})
		}
	}
	c := startChild(t, "run", "-config", path)
	publish()
	waitFor(t, "100 forwarded", time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) >= 100 })
	waitFor(t, "acks", time.Minute, func() bool { return p.sim.Stats().Acked >= 100 })
	waitFor(t, "the journal holds the 100 ids", time.Minute, func() bool {
		data, _ := os.ReadFile(journal)
		return strings.Count(string(data), "\n") >= 100
	})
	c.Kill9(t)

	c = startChild(t, "run", "-config", path)
	publish() // the platform redelivering what MNS already has
	waitFor(t, "the redeliveries settled", time.Minute, func() bool { return p.sim.Stats().Acked >= 200 })
	if code := c.Term(t); code != 0 {
		t.Errorf("exit %d:\n%s", code, c.Out)
	}
	if n := len(p.emu.Messages("telemetry-pk1")); n != 100 {
		t.Fatalf("%d messages at MNS after the redelivery, want 100: the window did not survive kill -9", n)
	}
}
