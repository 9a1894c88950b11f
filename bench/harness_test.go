package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/shortrun"
)

// TestMain lets the test binary serve as the bridge child process, as the
// harness binary does.
func TestMain(m *testing.M) { childbridge.RunTests(m) }

// tinySizes keeps TestHarnessShort to a few seconds of load.
var tinySizes = sizes{Messages: 2000, Rate: 1000, LatencyFor: time.Second,
	OutageBefore: 500 * time.Millisecond, Outage: time.Second, OutageAfter: 500 * time.Millisecond, ReferenceFor: 500 * time.Millisecond,
	BigRate: 100, SmallFor: time.Second, IdleFor: time.Second}

// TestHarnessShort runs every scenario in a tiny configuration and checks
// that each produced its result with every message accounted for. It
// asserts no timing.
func TestHarnessShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole harness (about 30 s); skipped with -short")
	}
	rep, back, _, out := shortrun.Run(t, 5*time.Minute, func(ctx context.Context, jsonPath string, out io.Writer) (*Report, error) {
		return run(ctx, options{Scenarios: scenarioNames, Latency: 5 * time.Millisecond, Sizes: tinySizes, JSON: jsonPath}, out)
	})
	want := []string{"ceiling-source", "ceiling-mns", "reference", "throughput", "latency", "outage",
		"throughput-spool", "latency-spool", "outage-spool", "ceiling-source-4conn", "throughput-4conn",
		"throughput-noprops", "throughput-props", "throughput-amqp", "latency-amqp", "outage-amqp", "throughput-amqp-credit1000", "latency-amqp-5conn",
		"outage-45k", "outage-45k-count-only"}
	for _, p := range []string{"small-stomp", "small-spool", "small-amqp"} {
		want = append(want, p+"-10", p+"-100", p+"-500", p+"-max")
		if r := rep.result(p + "-idle"); r == nil || r.IdleSeconds <= 0 || r.PeakRSSMB <= 0 {
			t.Errorf("%s-idle: %+v, want an idle run with its figures", p, r)
		}
	}
	for _, name := range want {
		r := rep.result(name)
		if r == nil {
			t.Errorf("no result %q", name)
			continue
		}
		if r.MsgsPerSec <= 0 || r.Messages <= 0 {
			t.Errorf("%s: %d messages at %.0f msgs/s, want both positive", name, r.Messages, r.MsgsPerSec)
		}
		if r.Lost != 0 {
			t.Errorf("%s: lost %d", name, r.Lost)
		}
		isBridge := !strings.HasPrefix(name, "ceiling") && name != "reference"
		if isBridge && (r.PeakRSSMB <= 0 || r.BridgeCPU <= 0) {
			t.Errorf("%s: bridge RSS %.1f MB, CPU %.2f s; want both measured", name, r.PeakRSSMB, r.BridgeCPU)
		}
		if strings.HasPrefix(name, "latency") && !(r.P50Ms > 0 && r.P50Ms <= r.P99Ms && r.P99Ms <= r.P999Ms) {
			t.Errorf("%s: percentiles p50 %.2f p99 %.2f p99.9 %.2f, want 0 < p50 <= p99 <= p99.9", name, r.P50Ms, r.P99Ms, r.P999Ms)
		}
	}
	if o := rep.result("outage"); o != nil && o.DrainSec <= 0 {
		t.Errorf("outage: drain %.2f s, want > 0 (messages published during the outage reach MNS after it)", o.DrainSec)
	}
	if len(rep.Targets) == 0 || len(rep.Ratios) == 0 {
		t.Errorf("report has %d targets and %d ratios, want some", len(rep.Targets), len(rep.Ratios))
	}
	if !strings.Contains(out, "Targets:") {
		t.Errorf("table output lacks the targets:\n%s", out)
	}
	if len(back.Results) != len(rep.Results) || back.Machine.Cores <= 0 || back.Date == "" {
		t.Errorf("JSON report: %d results, %d cores, date %q", len(back.Results), back.Machine.Cores, back.Date)
	}
}

func TestBodyRoundTrip(t *testing.T) {
	for _, seq := range []int{0, 7, 199_999, 1 << 30} {
		ts := time.Now().UnixNano()
		b := makeBody(seq, ts)
		if len(b) != bodySize {
			t.Errorf("seq %d: body is %d bytes, want %d", seq, len(b), bodySize)
		}
		if !json.Valid(b) {
			t.Errorf("seq %d: body is not JSON: %s", seq, b)
		}
		gotSeq, gotTs, ok := parseBody(b)
		if !ok || gotSeq != seq || gotTs != ts {
			t.Errorf("parseBody(makeBody(%d, %d)) = %d, %d, %v", seq, ts, gotSeq, gotTs, ok)
		}
	}
	if _, _, ok := parseBody([]byte(`{"other":1}`)); ok {
		t.Error("parseBody accepted a body without seq and ts")
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
		check   func(options) bool
	}{
		{nil, "", func(o options) bool {
			return slices.Equal(o.Scenarios, allScenarios) && o.Sizes.Messages == 200_000 && o.Latency == 20*time.Millisecond
		}},
		{[]string{"-short"}, "", func(o options) bool { return o.Sizes.Messages == 20_000 && o.Sizes.Outage == 5*time.Second }},
		{[]string{"-scenarios", "latency,outage", "-messages", "1000"}, "", func(o options) bool {
			return strings.Join(o.Scenarios, ",") == "latency,outage" && o.Sizes.Messages == 1000
		}},
		{[]string{"-scenarios", "smallbox"}, "", func(o options) bool { return slices.Equal(o.Scenarios, []string{"smallbox"}) }},
		{[]string{"-scenarios", "speed"}, `unknown "speed"`, nil},
		{[]string{"-latency", "0s"}, "-latency must be positive", nil},
	}
	for _, tt := range tests {
		o, err := parseFlags(tt.args, &bytes.Buffer{})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: err %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !tt.check(o) {
			t.Errorf("%v: %+v, %v", tt.args, o, err)
		}
	}
}
