package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckWarnsOfMissingStateDirectories: a dead-letter file or de-dup
// journal in a directory that does not exist passes validation, but run
// refuses to start on it; check says so beforehand.
func TestCheckWarnsOfMissingStateDirectories(t *testing.T) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", exampleKeyID)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", exampleSecret)
	t.Setenv("STATE_DIRECTORY", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	cfg := `source:
  endpoint: iot-06z00xxxx.amqp.iothub.aliyuncs.com
  client_id: gw
  credentials:
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret: ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}
  stomp:
    ack: client-individual
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /{productKey}/#
    queue: telemetry-{productKey}
delivery:
  dead_letter:
    file: nodir/dead-letter.jsonl
  dedup:
    file: other/dedup-window.log
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain(t, context.Background(), "check", "-config", file)
	if code != ExitOK {
		t.Fatalf("check: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"warning: delivery.dead_letter.file: directory " + filepath.Join(dir, "nodir") + " does not exist here: run refuses to start",
		"warning: delivery.dedup.file: directory " + filepath.Join(dir, "other") + " does not exist here",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	os.Mkdir(filepath.Join(dir, "nodir"), 0o700)
	os.Mkdir(filepath.Join(dir, "other"), 0o700)
	if _, out, _ = runMain(t, context.Background(), "check", "-config", file); strings.Contains(out, "does not exist") {
		t.Errorf("check warns with the directories there:\n%s", out)
	}
}
