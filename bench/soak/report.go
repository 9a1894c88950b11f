package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Flatness thresholds: a series is flat when the mean of the last third of
// the samples is at most flatRatio times the mean of the first third.
// Faults make every series noisy, so the ratio of thirds is the verdict and
// the slope is reported beside it.
const flatRatio = 1.2

// trend compares the first and the last third of a series sampled at
// times ts (seconds).
type trend struct {
	FirstThird float64 `json:"first_third_mean"`
	LastThird  float64 `json:"last_third_mean"`
	Ratio      float64 `json:"ratio_last_to_first"`
	// SlopePerMin is the least-squares slope over all samples, per minute.
	SlopePerMin float64 `json:"slope_per_minute"`
	Min         float64 `json:"min"`
	Max         float64 `json:"max"`
	Flat        bool    `json:"flat"`
}

// trendOf returns the trend of vs sampled at ts (same length). With fewer
// than three samples the thirds are the first and last sample.
func trendOf(ts, vs []float64) trend {
	var tr trend
	n := len(vs)
	if n == 0 || len(ts) != n {
		return tr
	}
	third := max(n/3, 1)
	tr.FirstThird = mean(vs[:third])
	tr.LastThird = mean(vs[n-third:])
	if tr.FirstThird > 0 {
		tr.Ratio = tr.LastThird / tr.FirstThird
	}
	tr.Min, tr.Max = vs[0], vs[0]
	for _, v := range vs {
		tr.Min, tr.Max = min(tr.Min, v), max(tr.Max, v)
	}
	mt, mv := mean(ts), mean(vs)
	var num, den float64
	for i := range vs {
		num += (ts[i] - mt) * (vs[i] - mv)
		den += (ts[i] - mt) * (ts[i] - mt)
	}
	if den > 0 {
		tr.SlopePerMin = num / den * 60
	}
	tr.Flat = tr.LastThird <= flatRatio*tr.FirstThird
	return tr
}

func mean(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	var s float64
	for _, v := range vs {
		s += v
	}
	return s / float64(len(vs))
}

// faultResult is one injected fault and how the bridge came out of it.
type faultResult struct {
	Kind   string  `json:"kind"`
	What   string  `json:"what"`
	AtSec  float64 `json:"at_seconds"` // since the load started
	ForSec float64 `json:"for_seconds"`
	Note   string  `json:"note,omitempty"`
	// BacklogAtEnd is how many messages published before the end of the
	// fault were not in MNS at its end.
	BacklogAtEnd int `json:"backlog_at_end"`
	// RecoverySec is the time from the end of the fault until every
	// message published before that end was in MNS.
	RecoverySec float64 `json:"recovery_seconds"`
	Recovered   bool    `json:"recovered"`
}

// Report is the outcome of a soak run, written as JSON.
type Report struct {
	Command     string    `json:"command"`
	Started     string    `json:"started"`
	GoVersion   string    `json:"go_version"`
	CPUs        int       `json:"cpus"`
	LoadAvg     [2]string `json:"loadavg_start_end"`
	DurationSec float64   `json:"duration_seconds"`
	Rate        float64   `json:"rate_msgs_per_sec"`
	FaultEvery  float64   `json:"fault_every_seconds"`
	LatencyMs   float64   `json:"mns_latency_ms"`
	Ack         string    `json:"ack"`
	Spool       bool      `json:"spool"`
	Connections int       `json:"connections"`

	Sent          int     `json:"sent"`
	Arrived       int     `json:"arrived_unique"`
	Lost          int     `json:"lost"`
	LostFirst     []int   `json:"lost_first_seqs,omitempty"`
	Duplicates    int     `json:"duplicates"`
	Foreign       int     `json:"foreign"`
	DrainSec      float64 `json:"drain_seconds"` // end of the load → last message in MNS
	AchievedRate  float64 `json:"achieved_publish_rate"`
	P50Ms         float64 `json:"latency_p50_ms"`
	P99Ms         float64 `json:"latency_p99_ms"`
	P999Ms        float64 `json:"latency_p999_ms"`
	MaxMs         float64 `json:"latency_max_ms"`
	BridgeWarn    int     `json:"bridge_log_warn_lines"`
	BridgeErrors  int     `json:"bridge_log_error_lines"`
	BridgeExitErr string  `json:"bridge_exit_error,omitempty"`

	// Emulator and simulator counters over the run.
	MNSRequests         int64 `json:"mns_requests"`
	MNSThrottled        int64 `json:"mns_throttled"`
	MNSInjectedErrors   int64 `json:"mns_injected_errors"`
	MNSPartialFailures  int64 `json:"mns_partial_failures"`
	PlatformDelivered   int64 `json:"platform_delivered"`
	PlatformRedelivered int64 `json:"platform_redelivered"`
	PlatformExpired     int64 `json:"platform_ack_timeouts"`
	PlatformLogins      int64 `json:"platform_logins"`

	Faults     []faultResult `json:"faults"`
	Samples    []sample      `json:"samples"`
	AfterDrain *sample       `json:"sample_after_drain,omitempty"`
	SampleErrs int           `json:"sample_errors"`

	RSS        trend `json:"trend_vmrss_mb"`
	Heap       trend `json:"trend_heap_inuse_mb"`
	Goroutines trend `json:"trend_goroutines"`

	NoLoss         bool `json:"verdict_no_loss"`
	AllRecovered   bool `json:"verdict_all_recovered"`
	MemoryFlat     bool `json:"verdict_memory_flat"`
	GoroutinesFlat bool `json:"verdict_goroutines_flat"`
	Pass           bool `json:"verdict_pass"`
}

// analyse fills the trends and the verdicts from the samples and counts.
func (r *Report) analyse() {
	ts := make([]float64, len(r.Samples))
	rss := make([]float64, len(r.Samples))
	heap := make([]float64, len(r.Samples))
	gor := make([]float64, len(r.Samples))
	for i, s := range r.Samples {
		ts[i], rss[i], heap[i], gor[i] = s.T, s.VmRSSMB, s.HeapInuse, float64(s.Goroutines)
	}
	r.RSS, r.Heap, r.Goroutines = trendOf(ts, rss), trendOf(ts, heap), trendOf(ts, gor)
	r.NoLoss = r.Lost == 0 && r.Arrived == r.Sent
	r.AllRecovered = true
	for _, f := range r.Faults {
		r.AllRecovered = r.AllRecovered && f.Recovered
	}
	r.MemoryFlat = r.RSS.Flat && r.Heap.Flat
	r.GoroutinesFlat = r.Goroutines.Flat
	r.Pass = r.NoLoss && r.AllRecovered && r.MemoryFlat && r.GoroutinesFlat && len(r.Samples) >= 3 && r.BridgeExitErr == ""
}

// writeTable prints the report for a reader.
func (r *Report) writeTable(out io.Writer) {
	fmt.Fprintf(out, "\nsoak: %s, %.0f msgs/s for %s, a fault every %s, MNS latency %.0f ms, ack %s, spool %t, %d connection(s)\n",
		r.Started, r.Rate, secs(r.DurationSec), secs(r.FaultEvery), r.LatencyMs, r.Ack, r.Spool, r.Connections)
	fmt.Fprintf(out, "load average %s at the start, %s at the end; %d CPUs; %s\n\n", r.LoadAvg[0], r.LoadAvg[1], r.CPUs, r.GoVersion)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "sent\tarrived\tlost\tduplicates\tdrain s\tp50 ms\tp99 ms\tp99.9 ms\tmax ms\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.0f\t\n", r.Sent, r.Arrived, r.Lost, r.Duplicates, r.DrainSec, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	tw.Flush()

	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tat s\tfor s\tbacklog at end\trecovery s\tnote")
	for _, f := range r.Faults {
		rec := fmt.Sprintf("%.2f", f.RecoverySec)
		if !f.Recovered {
			rec = "NOT RECOVERED"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%d\t%s\t%s\n", f.Kind, f.AtSec, f.ForSec, f.BacklogAtEnd, rec, f.Note)
	}
	tw.Flush()

	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "series\tfirst third\tlast third\tratio\tslope /min\tmin\tmax\tflat")
	for _, x := range []struct {
		name string
		t    trend
	}{{"VmRSS MB", r.RSS}, {"heap in use MB", r.Heap}, {"goroutines", r.Goroutines}} {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.3f\t%+.2f\t%.1f\t%.1f\t%t\n", x.name, x.t.FirstThird, x.t.LastThird, x.t.Ratio, x.t.SlopePerMin, x.t.Min, x.t.Max, x.t.Flat)
	}
	tw.Flush()

	fmt.Fprintf(out, "\nMNS: %d requests, %d throttled, %d injected errors, %d partial failures; platform: %d delivered, %d redelivered, %d ACK timeouts, %d logins\n",
		r.MNSRequests, r.MNSThrottled, r.MNSInjectedErrors, r.MNSPartialFailures, r.PlatformDelivered, r.PlatformRedelivered, r.PlatformExpired, r.PlatformLogins)
	fmt.Fprintf(out, "bridge log: %d WARN, %d ERROR lines; %d samples (%d failed scrapes)\n", r.BridgeWarn, r.BridgeErrors, len(r.Samples), r.SampleErrs)
	if r.Lost > 0 {
		fmt.Fprintf(out, "LOST %d; first sequence numbers: %v\n", r.Lost, r.LostFirst)
	}
	var bad []string
	for _, v := range []struct {
		ok   bool
		what string
	}{{r.NoLoss, "messages lost"}, {r.AllRecovered, "a fault not recovered"}, {r.MemoryFlat, "memory grows"}, {r.GoroutinesFlat, "goroutines grow"},
		{len(r.Samples) >= 3, "fewer than 3 samples"}, {r.BridgeExitErr == "", "unclean bridge exit: " + r.BridgeExitErr}} {
		if !v.ok {
			bad = append(bad, v.what)
		}
	}
	if r.Pass {
		fmt.Fprintln(out, "verdict: PASS (nothing lost, every fault recovered, memory and goroutines flat)")
	} else {
		fmt.Fprintf(out, "verdict: FAIL (%s)\n", strings.Join(bad, "; "))
	}
}

// secs formats seconds as a duration.
func secs(s float64) string { return fmt.Sprint(durationOf(s)) }
