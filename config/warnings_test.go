package config

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestLiteralSecretsInReadableConfigAreFound(t *testing.T) {
	cfg := []byte(`source:
  credentials:
    access_key_id: AK
    access_key_secret: plain-text-secret
    security_token: ${STS_TOKEN}
mns:
  credentials:
    access_key_secret: "${MNS_SECRET:-}"
    security_token: "tok"
`)
	got := strings.Join(literalSecrets(cfg), ",")
	if got != "source.credentials.access_key_secret,mns.credentials.security_token" {
		t.Errorf("literal secrets = %q", got)
	}
	if n := literalSecrets([]byte("source:\n  credentials:\n    access_key_secret_file: s\n")); len(n) != 0 {
		t.Errorf("a *_file key is not a literal secret: %v", n)
	}
}

// TestSpoolRoomIsWarned: a spool.max_bytes its filesystem cannot hold is
// warned of (not refused: see spoolRoom), naming the key, the directory and
// the sizes: a filesystem smaller than it, or less free space than it beyond
// what the spool's file already takes.
func TestSpoolRoomIsWarned(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name                   string
		max, total, free, file uint64
		want                   string // "" for no warning
	}{
		{"fits", gib, 100 * gib, 50 * gib, 0, ""},
		{"free exactly", gib, 100 * gib, gib, 0, ""},
		{"the file holds the rest", gib, 100 * gib, gib / 2, gib / 2, ""},
		{"1TiB on 100GiB", 1024 * gib, 100 * gib, 50 * gib, 0,
			"spool.max_bytes is larger than the whole filesystem of spool.dir; if MNS is down long enough the disk fills first: the source then stops reading as when the spool is full" +
				" and the messages of the failed write wait in memory (a crash meanwhile loses them), and whatever else writes to that disk fails too." +
				" Set spool.max_bytes to what the spool may use of this disk (its file takes somewhat more than the messages it holds), or give the spool a larger disk" +
				" spool.dir=/s spool.max_bytes=1TiB filesystem_size=100.0GiB free=50.0GiB"},
		{"little free", gib, 100 * gib, 300 << 20, 100 << 20,
			"spool.max_bytes is larger than the free space of spool.dir's filesystem (plus what the spool's file holds); if MNS is down long enough"},
	} {
		w, ok := roomWarning("/s", tc.max, tc.total, tc.free, tc.file)
		switch {
		case tc.want == "" && ok:
			t.Errorf("%s: warned %q", tc.name, w)
		case tc.want != "" && (!ok || !strings.HasPrefix(w.String(), tc.want)):
			t.Errorf("%s: warned %v %q, want %q", tc.name, ok, w, tc.want)
		}
	}
	if w, _ := roomWarning("/s", gib, 100*gib, 300<<20, 100<<20); !strings.HasSuffix(w.String(), "free=300.0MiB spool_file=100.0MiB") {
		t.Errorf("the free-space warning lacks the sizes: %q", w)
	}

	// This machine's filesystem (statfs, Linux): smaller than 1EiB, in
	// front of a spool directory the spool would create.
	cfg := validConfig()
	cfg.Spool.Dir, cfg.Spool.MaxBytes = filepath.Join(t.TempDir(), "not", "yet"), 1<<60
	var found bool
	for _, w := range cfg.Warnings() {
		found = found || strings.HasPrefix(w.String(), "spool.max_bytes is larger than the whole filesystem of spool.dir")
	}
	if runtime.GOOS == "linux" && !found {
		t.Errorf("no warning of spool.max_bytes 1EiB: %v", cfg.Warnings())
	}
	cfg.Spool.MaxBytes = MiB
	for _, w := range cfg.Warnings() {
		if strings.HasPrefix(w.String(), "spool.max_bytes") {
			t.Errorf("warned of a 1MiB spool: %s", w)
		}
	}
}
