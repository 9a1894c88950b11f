package app

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// stopLine returns the figures of the "stopped" line in logs (text
// format), by key; it fails the test when there is not exactly one.
func stopLine(t *testing.T, logs string) map[string]int64 {
	t.Helper()
	var line string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, " msg=stopped ") {
			if line != "" {
				t.Fatalf("two stopped lines:\n%s", logs)
			}
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no stopped line:\n%s", logs)
	}
	got := map[string]int64{}
	for _, f := range strings.Fields(line[strings.Index(line, " msg=stopped ")+len(" msg=stopped "):]) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s in %q: %v", f, line, err)
		}
		got[k] = n
	}
	return got
}

// addsUp checks that the stopped line accounts for every message on its
// own: what the spool held at the start and what this run took from the
// platform is what it forwarded, dead-lettered, suppressed or joined, gave
// back upstream, left in the spool, wrote to the dead-letter file at
// shutdown or lost.
func addsUp(t *testing.T, run string, f map[string]int64) {
	t.Helper()
	in := f["in_spool_at_start"] + f["source_received"]
	out := f["forwarded"] + f["dead_lettered"] + f["duplicates"] + f["joined"] + f["released"] + f["left_in_spool"] +
		f["kept_in_dead_letter_file"] + f["lost"]
	if in != out {
		t.Errorf("%s: the stopped line does not add up: in_spool_at_start + source_received = %d, forwarded + dead_lettered + duplicates + joined + released + left_in_spool + kept_in_dead_letter_file + lost = %d: %v",
			run, in, out, f)
	}
}

// TestStopLineAddsUpWithAnEarlierBacklog: with the spool on, the stopped
// line counts what the spool held at the start apart from what this run
// took from the platform, and the figures add up. received counts what the
// pipeline took from the spool, an earlier run's backlog included (a walk
// said received=732 ... left_in_spool=733: nothing said where the 733 came
// from). Three runs: MNS down (200 spooled), MNS down (50 more), MNS back.
func TestStopLineAddsUpWithAnEarlierBacklog(t *testing.T) {
	p, path := spoolPeers(t, time.Hour)
	p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	run := func(name string, published int64, until func(b *testBridge) bool) map[string]int64 {
		t.Helper()
		logs := &testpeers.SyncBuffer{}
		b := runBridge(t, mustLoad(t, path), Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
		waitFor(t, name, 2*time.Minute, func() bool { return p.sim.Stats().Delivered >= published && until(b) })
		if err := b.stop(); err != nil {
			t.Fatalf("%s: Run: %v", name, err)
		}
		f := stopLine(t, logs.String())
		addsUp(t, name, f)
		return f
	}
	held := func(b *testBridge) bool { return b.pipeline.Stats().Retried >= 2 }

	p.publishSeq("s", 200)
	f := run("run 1, MNS down", 200, held)
	if f["in_spool_at_start"] != 0 || f["source_received"] != 200 || f["left_in_spool"] != 200 {
		t.Errorf("run 1: %v, want in_spool_at_start=0 source_received=200 left_in_spool=200", f)
	}

	p.publishSeq("b", 50)
	f = run("run 2, MNS down", 250, func(b *testBridge) bool {
		of := metricsOf(t, b.Bridge)
		_, spooled := of("iot_mns_bridge_spool_messages")
		return held(b) && spooled == 250
	})
	if f["in_spool_at_start"] != 200 || f["source_received"] != 50 || f["left_in_spool"] != 250 {
		t.Errorf("run 2: %v, want in_spool_at_start=200 source_received=50 left_in_spool=250", f)
	}

	p.emu.SetFaults(mnsemu.Faults{})
	f = run("run 3, MNS back", 0, func(b *testBridge) bool { return b.pipeline.Stats().Forwarded >= 250 })
	if f["in_spool_at_start"] != 250 || f["source_received"] != 0 || f["forwarded"] != 250 || f["left_in_spool"] != 0 {
		t.Errorf("run 3: %v, want in_spool_at_start=250 source_received=0 forwarded=250 left_in_spool=0", f)
	}
	if n := missing(t, p, 200); n != 0 {
		t.Errorf("%d of the first 200 missing at MNS", n)
	}
	if distinct, _ := countIDs(t, p.emu, "telemetry-pk1", "b", 50); distinct != 50 {
		t.Errorf("%d of the next 50 at MNS, want 50", distinct)
	}
}

// TestReceivedHelpSaysWhatItCountsWithTheSpool: with the spool on,
// received_total counts what enters the pipeline (from the spool), not
// what the source took; source_received_total counts that.
func TestReceivedHelpSaysWhatItCountsWithTheSpool(t *testing.T) {
	p, path := spoolPeers(t, time.Second)
	b := runBridge(t, mustLoad(t, path), Options{Logger: slog.New(slog.DiscardHandler)})
	p.publishSeq("h", 10)
	var of func(string) (string, float64)
	waitFor(t, "10 taken from the source", time.Minute, func() bool {
		of = metricsOf(t, b.Bridge)
		_, n := of("iot_mns_bridge_source_received_total")
		return n == 10
	})
	help, _ := of("iot_mns_bridge_received_total")
	if !strings.Contains(help, "with the spool on from the spool") || !strings.Contains(help, "source_received_total") {
		t.Errorf("received_total's help %q: with the spool on it counts what the pipeline takes from the spool", help)
	}
	if help, _ := of("iot_mns_bridge_source_received_total"); !strings.Contains(help, "platform") {
		t.Errorf("source_received_total's help %q does not say it counts what was taken from the platform", help)
	}
}
