package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/figures"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/shortrun"
)

// TestMain lets the test binary serve as the bridge child process, as the
// soak binary does.
func TestMain(m *testing.M) { childbridge.RunTests(m) }

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    map[string]float64
		wantErr bool
	}{
		{name: "plain and labelled, summed over labels",
			text: `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 87
go_memstats_heap_inuse_bytes 1.8726912e+07
iot_mns_bridge_source_reconnects_total{conn="0"} 2
iot_mns_bridge_source_reconnects_total{conn="1"} 3
iot_mns_bridge_forwarded_total 12345 1700000000000
go_gc_duration_seconds{quantile="0.5"} 0.001
`,
			want: map[string]float64{"go_goroutines": 87, "go_memstats_heap_inuse_bytes": 18726912,
				"iot_mns_bridge_source_reconnects_total": 5, "iot_mns_bridge_forwarded_total": 12345}},
		{name: "label value with a brace and a space",
			text: `iot_mns_bridge_received_total{reason="a} b"} 4` + "\n",
			want: map[string]float64{"iot_mns_bridge_received_total": 4}},
		{name: "prefix of a wanted name is not it",
			text: "go_goroutines_extra 9\n",
			want: map[string]float64{}},
		{name: "bad value", text: "go_goroutines abc\n", wantErr: true},
		{name: "no value", text: "go_goroutines\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetrics(strings.NewReader(tt.text), metricNames)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTrendOf(t *testing.T) {
	tests := []struct {
		name      string
		vs        []float64
		ratio     float64
		slope     float64 // per minute; samples are 10 s apart
		wantFlat  bool
		wantFirst float64
		wantLast  float64
	}{
		{name: "constant", vs: []float64{40, 40, 40, 40, 40, 40}, ratio: 1, slope: 0, wantFlat: true, wantFirst: 40, wantLast: 40},
		{name: "noise, no growth", vs: []float64{40, 50, 40, 50, 40, 50, 40, 50, 45}, ratio: (40 + 50 + 45) / 3.0 / ((40 + 50 + 40) / 3.0),
			slope: 2, wantFlat: true, wantFirst: 130.0 / 3, wantLast: 45},
		{name: "linear growth 1 per sample", vs: []float64{10, 11, 12, 13, 14, 15}, ratio: 14.5 / 10.5, slope: 6, wantFlat: false, wantFirst: 10.5, wantLast: 14.5},
		{name: "doubles", vs: []float64{10, 10, 10, 20, 20, 20}, ratio: 2, slope: 450.0 / 1750 * 60, wantFlat: false, wantFirst: 10, wantLast: 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := make([]float64, len(tt.vs))
			for i := range ts {
				ts[i] = float64(10 * (i + 1))
			}
			got := trendOf(ts, tt.vs)
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
			if !near(got.Ratio, tt.ratio) || !near(got.FirstThird, tt.wantFirst) || !near(got.LastThird, tt.wantLast) {
				t.Errorf("thirds %v → %v ratio %v, want %v → %v ratio %v", got.FirstThird, got.LastThird, got.Ratio, tt.wantFirst, tt.wantLast, tt.ratio)
			}
			if !near(got.SlopePerMin, tt.slope) {
				t.Errorf("slope %v /min, want %v", got.SlopePerMin, tt.slope)
			}
			if got.Flat != tt.wantFlat {
				t.Errorf("flat %t, want %t", got.Flat, tt.wantFlat)
			}
		})
	}
	if got := trendOf(nil, nil); got != (trend{}) {
		t.Errorf("empty series: %+v, want zero", got)
	}
}

func TestSchedule(t *testing.T) {
	tests := []struct {
		name         string
		total, every time.Duration
		want         []plannedFault
	}{
		{name: "10 minutes, every minute: nine faults cycling, nominal lengths", total: 10 * time.Minute, every: time.Minute,
			want: []plannedFault{
				{faultServerClose, 1 * time.Minute, 0},
				{faultMNS503, 2 * time.Minute, 15 * time.Second},
				{faultMNS429, 3 * time.Minute, 30 * time.Second},
				{faultBlackhole, 4 * time.Minute, 10 * time.Second},
				{faultPartial, 5 * time.Minute, 30 * time.Second},
				{faultReset, 6 * time.Minute, 0},
				{faultServerClose, 7 * time.Minute, 0},
				{faultMNS503, 8 * time.Minute, 15 * time.Second},
				{faultMNS429, 9 * time.Minute, 30 * time.Second},
			}},
		{name: "short interval caps each fault at half of it", total: 9 * time.Second, every: 2 * time.Second,
			want: []plannedFault{
				{faultServerClose, 2 * time.Second, 0},
				{faultMNS503, 4 * time.Second, time.Second},
				{faultMNS429, 6 * time.Second, time.Second},
			}},
		{name: "a fault that would outlast the load is left out", total: 3*time.Minute + 20*time.Second, every: time.Minute,
			want: []plannedFault{
				{faultServerClose, 1 * time.Minute, 0},
				{faultMNS503, 2 * time.Minute, 15 * time.Second},
			}},
		{name: "no faults", total: time.Minute, every: 0, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := schedule(tt.total, tt.every)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d faults %v, want %d %v", len(got), got, len(tt.want), tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("fault %d: %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestBodyRoundTrip(t *testing.T) {
	for _, seq := range []int{0, 7, 2_999_999} {
		b := makeBody(seq, "dev-7")
		if len(b) != bodySize {
			t.Errorf("seq %d: body %d bytes, want %d", seq, len(b), bodySize)
		}
		if !json.Valid(b) {
			t.Errorf("seq %d: body is not JSON: %s", seq, b)
		}
		if got, ok := parseSeq(b); !ok || got != seq {
			t.Errorf("parseSeq = %d, %t; want %d", got, ok, seq)
		}
	}
	if _, ok := parseSeq([]byte(`{"other":1}`)); ok {
		t.Error("parseSeq accepted a body without seq")
	}
}

// TestTracker feeds a tracker by hand: five messages a second apart,
// stored late, twice, never, and as foreign bodies.
func TestTracker(t *testing.T) {
	start := time.Unix(1000, 0)
	at := func(s float64) time.Time { return start.Add(durationOf(s)) }
	tr := newTracker(5, start)
	for i := range 5 {
		tr.markPublished(i, at(float64(i+1))) // seq i at i+1 s
	}
	enc := func(seq int) string { return base64.StdEncoding.EncodeToString(makeBody(seq, "dev-0")) }
	tr.markStored(enc(0), at(1.5))
	tr.markStored(enc(1), at(6))                         // 4 s late
	tr.markStored(enc(1), at(7))                         // duplicate
	tr.markStored(string(makeBody(2, "dev-0")), at(3.5)) // body_encoding raw
	tr.markStored(enc(4), at(5.5))
	tr.markStored("not base64 and not ours", at(5))
	tr.markStored(enc(99), at(5)) // outside the run
	// seq 3 is never stored.

	pub, uniq, dups := tr.counts()
	if pub != 5 || uniq != 4 || dups != 1 {
		t.Errorf("counts: published %d, unique %d, duplicates %d; want 5, 4, 1", pub, uniq, dups)
	}
	if tr.foreign != 2 {
		t.Errorf("foreign %d, want 2", tr.foreign)
	}
	if n, seqs := tr.lost(10); n != 1 || len(seqs) != 1 || seqs[0] != 3 {
		t.Errorf("lost %d %v, want 1 [3]", n, seqs)
	}
	off := func(s float64) time.Duration { return tr.since(at(s)) }
	// At 3 s: seqs 0 and 1 published before; 0 stored by then.
	if p, s := tr.backlogAt(off(3)); p != 2 || s != 1 {
		t.Errorf("backlogAt(3s) = %d published, %d stored; want 2, 1", p, s)
	}
	// After 3 s the last of seqs 0, 1 (seq 1) is stored at 6 s: 3 s.
	if d, ok := tr.recovery(off(3)); !ok || d != 3*time.Second {
		t.Errorf("recovery(3s) = %s, %t; want 3s, true", d, ok)
	}
	// At 2.5 s only seq 0 and 1 count; still 6 s − 2.5 s.
	if d, ok := tr.recovery(off(2.5)); !ok || d != 3500*time.Millisecond {
		t.Errorf("recovery(2.5s) = %s, %t; want 3.5s, true", d, ok)
	}
	// Everything before 1.8 s (seq 0) was stored by then: no recovery time.
	if d, ok := tr.recovery(off(1.8)); !ok || d != 0 {
		t.Errorf("recovery(1.8s) = %s, %t; want 0, true", d, ok)
	}
	// Seq 3 (published at 4 s) is never stored.
	if _, ok := tr.recovery(off(10)); ok {
		t.Error("recovery(10s) reported recovered with seq 3 missing")
	}
	lat := tr.latencies()
	want := []time.Duration{500 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond, 4 * time.Second}
	if len(lat) != len(want) {
		t.Fatalf("latencies %v, want %v", lat, want)
	}
	for i := range want {
		if lat[i] != want[i] {
			t.Errorf("latencies %v, want %v", lat, want)
			break
		}
	}
	if p := figures.Percentile(lat, 0.99); p != 4000 {
		t.Errorf("p99 %v ms, want 4000", p)
	}
}

// TestSoakShort runs the whole soak for a few seconds per fault: the bridge
// as a child process, every fault kind once, and checks that every message
// arrived, every fault was injected and recovered from and the report was
// written. It asserts no timing and no memory trend (too short for one).
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the bridge for about 20 s; skipped with -short")
	}
	rep, back, b, out := shortrun.Run(t, 3*time.Minute, func(ctx context.Context, jsonPath string, out io.Writer) (*Report, error) {
		return run(ctx, options{Duration: 14 * time.Second, Rate: 1000, FaultEvery: 2 * time.Second,
			SampleEvery: 2 * time.Second, Latency: 5 * time.Millisecond, DrainTimeout: time.Minute,
			Bridge: bridgeSpec{Ack: "client-individual", Connections: 2}, JSON: jsonPath}, out)
	})
	if rep.Sent != 14_000 || rep.Lost != 0 || rep.Arrived != rep.Sent || !rep.NoLoss {
		t.Errorf("sent %d, arrived %d, lost %d; want 14000 sent, all arrived", rep.Sent, rep.Arrived, rep.Lost)
	}
	if len(rep.Faults) != int(numFaults) {
		t.Fatalf("%d faults injected, want %d (one of each kind)", len(rep.Faults), numFaults)
	}
	for i, f := range rep.Faults {
		if f.Kind != faultKind(i).String() || !f.Recovered {
			t.Errorf("fault %d: %s recovered %t; want %s recovered", i, f.Kind, f.Recovered, faultKind(i))
		}
	}
	if len(rep.Samples) < 3 {
		t.Errorf("%d samples, want at least 3", len(rep.Samples))
	}
	for _, s := range rep.Samples {
		if s.VmRSSMB <= 0 || s.HeapInuse <= 0 || s.Goroutines <= 0 {
			t.Errorf("sample at %.0fs: rss %.1f MB, heap %.1f MB, %d goroutines; want all measured", s.T, s.VmRSSMB, s.HeapInuse, s.Goroutines)
		}
	}
	if rep.MNSInjectedErrors == 0 || rep.MNSPartialFailures == 0 || rep.PlatformLogins < 4 {
		t.Errorf("faults left no trace: %d injected MNS errors, %d partial failures, %d logins", rep.MNSInjectedErrors, rep.MNSPartialFailures, rep.PlatformLogins)
	}
	if back.Sent != rep.Sent || len(back.Faults) != len(rep.Faults) {
		t.Errorf("JSON report: sent %d, %d faults", back.Sent, len(back.Faults))
	}
	if strings.Contains(out, soakAccessKeySecret) || strings.Contains(string(b), soakAccessKeySecret) {
		t.Error("the AccessKey secret appears in the output")
	}
}
