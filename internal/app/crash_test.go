package app

import (
	"encoding/json"
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

// arrivedIDs returns how often each message id is stored in queue (bodies
// are JSON envelopes).
func arrivedIDs(t *testing.T, emu *mnsemu.Emulator, queue string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, m := range emu.Messages(queue) {
		body, err := m.DecodedBody()
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("envelope: %v: %q", err, body)
		}
		ids[env.MessageID]++
	}
	return ids
}

// TestKill9WithSpoolLosesNothing kills the bridge with SIGKILL three times
// mid-stream (STOMP client-individual, spool on): the upstream ACK follows
// the spool's fsync, so every message arrives at least once, none lost.
func TestKill9WithSpoolLosesNothing(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Latency: 5 * time.Millisecond},
		iotsim.Config{AckTimeout: 5 * time.Second})
	spoolDir := filepath.Join(p.dir, "spool")
	cfg := p.config()
	cfg.Envelope, cfg.Spool.Dir = "json", spoolDir
	path := p.writeConfig(t, cfg)

	const n = 6000
	for i := 0; i < n; i++ {
		p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%5), MessageID: fmt.Sprintf("k-%05d", i),
			Body: []byte(fmt.Sprintf(`{"seq":%d}`, i))})
	}
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
	ids := arrivedIDs(t, p.emu, "telemetry-pk1")
	lost, dups := 0, 0
	for i := 0; i < n; i++ {
		k := ids[fmt.Sprintf("k-%05d", i)]
		if k == 0 {
			lost++
		}
		if k > 1 {
			dups += k - 1
		}
	}
	t.Logf("sent %d, arrived %d distinct, %d duplicates, lost %d over 3 kills", n, len(ids), dups, lost)
	if lost != 0 {
		t.Fatalf("%d messages lost", lost)
	}
}
