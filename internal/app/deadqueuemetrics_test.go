package app

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestDeadLetterQueueRequestsShowInTheMetrics: MNS refuses the dead-letter
// queue (403 AccessDenied on BatchSendMessage:dead-letters, a RAM user
// without the permission; the entries are in the dead-letter file). The
// queue's requests are in send_failures_total and sink_request_seconds,
// labelled target="dead_letter_queue" apart from the routes'
// (target="routes"), so that IotMnsBridgeMNSFailing, whose label values the
// bridge must export, sees them: only /status and /readyz said so.
func TestDeadLetterQueueRequestsShowInTheMetrics(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted", "dead-letters"},
		Deny: []string{"BatchSendMessage:dead-letters"}}, iotsim.Config{})
	c := p.config()
	c.Delivery.DeadLetter.File, c.Delivery.DeadLetter.Queue = filepath.Join(p.dir, "dead-letter.jsonl"), "dead-letters"
	b := runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler)})
	p.publishSeq("ok", 5)
	// telemetry-pk2 does not exist: 404, a permanent failure, dead-lettered.
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk2/dev0/user/x", Body: []byte("hello")})
	waitFor(t, "5 forwarded and the dead-letter queue refused", time.Minute, func() bool {
		st := b.Status()
		return st.Pipeline.Forwarded >= 5 && st.DeadLetterQueue != nil && st.DeadLetterQueue.Failed >= 1
	})
	dlq := map[string]string{"status": "403", "target": "dead_letter_queue"}
	if v := series(t, b.Bridge, "iot_mns_bridge_send_failures_total", dlq); v < 1 {
		t.Errorf("send_failures_total%v = %v, want the refused dead-letter queue's message", dlq, v)
	}
	if v := series(t, b.Bridge, "iot_mns_bridge_sink_request_seconds", map[string]string{"kind": "queue", "status": "403", "target": "dead_letter_queue"}); v < 1 {
		t.Errorf("sink_request_seconds{kind=queue,status=403,target=dead_letter_queue} has %v requests, want the refused one", v)
	}
	routes := map[string]string{"status": "404", "target": "routes"}
	if v := series(t, b.Bridge, "iot_mns_bridge_send_failures_total", routes); v != 1 {
		t.Errorf("send_failures_total%v = %v, want 1 (the missing telemetry-pk2)", routes, v)
	}
	if v := series(t, b.Bridge, "iot_mns_bridge_sink_request_seconds", map[string]string{"status": "ok", "target": "routes"}); v < 1 {
		t.Errorf("sink_request_seconds{status=ok,target=routes} has %v requests, want the forwarded ones", v)
	}

	// Every target the alert rules select is a value the bridge exports.
	rules, err := os.ReadFile("../../deploy/prometheus/iot-mns-bridge-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	used := regexp.MustCompile(`(iot_mns_bridge_[a-z_]+)\{[^}]*\btarget="([a-z_]+)"`).FindAllStringSubmatch(string(rules), -1)
	if !strings.Contains(string(rules), `target="dead_letter_queue"`) || len(used) == 0 {
		t.Fatalf("the alert rules select no target=\"dead_letter_queue\": a refused dead-letter queue fires no alert")
	}
	for _, u := range used {
		if v := series(t, b.Bridge, strings.TrimSuffix(u[1], "_count"), map[string]string{"target": u[2]}); v < 0 {
			t.Errorf("the rules select %s{target=%q}, which the bridge does not export", u[1], u[2])
		}
	}
}
