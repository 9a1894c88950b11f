package app

import (
	"fmt"
	"path/filepath"
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
			return p.emu.Depth("telemetry-pk1") >= target
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
