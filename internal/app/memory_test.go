package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// The memory tests push 45 KB bodies at a bridge (a child process) while
// MNS answers 503: it must stop taking messages at
// delivery.max_in_flight_bytes, its peak RSS must stay within that bound plus
// memAllowance, and nothing may be lost once MNS is back.
const (
	memBody      = 45 << 10
	memBound     = 8 << 20 // delivery.max_in_flight_bytes of the tests
	memAllowance = 40 << 20
	memMessages  = 1200 // 54 MB of bodies: far past bound + allowance
	// memSpoolAllowance is added with the spool on: what waits for a
	// commit (at most 2 MiB) and bbolt's copy of it while it commits.
	memSpoolAllowance = 8 << 20
)

// memBodyOf is message i's body: 45 KB of JSON carrying its id.
func memBodyOf(id string) []byte {
	b := make([]byte, 0, memBody)
	b = append(b, `{"id":"`+id+`","pad":"`...)
	b = append(b, bytes.Repeat([]byte{'x'}, memBody-len(b)-2)...)
	return append(b, `"}`...)
}

// skipUnderRace skips a memory test in a -race build: the race detector
// multiplies memory use, so the figures would say nothing about the bridge.
// scripts/test.sh runs these tests once more without -race.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("built with -race, which multiplies memory use: scripts/test.sh runs this memory test without -race")
	}
}

// scrape returns the /metrics text of the bridge at addr, "" while it does
// not answer.
func scrape(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// procKB returns the given fields (kB) of the child's /proc/PID/status in
// bytes; ok is false once the process is gone.
func procKB(pid int, fields ...string) (vals []int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, false
	}
	vals = make([]int64, len(fields))
	for line := range strings.SplitSeq(string(b), "\n") {
		for i, f := range fields {
			if v, found := strings.CutPrefix(line, f+":"); found {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				vals[i] = kb << 10
			}
		}
	}
	return vals, true
}

// anonPeak samples the child's anonymous RSS (its heap, stacks, runtime:
// not the binary's text nor the spool's memory-mapped file, which are page
// cache the kernel can reclaim) every few milliseconds and returns a
// function that stops sampling and returns the largest value seen.
func anonPeak(pid int) func() int64 {
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, ok := procKB(pid, "RssAnon"); ok {
				peak = max(peak, v[0])
			}
			select {
			case <-tick.C:
			case <-stop:
				done <- peak
				return
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}

// memLimits sets the memory tests' byte bound and short retries, and
// serves /metrics on a free loopback address, which it returns.
func memLimits(t *testing.T, c *config.Config) string {
	t.Helper()
	c.Delivery.MaxInFlightBytes = memBound
	c.Delivery.Retry.InitialBackoff, c.Delivery.Retry.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	c.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t))
	return c.HTTP.Listen
}

// checkBoundedThroughOutage runs the bridge at path (its /metrics at
// httpAddr) while emu fails every request, checks that it stops at the byte
// bound, retries there, and keeps its peak RSS within bound + allowance,
// then lets MNS answer and waits until arrived() reaches n.
//
// The peak is of the anonymous RSS (heap, stacks, runtime), sampled: the
// file-backed rest is the binary's text (the test binary's, larger than the
// bridge's) and, with the spool on, its memory-mapped file, page cache the
// kernel reclaims. With the spool on, intake from the platform goes on
// into the spool (bounded on disk by spool.max_bytes) while the pipeline
// holds what its bound allows.
func checkBoundedThroughOutage(t *testing.T, emu *mnsemu.Emulator, path, httpAddr string, n int, allowance int64, arrived func() int) {
	t.Helper()
	emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	c := startChild(t, "run", "-config", path)
	stopSampling := anonPeak(c.Cmd.Process.Pid)
	var held, received, retried float64
	atBound := -1.0 // retried when the bound was first reached
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last scrape: held %.0f bytes, received %.0f, retried %.0f; bridge output:\n%s", held, received, retried, c.Out)
		}
	})
	waitFor(t, "the bridge to hold up to its byte bound and retry", 2*time.Minute, func() bool {
		text := scrape(httpAddr)
		held, received = metricValue(t, text, "iot_mns_bridge_held_bytes"), metricValue(t, text, "iot_mns_bridge_received_total")
		retried = metricValue(t, text, "iot_mns_bridge_retried_total")
		if held+memBody+1024 <= memBound {
			return false
		}
		if atBound < 0 {
			atBound = retried
		}
		// A failing destination is probed one request at a time: the
		// retries go on while the bridge holds at its bound.
		return retried >= atBound+2
	})
	vals, ok := procKB(c.Cmd.Process.Pid, "VmHWM")
	if !ok {
		t.Fatalf("the bridge is gone:\n%s", c.Out)
	}
	hwm, what := stopSampling(), "peak anonymous RSS"
	t.Logf("whole peak RSS (VmHWM, with the file-backed pages): %.1f MiB", float64(vals[0])/(1<<20))
	t.Logf("MNS down: took %.0f of %d messages, holds %.1f MiB, %s %.1f MiB (bound %d MiB + allowance %d MiB)",
		received, n, held/(1<<20), what, float64(hwm)/(1<<20), memBound>>20, allowance>>20)
	if held > memBound {
		t.Errorf("holds %.0f bytes, more than delivery.max_in_flight_bytes %d", held, memBound)
	}
	if received >= float64(n) {
		t.Errorf("the pipeline took all %d messages while MNS was down: intake did not stop", n)
	}
	if hwm > memBound+allowance {
		t.Errorf("%s %.1f MiB, more than the bound %d MiB + %d MiB", what, float64(hwm)/(1<<20), memBound>>20, allowance>>20)
	}
	emu.SetFaults(mnsemu.Faults{})
	waitFor(t, "every message after MNS is back", 3*time.Minute, func() bool { return arrived() >= n })
	if code := c.Term(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, c.Out)
	}
	if got := arrived(); got != n {
		t.Fatalf("%d of %d messages arrived", got, n)
	}
}

// TestSTOMPHeldMemoryBoundedThroughOutage: 45 KB bodies over STOMP (the
// simulator), MNS answering 503, both ack modes. The simulator lets a
// client-individual connection hold every message unacked, so only the
// bridge's bound stops it.
func TestSTOMPHeldMemoryBoundedThroughOutage(t *testing.T) {
	skipUnderRace(t)
	if testing.Short() {
		t.Skip("pushes 54 MB through a child bridge; skipped with -short")
	}
	for _, tc := range []struct {
		name, ack string
		spool     bool
	}{
		{"auto, spool off", "auto", false},
		{"auto, spool on", "auto", true},
		{"client-individual", "client-individual", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{AckTimeout: time.Minute, MaxUnacked: 2 * memMessages})
			cfg := p.config()
			cfg.Source.STOMP.Ack, cfg.Envelope, cfg.Spool.Dir = tc.ack, "json", ""
			if tc.spool {
				cfg.Spool.Dir = filepath.Join(p.dir, "spool")
			}
			httpAddr := memLimits(t, cfg)
			path := p.writeConfig(t, cfg)
			for i := range memMessages {
				id := fmt.Sprintf("mem-%05d", i)
				p.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%5), MessageID: id, Body: memBodyOf(id)})
			}
			arrived := func() int { d, _ := countIDs(t, p.emu, "telemetry-pk1", "mem", memMessages); return d }
			allowance := int64(memAllowance)
			if tc.spool {
				allowance += memSpoolAllowance
			}
			checkBoundedThroughOutage(t, p.emu, path, httpAddr, memMessages, allowance, arrived)
		})
	}
}

// TestRabbitMQAMQPHeldMemoryBoundedThroughOutage: the same over AMQP 1.0
// from RabbitMQ. The link credit (200) is larger than what the byte bound
// lets the pipeline hold (about 180 messages), so it is the bound that
// stops intake: the source stops issuing credit.
func TestRabbitMQAMQPHeldMemoryBoundedThroughOutage(t *testing.T) {
	skipUnderRace(t)
	b := testbroker.RabbitMQ(t)
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pkm"}}, iotsim.Config{})
	queue := "/queue/" + b.Unique(t)
	rc := rabbitConfig(t, b, p, "amqp", b.AMQPSAddr)
	rc.Source.AMQP.Address, rc.Source.AMQP.Credit = queue, 200
	httpAddr := memLimits(t, rc)
	path := writeRabbitConfig(t, p, rc)
	pub := b.NewAMQPPublisher(t, queue)
	ctx := context.Background()
	for i := range memMessages {
		id := fmt.Sprintf("mem-%05d", i)
		if err := pub.Send(ctx, fmt.Sprintf("/pkm/dev%d/user/data", i%5), id, time.Now().UnixMilli(), memBodyOf(id)); err != nil {
			t.Fatal(err)
		}
	}
	arrived := func() int { d, _ := countIDs(t, p.emu, "telemetry-pkm", "mem", memMessages); return d }
	checkBoundedThroughOutage(t, p.emu, path, httpAddr, memMessages, memAllowance, arrived)
}
