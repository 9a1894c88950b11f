package app

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

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
	waitFor(t, "the journal holds the 100 ids", time.Minute, func() bool { return fileLines(journal) >= 100 })
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
