package testbroker

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestReadEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	content := "export RABBITMQ_STOMPS_ADDR='127.0.0.1:26614'\n" +
		"export RABBITMQ_AK_SECRET='s3cr=t'\n" +
		"\n# comment\n" +
		"RABBITMQ_DIR=\"/tmp/x\"\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"RABBITMQ_STOMPS_ADDR": "127.0.0.1:26614",
		"RABBITMQ_AK_SECRET":   "s3cr=t",
		"RABBITMQ_DIR":         "/tmp/x",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if _, err := readEnvFile(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "no RABBITMQ_* variables") {
		t.Errorf("missing file: err = %v, want one saying nothing was found", err)
	}
}

// recordingTB records how RabbitMQ gave up. Skipf and Fatalf end the
// goroutine like the real ones.
type recordingTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordingTB) Helper()                      {}
func (r *recordingTB) Cleanup(func())               {}
func (r *recordingTB) Skipf(f string, args ...any)  { r.skipped = sprintf(f, args...); runtime.Goexit() }
func (r *recordingTB) Fatalf(f string, args ...any) { r.fatal = sprintf(f, args...); runtime.Goexit() }

func TestRabbitMQUnavailable(t *testing.T) {
	tests := []struct {
		name       string
		ci         string
		env        map[string]string
		wantSkip   bool
		wantInText string
	}{
		{"incomplete env, not CI", "", map[string]string{"RABBITMQ_STOMPS_ADDR": "127.0.0.1:1"}, true, "RABBITMQ_AK_ID"},
		{"incomplete env, CI", "true", map[string]string{"RABBITMQ_STOMPS_ADDR": "127.0.0.1:1"}, false, "scripts/rabbitmq.sh start"},
		{"broker down, not CI", "", fullEnv("127.0.0.1:1"), true, "not reachable"},
		{"broker down, CI", "true", fullEnv("127.0.0.1:1"), false, "not reachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range envKeys {
				t.Setenv(k.name, "")
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			t.Setenv("CI", tc.ci)
			rec := &recordingTB{TB: t}
			done := make(chan *Broker)
			go func() {
				defer close(done)
				done <- RabbitMQ(rec)
			}()
			if b := <-done; b != nil {
				t.Fatalf("RabbitMQ returned a broker for an unavailable one: %+v", b)
			}
			text := rec.fatal
			if tc.wantSkip {
				text = rec.skipped
				if rec.fatal != "" {
					t.Errorf("failed outside CI: %s", rec.fatal)
				}
			} else if rec.skipped != "" {
				t.Errorf("skipped in CI: %s", rec.skipped)
			}
			if !strings.Contains(text, tc.wantInText) || !strings.Contains(text, "scripts/rabbitmq.sh start") {
				t.Errorf("message %q, want it to contain %q and how to start the broker", text, tc.wantInText)
			}
		})
	}
}

func fullEnv(stomps string) map[string]string {
	m := make(map[string]string)
	for _, k := range envKeys {
		m[k.name] = "x"
	}
	m["RABBITMQ_STOMPS_ADDR"] = stomps
	return m
}

func sprintf(f string, args ...any) string { return fmt.Sprintf(f, args...) }
