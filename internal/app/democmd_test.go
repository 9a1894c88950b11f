package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// TestDemoCommandForwardsEverything runs "iot-mns-bridge demo" briefly: the
// command wires this program's bridge into internal/demo and reports that
// nothing was lost.
func TestDemoCommandForwardsEverything(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runMain(t, context.Background(), "demo", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", dir)
	if code != ExitOK || !strings.Contains(out, "OK: nothing lost.") {
		t.Fatalf("demo: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Again in the same -dir: an earlier run's files must not make this
	// one report messages as lost.
	code, out, errOut = runMain(t, context.Background(), "demo", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", dir)
	if code != ExitOK || !strings.Contains(out, "OK: nothing lost.") {
		t.Fatalf("demo again in the same -dir: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Its own config it writes again; one the user edited it keeps aside.
	if kept, _ := filepath.Glob(filepath.Join(dir, "demo.yaml.edited-*")); len(kept) != 0 || strings.Contains(out, "is kept as") {
		t.Fatalf("demo again over its own config kept %v:\n%s", kept, out)
	}
	cfgPath := filepath.Join(dir, "demo.yaml")
	edited, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	edited = append(edited, "# my change\n"...)
	testfile.Write(t, dir, "demo.yaml", string(edited))
	code, out, errOut = runMain(t, context.Background(), "demo", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", dir)
	kept, _ := filepath.Glob(filepath.Join(dir, "demo.yaml.edited-*"))
	if code != ExitOK || len(kept) != 1 || !strings.Contains(out, "Your edited "+cfgPath+" is kept as "+kept[0]) {
		t.Fatalf("demo over an edited config: exit %d, kept %v\nstdout:\n%s\nstderr:\n%s", code, kept, out, errOut)
	}
	if got, err := os.ReadFile(kept[0]); err != nil || string(got) != string(edited) {
		t.Errorf("the kept copy is not the edited config: %v\n%s", err, got)
	}
	code, out, errOut = runMain(t, context.Background(), "demo", "-protocol", "amqp", "-devices", "5", "-rate", "200", "-duration", "500ms", "-dir", t.TempDir())
	if code != ExitOK || !strings.Contains(out, "OK: nothing lost.") || !strings.Contains(out, "amqps://127.0.0.1:") {
		t.Fatalf("demo -protocol amqp: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "demo", "-protocol", "mqtt")
	if code != ExitUsage || !strings.Contains(errOut, `-protocol "mqtt": use stomp or amqp`) {
		t.Errorf("demo -protocol mqtt: exit %d, stderr %q; want 2 and the reason", code, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "demo", "-ack", "foo")
	if code != ExitUsage || !strings.Contains(errOut, `-ack "foo": use auto or client-individual`) || strings.Contains(errOut, "demo.yaml") {
		t.Errorf("demo -ack foo: exit %d, stderr %q; want 2 and the flag named (not a deleted temp file)", code, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "mns-emulator")
	if code != ExitUsage || strings.Count(errOut, "mns-emulator") != 1 {
		t.Errorf("mns-emulator without flags: exit %d, stderr %q; want 2 and its name once", code, errOut)
	}
	for _, n := range []string{"0", "65"} {
		code, _, errOut = runMain(t, context.Background(), "demo", "-connections", n)
		if code != ExitUsage || !strings.Contains(errOut, "-connections must be 1 to 64, got "+n+": the platform allows 64 clients per consumer group") {
			t.Errorf("demo -connections %s: exit %d, stderr %q; want 2 and the reason", n, code, errOut)
		}
	}
	// A -dir that cannot be made: the error names the flag.
	file := testfile.Write(t, t.TempDir(), "a-file", "")
	code, _, errOut = runMain(t, context.Background(), "demo", "-dir", filepath.Join(file, "x"))
	if code != ExitFailure || !strings.Contains(errOut, "-dir "+filepath.Join(file, "x")+": ") {
		t.Errorf("demo -dir under a file: exit %d, stderr %q; want 1 naming -dir", code, errOut)
	}
}
