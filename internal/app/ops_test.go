package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// metricValue returns the value of the first sample of name (with labels,
// when given as a prefix like `name{kind="queue"}`).
func metricValue(t *testing.T, text, name string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestMetricsAndReadinessMove scrapes /metrics, /healthz and /readyz of a
// running bridge: not ready before the source connects and while a
// destination is missing, ready after, and the counters move with traffic.
func TestMetricsAndReadinessMove(t *testing.T) {
	p := startPeers(t, mnsemu.Config{}, iotsim.Config{})
	path := p.writeConfig(t, p.config())
	_, base := runBridgeHTTP(t, mustLoad(t, path), Options{Logger: slog.New(slog.DiscardHandler)})

	// The default route's queue does not exist yet: /readyz names it.
	waitFor(t, "/readyz to name the missing queue", 30*time.Second, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "MNS queue unrouted") && strings.Contains(body, "QueueNotExist")
	})
	p.emu.CreateQueue("unrouted")
	code, body := httpGet(t, base+"/healthz")
	if code != http.StatusOK {
		t.Fatalf("/healthz %d %s", code, body)
	}
	p.publishPlain(300)
	// Unknown queue: the emulator answers QueueNotExist, a permanent error,
	// so the messages are dead-lettered with the reason.
	waitFor(t, "dead letters counted", 30*time.Second, func() bool {
		_, text := httpGet(t, base+"/metrics")
		return metricValue(t, text, "iot_mns_bridge_dead_lettered_total") >= 300
	})
	p.emu.CreateQueue("telemetry-pk1")
	p.publishPlain(500)
	waitFor(t, "forwarded counted", 30*time.Second, func() bool {
		_, text := httpGet(t, base+"/metrics")
		return metricValue(t, text, "iot_mns_bridge_forwarded_total") >= 500
	})
	_, text := httpGet(t, base+"/metrics")
	if v := metricValue(t, text, `iot_mns_bridge_send_failures_total{status="404",target="routes"}`); v < 300 {
		t.Errorf("send failures by status: 404 counted %v times, want the 300 QueueNotExist", v)
	}
	if metricValue(t, text, "iot_mns_bridge_in_flight") < 0 {
		t.Error("iot_mns_bridge_in_flight missing")
	}
	for _, name := range []string{"iot_mns_bridge_received_total", "iot_mns_bridge_batch_messages_count",
		"iot_mns_bridge_sink_request_seconds_count", "iot_mns_bridge_source_connected", "go_goroutines", "process_resident_memory_bytes"} {
		if metricValue(t, text, name) <= 0 {
			t.Errorf("metric %s missing or zero in:\n%s", name, text)
		}
	}
	waitFor(t, "/readyz to turn ready", 30*time.Second, func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusOK
	})
	// A source outage makes it unready with the reason.
	p.sim.Close()
	waitFor(t, "/readyz to report the source down", 30*time.Second, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "source connection")
	})
}

// TestSIGHUPReloadsRoutesAndRefusesBadConfig runs the bridge as a process,
// changes its routes and sends SIGHUP: new messages follow the new route. A
// broken file is refused and the running routes kept.
func TestSIGHUPReloadsRoutesAndRefusesBadConfig(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "second", "unrouted"}}, iotsim.Config{})
	path := p.writeConfig(t, p.config())
	data, _ := os.ReadFile(path)
	data = []byte(strings.Replace(string(data), "level: warn", "level: info", 1))
	os.WriteFile(path, data, 0o600)
	c := startChild(t, "run", "-config", path)
	send := func(prefix string, n int) {
		for i := 0; i < n; i++ {
			p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev/user/x", MessageID: fmt.Sprintf("%s-%d", prefix, i), Body: []byte(prefix)})
		}
	}
	send("before", 10)
	waitFor(t, "first route used", 30*time.Second, func() bool { return len(p.emu.Messages("telemetry-pk1")) >= 10 })
	// "check" on the running daemon's config takes none of its locks.
	if code, out, errOut := runMain(t, context.Background(), "check", "-config", path); code != ExitOK {
		t.Fatalf("check while the daemon runs: exit %d\n%s%s", code, out, errOut)
	}

	// A SIGHUP with the file as it was (an edit the bridge cannot see, as
	// through a container's bind mount of a replaced file) says so: it is
	// not reported as applied.
	const unchanged, applied = "the file is unchanged since it was last loaded; nothing to apply", "routes and delivery settings applied"
	c.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "unchanged file logged", 30*time.Second, func() bool { return strings.Contains(c.Out.String(), unchanged) })
	if strings.Contains(c.Out.String(), applied) {
		t.Errorf("an unchanged file is reported as applied:\n%s", c.Out)
	}

	os.WriteFile(path, []byte(strings.Replace(string(data), "queue: telemetry-{productKey}", "queue: second", 1)), 0o600)
	c.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "reload logged", 30*time.Second, func() bool { return strings.Contains(c.Out.String(), "config reloaded: "+applied) })
	send("after", 10)
	waitFor(t, "second route used", 30*time.Second, func() bool { return len(p.emu.Messages("second")) >= 10 })

	// A bad queue name (validation) and an unset ${VAR} (expansion): the
	// refusal names both, as check does.
	bad := strings.Replace(string(data), "queue: telemetry-{productKey}", "queue: bad_name", 1)
	bad = strings.Replace(bad, "level: info", "level: ${IOT_MNS_BRIDGE_TEST_UNSET}", 1)
	os.WriteFile(path, []byte(bad), 0o600)
	c.Cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "refusal logged", 30*time.Second, func() bool { return strings.Contains(c.Out.String(), "config reload refused") })
	send("kept", 10)
	waitFor(t, "running route kept", 30*time.Second, func() bool { return len(p.emu.Messages("second")) >= 20 })
	if !strings.Contains(c.Out.String(), "bad_name") || !strings.Contains(c.Out.String(), "IOT_MNS_BRIDGE_TEST_UNSET is not set") {
		t.Errorf("refusal does not name both problems:\n%s", c.Out)
	}
	if n := strings.Count(c.Out.String(), unchanged); n != 1 {
		t.Errorf("the unchanged file is logged %d times, want once (changed files are not unchanged):\n%s", n, c.Out)
	}
	if code := c.Term(t); code != 0 {
		t.Errorf("exit %d:\n%s", code, c.Out)
	}
}
