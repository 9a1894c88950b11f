package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

func TestDedupJournalSurvivesReopenAndStaysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup-window.log")
	log := slog.New(slog.DiscardHandler)
	d := bridge.NewDedup(10, time.Hour)
	j, n, err := openDedupJournal(path, d, 10, log)
	if err != nil || n != 0 {
		t.Fatalf("open: %d, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { j.run(ctx); close(done) }()
	now := time.Now()
	for i := 0; i < 35; i++ {
		d.Add(fmt.Sprintf("id \"%d\"\n", i), now) // ids with quotes and newlines round-trip
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(3 * journalFlush) // let it flush and compact
	data, _ := os.ReadFile(path)
	if lines := strings.Count(string(data), "\n"); lines > 2*10+journalSlack {
		t.Errorf("journal holds %d lines for a window of 10: not compacted", lines)
	}
	cancel()
	<-done
	j.Close()
	// A torn last line (a crash mid-write) is skipped.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	f.WriteString("17000000")
	f.Close()

	d2 := bridge.NewDedup(10, time.Hour)
	j2, n, err := openDedupJournal(path, d2, 10, log)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if n < 10 {
		t.Fatalf("loaded %d ids, want at least the window's 10", n)
	}
	for i := 25; i < 35; i++ {
		if !d2.Seen(fmt.Sprintf("id \"%d\"\n", i), now) {
			t.Errorf("id %d not remembered after reopening", i)
		}
	}
	if d2.Seen("id \"0\"\n", now) {
		t.Error("an id that left the window came back")
	}
}

// journalSlack allows the lines added between two compactions.
const journalSlack = 20

// TestKill9KeepsTheDedupWindow: the bridge process is killed with SIGKILL
// after forwarding; the platform then redelivers the same messages to the
// new process, which suppresses them from the journalled window.
func TestKill9KeepsTheDedupWindow(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	path := p.writeConfig(t, "    ack: client-individual", "")
	publish := func() {
		for i := 0; i < 100; i++ {
			p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev/user/x", MessageID: fmt.Sprintf("k9d-%03d", i), Body: []byte("x")})
		}
	}
	c := startChild(t, "run", "-config", path)
	publish()
	waitFor(t, "100 forwarded", time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) >= 100 })
	waitFor(t, "acks", time.Minute, func() bool { return p.sim.Stats().Acked >= 100 })
	time.Sleep(4 * journalFlush) // the journal is written within journalFlush
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
