package app

import (
	"context"
	"strings"
	"testing"
)

// TestDemoCommandForwardsEverything runs "iot-mns-bridge demo" briefly: the
// command wires this program's bridge into internal/demo and reports that
// nothing was lost.
func TestDemoCommandForwardsEverything(t *testing.T) {
	code, out, errOut := runMain(t, context.Background(), "demo", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", t.TempDir())
	if code != ExitOK || !strings.Contains(out, "OK: nothing lost.") {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, out, errOut = runMain(t, context.Background(), "demo", "-protocol", "amqp", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", t.TempDir())
	if code != ExitOK || !strings.Contains(out, "OK: nothing lost.") || !strings.Contains(out, "amqps://127.0.0.1:") {
		t.Fatalf("demo -protocol amqp: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "demo", "-protocol", "mqtt")
	if code != ExitUsage || !strings.Contains(errOut, `-protocol "mqtt": use stomp or amqp`) {
		t.Errorf("demo -protocol mqtt: exit %d, stderr %q; want 2 and the reason", code, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "demo", "-connections", "0")
	if code != ExitUsage || !strings.Contains(errOut, "-connections 1..64") {
		t.Errorf("demo -connections 0: exit %d, stderr %q; want 2 and the reason", code, errOut)
	}
}
