package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestReplayOfARepeatedEntry: a dead-letter file may hold a message twice
// (dead-lettered by two bridges, or kept at two shutdowns). Replay sends it
// once, the second entry joins the first (or the de-dup window drops it),
// and that counts as done: the replay finishes and says so, instead of
// reporting an entry "not done" and asking to run it again.
func TestReplayOfARepeatedEntry(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1"}}, iotsim.Config{})
	c := p.config()
	c.Delivery.DeadLetter.File = "dl-again.jsonl"
	path := p.writeConfig(t, c)
	dlFile := filepath.Join(p.dir, "dl.jsonl")
	f, err := deadletter.OpenFile(dlFile)
	if err != nil {
		t.Fatal(err)
	}
	e := deadletter.NewEntry(bridge.Message{Topic: "/pk1/dev/user/x", MessageID: "twice", Body: []byte("b")}, "QueueNotExist", time.Now())
	if err := f.Write(e, e); err != nil {
		t.Fatal(err)
	}
	f.Close()
	code, out, errOut := runMain(t, context.Background(), "replay", "-config", path, dlFile)
	if code != ExitOK || !strings.Contains(out, "2 entries read") || !strings.Contains(out, "1 forwarded") || !strings.Contains(out, "1 repeated (sent once), 0 not done") {
		t.Errorf("replay of a file holding one message twice: exit %d\n%s%s", code, out, errOut)
	}
	if n := len(p.emu.Messages("telemetry-pk1")); n != 1 {
		t.Errorf("%d messages at MNS, want the message once", n)
	}
}
