package keyring

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
)

// write rotates the file to the triple of id (secret "secret-"+id).
func write(t *testing.T, path, id, token string, exp time.Time) {
	t.Helper()
	if err := Write(path, credentials.Credentials{AccessKeyID: id, AccessKeySecret: "secret-" + id, SecurityToken: token, Expiration: exp}); err != nil {
		t.Fatal(err)
	}
}

// accepts reports what r answers for id: its token when accepted, else
// "refused".
func accepts(r *Ring, id string) string {
	secret, token, ok := r.Authorize(id)
	if !ok {
		return "refused"
	}
	if secret != "secret-"+id {
		return "secret " + secret
	}
	return token
}

func TestRingAcceptsTheCurrentAndForAGraceThePreviousTriple(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	c := testclock.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	write(t, path, "STS.one", "tok-1", c.Now().Add(time.Hour))
	r, err := Open("-credentials-file", path, time.Minute, Options{Now: c.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := accepts(r, "STS.one"); got != "tok-1" {
		t.Fatalf("first triple: %s", got)
	}
	if got := accepts(r, "STS.other"); got != "refused" {
		t.Errorf("an id the file never held: %s, want refused", got)
	}

	write(t, path, "STS.two", "tok-2", c.Now().Add(time.Hour))
	if got := accepts(r, "STS.two"); got != "tok-2" {
		t.Errorf("rotated triple: %s", got)
	}
	if got := accepts(r, "STS.one"); got != "tok-1" {
		t.Errorf("previous triple within the grace: %s, want accepted", got)
	}
	c.Add(time.Minute)
	if got := accepts(r, "STS.one"); got != "refused" {
		t.Errorf("previous triple once the grace is over: %s, want refused", got)
	}
	if got := accepts(r, "STS.two"); got != "tok-2" {
		t.Errorf("current triple after the grace: %s", got)
	}

	// Two rotations: only the one just replaced is in its grace.
	write(t, path, "STS.three", "tok-3", c.Now().Add(time.Hour))
	accepts(r, "STS.three")
	write(t, path, "STS.four", "tok-4", c.Now().Add(time.Hour))
	for id, want := range map[string]string{"STS.two": "refused", "STS.three": "tok-3", "STS.four": "tok-4"} {
		if got := accepts(r, id); got != want {
			t.Errorf("after two rotations, %s: %s, want %s", id, got, want)
		}
	}
}

func TestRingRefusesExpiredTriples(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	c := testclock.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	write(t, path, "STS.one", "tok-1", c.Now().Add(10*time.Second))
	r, err := Open("-credentials-file", path, time.Hour, Options{Now: c.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, "STS.two", "tok-2", c.Now().Add(20*time.Second))
	if got := accepts(r, "STS.one"); got != "tok-1" {
		t.Fatalf("previous triple before its expiry: %s", got)
	}
	c.Add(10 * time.Second)
	if got := accepts(r, "STS.one"); got != "refused" {
		t.Errorf("previous triple at its Expiration, within the grace: %s, want refused", got)
	}
	c.Add(10 * time.Second)
	if got := accepts(r, "STS.two"); got != "refused" {
		t.Errorf("current triple at its Expiration: %s, want refused", got)
	}
}

func TestRingSameIDNewTokenHasNoGrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	write(t, path, "LTAIlong", "", time.Time{})
	r, err := Open("-credentials-file", path, time.Hour, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := accepts(r, "LTAIlong"); got != "" {
		t.Fatalf("a triple without token or expiry: %q", got)
	}
	write(t, path, "LTAIlong", "tok-new", time.Time{})
	if got := accepts(r, "LTAIlong"); got != "tok-new" {
		t.Errorf("the same id with a new token: %q, want tok-new (an id names one triple)", got)
	}
}

func TestRingKeepsItsTriplesWhenTheFileCannotBeRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	write(t, path, "STS.one", "tok-1", time.Time{})
	var logs strings.Builder
	r, err := Open("-credentials-file", path, time.Hour, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"AccessKeyId": "STS.tw`), 0o600); err != nil { // written in place, cut short
		t.Fatal(err)
	}
	if got := accepts(r, "STS.one"); got != "tok-1" {
		t.Errorf("after a half-written file: %s, want the triple read before", got)
	}
	if !strings.Contains(logs.String(), "credentials file not read again") || !strings.Contains(logs.String(), "replace it atomically") {
		t.Errorf("log does not say the file was not read, and how to write it:\n%s", logs.String())
	}
}

func TestOpenNamesTheFlag(t *testing.T) {
	_, err := Open("-credentials-file", filepath.Join(t.TempDir(), "absent.json"), 0, Options{})
	if err == nil || !strings.Contains(err.Error(), "-credentials-file") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open of a missing file: %v", err)
	}
}

// TestRingGraceCountsFromTheRotation: the grace of a replaced triple runs
// from when the file was replaced, not from the first request after it: a
// peer asked nothing for longer than the grace refuses the old triple at
// once (before, a walk's check -connect logged in with a triple replaced
// past the grace).
func TestRingGraceCountsFromTheRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.json")
	write(t, path, "STS.one", "tok-1", time.Time{})
	r, err := Open("-credentials-file", path, 30*time.Second, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, "STS.two", "tok-2", time.Time{})
	minuteAgo := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, minuteAgo, minuteAgo); err != nil {
		t.Fatal(err)
	}
	if got := accepts(r, "STS.one"); got != "refused" {
		t.Errorf("triple replaced a minute ago, grace 30s, first asked now: %s, want refused", got)
	}
	if got := accepts(r, "STS.two"); got != "tok-2" {
		t.Errorf("current triple: %s", got)
	}
}
