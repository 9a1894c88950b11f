package mnsemu

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/keyring"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
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
		{[]string{}, "-access-key-id (or -credentials-file) is required"},
		{[]string{"-credentials-file", "f", "-access-key-id", "ak"}, "-credentials-file gives the key: drop -access-key-id"},
		{[]string{"-credentials-file", "f", "-credentials-grace", "-1s"}, "-credentials-grace must be 0 or more"},
		{[]string{"-credentials-file", "/nonexistent/credentials.json"}, "-credentials-file: file /nonexistent/credentials.json does not exist"},
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

// TestRunCommandCredentialsFile: with -credentials-file a request must be
// signed with the file's triple and carry its token; after a rotation the
// new triple is accepted, the old one still is for -credentials-grace, a
// token of another issue is InvalidSecurityToken and an id no longer
// accepted is InvalidAccessKeyId, as MNS answers them.
func TestRunCommandCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.json")
	one := credentials.Credentials{AccessKeyID: "STS.one", AccessKeySecret: "secret-one", SecurityToken: "token-one"}
	two := credentials.Credentials{AccessKeyID: "STS.two", AccessKeySecret: "secret-two", SecurityToken: "token-two"}
	three := credentials.Credentials{AccessKeyID: "STS.three", AccessKeySecret: "secret-three", SecurityToken: "token-three"}
	if err := keyring.Write(path, one); err != nil {
		t.Fatal(err)
	}
	url, stop := startCommand(t, "-listen", "127.0.0.1:0", "-queue", "q1", "-credentials-file", path, "-credentials-grace", "1h")
	defer stop()
	v := &env{t: t, srv: &httptest.Server{URL: url}, clk: testclock.New(time.Now())}
	get := func(c credentials.Credentials) (int, []byte) {
		status, _, b := v.do(req{method: "GET", path: "/queues/q1", id: c.AccessKeyID, secret: c.AccessKeySecret, token: c.SecurityToken})
		return status, b
	}
	if status, b := get(one); status != 200 {
		t.Fatalf("request with the file's triple: %d %s", status, b)
	}
	if err := keyring.Write(path, two); err != nil {
		t.Fatal(err)
	}
	for _, c := range []credentials.Credentials{two, one} {
		if status, b := get(c); status != 200 {
			t.Errorf("request with %s after the rotation to STS.two: %d %s", c.AccessKeyID, status, b)
		}
	}
	other := two
	other.SecurityToken = "token-of-another-issue"
	status, b := get(other)
	v.wantError(status, b, 403, "InvalidSecurityToken")

	// A second rotation: STS.one is neither the file's triple nor the one
	// it replaced.
	if err := keyring.Write(path, three); err != nil {
		t.Fatal(err)
	}
	status, b = get(one)
	v.wantError(status, b, 403, "InvalidAccessKeyId")
	if status, b := get(three); status != 200 {
		t.Errorf("request with the triple of the second rotation: %d %s", status, b)
	}
}
