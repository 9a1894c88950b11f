package app

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// metricsOf gathers the bridge's registry; of returns the help text and the
// value of an unlabelled gauge or counter (-1 when it is absent).
func metricsOf(t *testing.T, b *Bridge) (of func(name string) (help string, value float64)) {
	t.Helper()
	mfs, err := b.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	return func(name string) (string, float64) {
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) > 0 {
				m := mf.GetMetric()[0]
				if c := m.GetCounter(); c != nil {
					return mf.GetHelp(), c.GetValue()
				}
				return mf.GetHelp(), m.GetGauge().GetValue()
			}
		}
		return "", -1
	}
}

// series returns the value of the counter or gauge, or the sample count of
// the histogram, name whose labels include want; -1 when there is none.
func series(t *testing.T, b *Bridge, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := b.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestLimitHelpTextsHoldWithTheSpool: with the spool on (STOMP ack auto,
// the default) and MNS failing, the pipeline holds delivery.max_in_flight
// messages while the source goes on reading into the spool. The help texts
// of the limits say so: they said "the source stops reading", which is
// only true without the spool.
func TestLimitHelpTextsHoldWithTheSpool(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Faults: mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503}}, iotsim.Config{})
	c := p.config()
	c.Source.STOMP.Ack = "auto"
	c.Spool.Dir = t.TempDir()
	c.Delivery.MaxInFlight = 2
	c.ShutdownTimeout = time.Second // MNS never takes the messages held
	b := runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler)})
	const n = 6
	p.publishSeq("spooled", n)
	var of func(string) (string, float64)
	waitFor(t, fmt.Sprintf("the pipeline full at 2 and all %d messages in the spool", n), time.Minute, func() bool {
		of = metricsOf(t, b.Bridge)
		_, held := of("iot_mns_bridge_in_flight")
		_, spooled := of("iot_mns_bridge_spool_messages")
		return held == 2 && spooled == n
	})
	for _, name := range []string{"iot_mns_bridge_in_flight_limit", "iot_mns_bridge_held_bytes_limit"} {
		help, _ := of(name)
		if !strings.Contains(help, "without the spool the source stops reading") || !strings.Contains(help, "goes on reading into the spool") {
			t.Errorf("%s's help %q: the source went on reading into the spool (%d messages there, 2 in the pipeline)", name, help, n)
		}
	}
	if help, _ := of("iot_mns_bridge_spool_max_bytes"); !strings.Contains(help, "the source stops reading") {
		t.Errorf("spool_max_bytes' help %q does not say that a full spool stops the source", help)
	}
}

// TestSpoolFullShowsInTheMetrics: a spool that fills while MNS fails shows
// in iot_mns_bridge_spool_full (the IotMnsBridgeSpoolFull alert's
// expression) and in one "spool full" line. spool_bytes stays below
// spool_max_bytes (a message is refused when it does not fit), so the
// alert's old expression, spool_bytes >= spool_max_bytes, did not fire.
func TestSpoolFullShowsInTheMetrics(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Faults: mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503}}, iotsim.Config{})
	c := p.config()
	c.Source.STOMP.Ack = "auto"
	c.Spool.Dir = t.TempDir()
	c.Spool.MaxBytes = 2 << 10
	c.Delivery.MaxInFlight = 2
	c.ShutdownTimeout = time.Second // MNS never takes the messages held
	logs := &testpeers.SyncBuffer{}
	b := runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: NewLogger(config.Log{Level: "info"}, logs)})
	p.publishSeq("fill", 60)
	var of func(string) (string, float64)
	waitFor(t, "iot_mns_bridge_spool_full 1 and the spool's messages committed", time.Minute, func() bool {
		of = metricsOf(t, b.Bridge)
		_, full := of("iot_mns_bridge_spool_full")
		_, used := of("iot_mns_bridge_spool_bytes")
		return full == 1 && used > 0
	})
	// A full spool is not a failing write: its own gauge (the
	// IotMnsBridgeSpoolWritesFailing alert's) stays 0.
	if _, failing := of("iot_mns_bridge_spool_writes_failing"); failing != 0 {
		t.Errorf("iot_mns_bridge_spool_writes_failing = %v with a full spool whose writes succeed, want 0", failing)
	}
	// The messages it holds were committed: the commits' counters show
	// them, and their time (a slow disk's figure).
	for _, name := range []string{"iot_mns_bridge_spool_commits_total", "iot_mns_bridge_spool_committed_messages_total", "iot_mns_bridge_spool_commit_seconds_total"} {
		if _, v := of(name); v <= 0 {
			t.Errorf("%s = %v with messages committed to the spool, want more than 0", name, v)
		}
	}
	_, used := of("iot_mns_bridge_spool_bytes")
	_, bound := of("iot_mns_bridge_spool_max_bytes")
	if used <= 0 || used >= bound {
		t.Errorf("spool_bytes %v, spool_max_bytes %v: want the full spool below its bound", used, bound)
	}
	// status shows it too.
	st := b.Status()
	var out strings.Builder
	if err := printStatus(&out, st, nil); err != nil || st.Spool == nil || !st.Spool.Full || !strings.Contains(out.String(), "refusing messages (source paused)") {
		t.Errorf("status (%v): %+v\n%s", err, st.Spool, out.String())
	}
	waitFor(t, "the spool full line", time.Minute, func() bool { return strings.Contains(logs.String(), "spool full") })
	if n := strings.Count(logs.String(), "msg=\"spool full"); n != 1 {
		t.Errorf("%d spool full lines, want 1:\n%s", n, logs.String())
	}
}
