package app

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
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
	return logFields(t, line, " msg=stopped ")
}

// logFields returns the figures of a log line (text format) after marker,
// by key; it fails the test when one is not an integer, unless its key is
// one of skip.
func logFields(t *testing.T, line, marker string, skip ...string) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for _, f := range strings.Fields(line[strings.Index(line, marker)+len(marker):]) {
		k, v, _ := strings.Cut(f, "=")
		if slices.Contains(skip, k) {
			continue
		}
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

// TestStatusAndStopLineAgree: the counts shown while the bridge runs
// (/status, status's messages line, the summary line, /metrics) have the
// stop line's names and meanings and add up as it does. A second start
// with an earlier run's backlog of 30 in the spool takes 10 duplicates of
// it, 5 messages for a missing queue (dead-lettered) and 20 new ones; then
// MNS fails and 5 more stay held. /status must add up at rest both times,
// the summary line and /metrics say the same, and the stop line must say
// what /status said last, left_in_spool being the spool's messages.
func TestStatusAndStopLineAgree(t *testing.T) {
	p, path := spoolPeers(t, time.Hour)
	p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	p.publishSeq("s", 30)
	b := runBridge(t, mustLoad(t, path), Options{Logger: slog.New(slog.DiscardHandler)})
	waitFor(t, "30 in the spool, MNS down", 2*time.Minute, func() bool {
		st := b.Status()
		return st.Spool != nil && st.Spool.Messages == 30 && b.pipeline.Stats().Retried >= 2
	})
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}

	p.emu.SetFaults(mnsemu.Faults{})
	c := mustLoad(t, path)
	c.Log.SummaryInterval = 50 * time.Millisecond
	logs := &testpeers.SyncBuffer{}
	b, base := runBridgeHTTP(t, c, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	waitFor(t, "the backlog forwarded", 2*time.Minute, func() bool { return b.pipeline.Stats().Forwarded == 30 })
	p.publishSeq("s", 10) // forwarded above: the de-dup window drops them
	for i := 0; i < 5; i++ {
		p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk2/dev%d/user/data", i), MessageID: fmt.Sprintf("d-%05d", i), Body: []byte(`{}`)})
	}
	p.publishSeq("n", 20)
	// atRest: the pipeline's counts are want (retried and the limit
	// aside) and the spool holds inSpool.
	atRest := func(want PipelineStatus, inSpool int64) func() bool {
		return func() bool {
			st := b.Status()
			got := st.Pipeline
			if got.InSpoolAtStart == nil || *got.InSpoolAtStart != *want.InSpoolAtStart || st.Spool == nil || st.Spool.Messages != inSpool {
				return false
			}
			got.InSpoolAtStart, got.Retried, got.MaxInFlight = want.InSpoolAtStart, 0, 0
			return got == want
		}
	}
	thirty := int64(30)
	waitFor(t, "65 settled: 50 forwarded, 5 dead-lettered, 10 duplicates, the spool empty", 2*time.Minute, atRest(PipelineStatus{
		InSpoolAtStart: &thirty, SourceReceived: 35, Received: 65, Forwarded: 50, DeadLettered: 5, Duplicates: 10}, 0))
	statusAddsUp(t, base)

	p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	p.publishSeq("h", 5)
	waitFor(t, "5 more held, MNS down", 2*time.Minute, atRest(PipelineStatus{
		InSpoolAtStart: &thirty, SourceReceived: 40, Received: 70, Forwarded: 50, DeadLettered: 5, Duplicates: 10, InFlight: 5}, 5))
	last := statusAddsUp(t, base)

	// The summary line and /metrics say the same.
	summary := func() map[string]int64 {
		lines := strings.Split(logs.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], " msg=summary ") {
				return logFields(t, lines[i], " msg=summary ", "forwarded_per_s", "spool_commit_ms")
			}
		}
		return nil
	}
	shown := statusFields(last)
	// The held state as /status showed it: the 5 taken from the platform,
	// written to the spool and taken from it by the pipeline. A line of the
	// moment between (in the spool, not yet received: received=65
	// in_flight=0) is a true line of an earlier state, not this one.
	waitFor(t, "a summary line of the held state", time.Minute, func() bool {
		s := summary()
		return s != nil && s["source_received"] == 40 && s["in_spool"] == 5 && s["received"] == 70 && s["in_flight"] == 5
	})
	s := summary()
	for k, v := range shown {
		if s[k] != v {
			t.Errorf("summary line %s=%d, /status %d: %v", k, s[k], v, s)
		}
	}
	// With the spool, a summary of an interval with commits says their
	// mean time (walk12: a slow SD card showed only in /metrics).
	if m := regexp.MustCompile(` msg=summary .* spool_commit_ms=(\d+\.\d)\b`).FindStringSubmatch(logs.String()); m == nil {
		t.Errorf("no summary line with spool_commit_ms=N.N:\n%s", logs.String())
	}
	of := metricsOf(t, b.Bridge)
	for name, want := range map[string]int64{"iot_mns_bridge_source_received_total": shown["source_received"],
		"iot_mns_bridge_received_total": shown["received"], "iot_mns_bridge_forwarded_total": shown["forwarded"],
		"iot_mns_bridge_duplicates_suppressed_total": shown["duplicates"], "iot_mns_bridge_duplicates_joined_total": shown["joined"],
		"iot_mns_bridge_in_flight": shown["in_flight"], "iot_mns_bridge_spool_messages": shown["in_spool"],
		"iot_mns_bridge_spool_messages_at_start": shown["in_spool_at_start"], "iot_mns_bridge_released_total": shown["released"],
		"iot_mns_bridge_stranded_total": shown["stranded"]} {
		if _, got := of(name); got != float64(want) {
			t.Errorf("/metrics %s = %v, /status %d", name, got, want)
		}
	}
	if got := series(t, b.Bridge, "iot_mns_bridge_dead_lettered_total", nil); got != float64(shown["dead_lettered"]) {
		t.Errorf("/metrics iot_mns_bridge_dead_lettered_total = %v, /status %d", got, shown["dead_lettered"])
	}

	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	f := stopLine(t, logs.String())
	addsUp(t, "second run", f)
	for k, v := range shown {
		want := k
		if k == "in_spool" {
			want = "left_in_spool"
		} else if k == "in_flight" {
			continue // held at the stop: left in the spool
		}
		if f[want] != v {
			t.Errorf("stop line %s=%d, /status %s=%d: %v", want, f[want], k, v, f)
		}
	}
}

// statusAddsUp reads /status over HTTP and checks that its counts add up
// as the stop line's do: in_spool_at_start + source_received = forwarded +
// dead_lettered + duplicates + joined + released + spool.messages, and
// received = forwarded + dead_lettered + duplicates + joined + released +
// stranded + in_flight (nothing went back into the spool while running).
func statusAddsUp(t *testing.T, base string) Status {
	t.Helper()
	code, body := httpGet(t, base+"/status")
	var st Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Pipeline.InSpoolAtStart == nil || st.Spool == nil {
		t.Fatalf("/status = %d %s, want the pipeline's counts with in_spool_at_start and the spool", code, body)
	}
	p := st.Pipeline
	settled := p.Forwarded + p.DeadLettered + p.Duplicates + p.Joined + p.Released
	if in, out := *p.InSpoolAtStart+p.SourceReceived, settled+st.Spool.Messages; in != out {
		t.Errorf("/status: in_spool_at_start + source_received = %d, forwarded + dead_lettered + duplicates + joined + released + spool.messages = %d: %s", in, out, body)
	}
	if out := settled + p.Stranded + p.InFlight; p.Received != out {
		t.Errorf("/status: received = %d, forwarded + dead_lettered + duplicates + joined + released + stranded + in_flight = %d: %s", p.Received, out, body)
	}
	return st
}

// statusFields are st's counts by the names of status's messages line.
func statusFields(st Status) map[string]int64 {
	counts := messageCounts(st)
	m := map[string]int64{}
	for i := 0; i < len(counts); i += 2 {
		m[counts[i].(string)] = counts[i+1].(int64)
	}
	return m
}

// TestReleasedAndStrandedHaveMetrics: what the stop line counts as
// released (given back to the platform, which sends it again: STOMP
// client-individual) and stranded (held and not sent again: STOMP ack
// auto) is on /metrics too, as released_total and stranded_total, with
// the stop line's figures, spool off. Before, they were in /status and
// the stop line only.
func TestReleasedAndStrandedHaveMetrics(t *testing.T) {
	for _, tc := range []struct{ ack, metric, count string }{
		{"client-individual", "iot_mns_bridge_released_total", "released"},
		{"auto", "iot_mns_bridge_stranded_total", "stranded"},
	} {
		t.Run(tc.ack, func(t *testing.T) {
			p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
			c := p.config()
			c.Source.STOMP.Ack = tc.ack
			// ack auto without the spool keeps the whole shutdown_timeout.
			c.Envelope, c.ShutdownTimeout, c.Spool.Dir = "json", time.Second, ""
			p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
			const n = 20
			p.publishSeq("s", n)
			logs := &testpeers.SyncBuffer{}
			b := runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			waitFor(t, "20 held, MNS down", 2*time.Minute, func() bool {
				return b.pipeline.Stats().InFlight == n && b.pipeline.Stats().Retried >= 2
			})
			if err := b.stop(); err != nil {
				t.Fatal(err)
			}
			f := stopLine(t, logs.String())
			addsUp(t, tc.ack, f)
			if f[tc.count] != n {
				t.Errorf("stop line %s=%d, want %d: %v", tc.count, f[tc.count], n, f)
			}
			of := metricsOf(t, b.Bridge)
			for name, count := range map[string]string{"iot_mns_bridge_released_total": "released", "iot_mns_bridge_stranded_total": "stranded"} {
				help, got := of(name)
				if got != float64(f[count]) {
					t.Errorf("/metrics %s = %v, stop line %s=%d", name, got, count, f[count])
				}
				if !strings.Contains(help, count+" of the stop line") {
					t.Errorf("%s's help %q does not name the stop line's %s", name, help, count)
				}
			}
		})
	}
}
