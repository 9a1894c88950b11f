package testbroker

import (
	"fmt"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

func TestReadEnvFile(t *testing.T) {
	content := "export RABBITMQ_STOMPS_ADDR='127.0.0.1:26614'\n" +
		"export RABBITMQ_AK_SECRET='s3cr=t'\n" +
		"\n# comment\n" +
		"RABBITMQ_DIR=\"/tmp/x\"\n"
	path := testfile.Write(t, t.TempDir(), "env", content)
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

// TestRabbitMQWaitsForARestartInProgress: while a test of another process
// restarts the broker (it holds the turnstile, the listeners are down),
// RabbitMQ waits for the restart to end instead of failing a CI run with
// "not reachable".
func TestRabbitMQWaitsForARestartInProgress(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t)) // nothing listens: the broker is down
	env := fullEnv(addr)
	env["RABBITMQ_DIR"] = dir
	for k, v := range env {
		t.Setenv(k, v)
	}
	t.Setenv("CI", "true")
	gate, err := openLockFile(filepath.Join(dir, "test.turnstile"))
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	if err := syscall.Flock(int(gate.Fd()), syscall.LOCK_EX); err != nil { // the restart in progress
		t.Fatal(err)
	}
	waiting := make(chan string, 1)
	lockHeld = func(name string) {
		select {
		case waiting <- name:
		default:
		}
	}
	rec := &recordingTB{TB: t}
	done := make(chan *Broker, 1)
	go func() {
		defer close(done)
		done <- RabbitMQ(rec)
	}()
	select {
	case name := <-waiting:
		if name != "test.turnstile" {
			t.Fatalf("RabbitMQ waits on %s, want test.turnstile", name)
		}
	case <-done:
		t.Fatalf("RabbitMQ returned during the restart instead of waiting for it: %s", rec.fatal+rec.skipped)
	}
	// The restart ends: the broker listens again, then the turnstile opens.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := syscall.Flock(int(gate.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	b := <-done
	lockHeld = nil
	if b == nil || rec.fatal != "" || rec.skipped != "" {
		t.Fatalf("RabbitMQ after the restart: %v %s", b, rec.fatal+rec.skipped)
	}
	b.lock.release()
}
