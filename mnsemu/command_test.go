package mnsemu

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter hands the first line written to it to a channel.
type lineWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	once sync.Once
	line chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if s := w.buf.String(); strings.Contains(s, "\n") {
		w.once.Do(func() { w.line <- strings.SplitN(s, "\n", 2)[0] })
	}
	return len(p), nil
}

// startCommand runs RunCommand with args until stop, and returns the URL
// it listens on once it says so.
func startCommand(t *testing.T, args ...string) (url string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lineWriter{line: make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- RunCommand(ctx, args, out, io.Discard) }()
	var line string
	select {
	case line = <-out.line:
	case err := <-done:
		cancel()
		t.Fatalf("RunCommand returned early: %v", err)
	}
	url, ok := strings.CutPrefix(line, "mns-emulator listening on ")
	if !ok {
		cancel()
		t.Fatalf("first line %q", line)
	}
	return url, func() error {
		cancel()
		return <-done
	}
}

func TestRunCommand(t *testing.T) {
	url, stop := startCommand(t, "-listen", "127.0.0.1:0", "-access-key-id", "ak", "-access-key-secret", "sk",
		"-queue", "q1,q2", "-topic", "t1", "-latency", "1ms")
	// An unsigned request is refused with MNS error XML: the server is up.
	resp, err := http.Get(url + "/queues/q2")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(b), "<Code>MissingVersionHeader</Code>") {
		t.Errorf("reply %d %s", resp.StatusCode, b)
	}
	if err := stop(); err != nil {
		t.Errorf("RunCommand after cancel: %v", err)
	}
}

func TestRunCommandBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "-access-key-id is required"},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-queue", "bad_name"}, "not a valid MNS name"},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-error-rate", "2"}, "fractions"},
		{[]string{"-nope"}, "flag provided but not defined"},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-throttle-code", "Slow"}, "-throttle-code"},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-listen", "256.0.0.1:1"}, "listen"},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-deny", "SendMessages"}, `-deny "SendMessages" is not ACTION or ACTION:NAME`},
		{[]string{"-access-key-id", "ak", "-access-key-secret", "sk", "-deny", "BatchSendMessage:bad_name"}, `-deny "BatchSendMessage:bad_name"`},
	}
	t.Setenv("MNS_EMULATOR_ACCESS_KEY_SECRET", "")
	for _, tt := range tests {
		err := RunCommand(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// TestRunCommandClockOffset: with -clock-offset the emulator's clock runs
// ahead of the machine's, so a request dated by this machine's clock is
// refused as MNS refuses one more than 15 minutes off (TimeExpired), and one
// dated by the emulator's clock passes that check.
func TestRunCommandClockOffset(t *testing.T) {
	url, stop := startCommand(t, "-listen", "127.0.0.1:0", "-access-key-id", "ak", "-access-key-secret", "sk",
		"-queue", "q1", "-clock-offset", "20m")
	code := func(date time.Time) string {
		req, _ := http.NewRequest("GET", url+"/queues/q1", nil)
		req.Header.Set("x-mns-version", apiVersion)
		req.Header.Set("Date", date.UTC().Format(http.TimeFormat))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	if b := code(time.Now()); !strings.Contains(b, "<Code>TimeExpired</Code>") {
		t.Errorf("dated by this machine's clock: %s, want TimeExpired", b)
	}
	// Unsigned: past the date check, the next one refuses it.
	if b := code(time.Now().Add(20 * time.Minute)); !strings.Contains(b, "<Code>MissingAuthorizationHeader</Code>") {
		t.Errorf("dated by the emulator's clock: %s, want it past the date check", b)
	}
	if err := stop(); err != nil {
		t.Errorf("RunCommand after cancel: %v", err)
	}
}
