package app

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestDeployFilesUseExportedMetrics checks that every metric the alerting
// rules and the Grafana dashboard under deploy/ refer to is exported by a
// running bridge (with a spool and some traffic, so every series exists).
// promtool checks their syntax and the alerts' behaviour (scripts/ops-check.sh).
func TestDeployFilesUseExportedMetrics(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted", "telemetry-pk1"}}, iotsim.Config{})
	c := p.config()
	c.Spool.Dir = t.TempDir()
	b, base := p.runReady(t, c)
	p.publishPlain(50)
	// A missing queue: a failed send and a dead letter, so that the labelled
	// counters have a series.
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk2/dev0/user/x", Body: []byte("hello")})
	waitFor(t, "50 forwarded and 1 dead-lettered", 30*time.Second, func() bool {
		st := b.Status().Pipeline
		return st.Forwarded >= 50 && st.DeadLettered >= 1
	})

	_, text := httpGet(t, base+"/metrics")
	exported := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line) // # TYPE name kind
			name := f[2]
			exported[name] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = true
				}
			}
		}
	}
	exported["up"] = true // Prometheus' own

	metric := regexp.MustCompile(`\b(iot_mns_bridge_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+|up)\b`)
	for _, file := range []string{"deploy/prometheus/iot-mns-bridge-rules.yml", "deploy/grafana/iot-mns-bridge.json"} {
		b, err := os.ReadFile("../../" + file)
		if err != nil {
			t.Fatal(err)
		}
		var used []string
		for _, line := range strings.Split(string(b), "\n") {
			if l := strings.TrimSpace(line); strings.HasPrefix(l, "#") || strings.Contains(l, "description") || strings.Contains(l, "summary") {
				continue // names in descriptions and comments are not queries
			}
			for _, m := range metric.FindAllString(line, -1) {
				if !slices.Contains(used, m) {
					used = append(used, m)
				}
			}
		}
		if len(used) < 5 {
			t.Errorf("%s: found only %q in expr lines; the check lost track of the format", file, used)
		}
		for _, m := range used {
			if !exported[m] {
				t.Errorf("%s uses %s, which the bridge does not export", file, m)
			}
		}
	}
}
