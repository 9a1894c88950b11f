package config

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// notWritableDirEnv names the directory a child of
// TestStateDirsNotWritableAreNamed checks as the user nobody.
const notWritableDirEnv = "IOT_MNS_BRIDGE_TEST_NOT_WRITABLE_DIR"

// nobody is the uid and gid the check runs as when the test runs as root.
const nobody = 65534

// TestStateDirsNotWritableAreNamed: check names a state file's directory,
// and the spool directory (or its nearest existing parent), that the bridge's user
// cannot write (made by root for a service that runs as another user): run
// refuses to start on them. Root may write anywhere, so as root the test
// checks as the user nobody, in a child process, as the systemd unit's
// DynamicUser would meet it.
func TestStateDirsNotWritableAreNamed(t *testing.T) {
	if dir := os.Getenv(notWritableDirEnv); dir != "" {
		fmt.Println(strings.Join(notWritableStateDirs(dir), "\n"))
		return
	}
	root := traversableTempDir(t)
	dir := filepath.Join(root, "state")
	if err := os.Mkdir(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o555) // whatever the umask
	var got string
	if os.Geteuid() != 0 {
		got = strings.Join(notWritableStateDirs(dir), "\n")
	} else {
		got = checkAsNobody(t, root, dir)
	}
	for _, want := range []string{
		"delivery.dead_letter.file: directory " + dir + " is not writable by this user: run refuses to start until it can create " + filepath.Join(dir, "dead-letter.jsonl"),
		"delivery.dedup.file: directory " + dir + " is not writable by this user",
		"spool.dir: " + dir + " is not writable by this user: run refuses to start until it can create " + filepath.Join(dir, "spool", "q") + "; choose another directory or fix the parent's owner or mode",
		// It said 'until it can create DIR ... fix the parent's owner or
		// mode' of a directory that exists (walked: a spool directory
		// owned by root, the bridge run as nobody).
		"spool.dir: " + dir + " is not writable by this user: run refuses to start until it can write its file there; fix the directory's owner or mode",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the warnings lack %q:\n%s", want, got)
		}
	}
}

// notWritableStateDirs is what check warns of for state paths in dir.
func notWritableStateDirs(dir string) []string {
	cfg := Default()
	cfg.Delivery.DeadLetter.File = filepath.Join(dir, "dead-letter.jsonl")
	cfg.Delivery.Dedup.File = filepath.Join(dir, "dedup-window.log")
	cfg.Spool.Dir = filepath.Join(dir, "spool", "q")
	out := cfg.MissingStateDirs()
	cfg.Spool.Dir = dir // a spool directory made before, not writable itself
	return append(out, cfg.MissingStateDirs()...)
}

// traversableTempDir is a new directory in os.TempDir() that every user may
// enter (t.TempDir's are 0700), removed when the test ends. It fails the
// test when os.TempDir() or a directory above it is not enterable by every
// user.
func traversableTempDir(t *testing.T) string {
	t.Helper()
	for p := os.TempDir(); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is not enterable by other users, so a check as nobody cannot reach a directory in %s: set TMPDIR to one that is (/tmp)", p, os.TempDir())
		}
		if p == filepath.Dir(p) {
			break
		}
	}
	root, err := os.MkdirTemp("", "writable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// checkAsNobody runs this test's binary as the user nobody on dir (below
// root, which every user may enter) and returns what it printed.
func checkAsNobody(t *testing.T, root, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in go's private build directory: a copy nobody
	// may run, beside the directory it checks.
	bin := filepath.Join(root, "config.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestStateDirsNotWritableAreNamed$")
	cmd.Env = append(os.Environ(), notWritableDirEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the check as nobody: %v\n%s", err, out)
	}
	return string(out)
}

// TestStateDirsOnAReadOnlyFilesystemSayIt: a state directory on a read-only
// filesystem (EROFS: a container's read-only root, a path a systemd unit's
// ProtectSystem=strict leaves read-only, a read-only volume) is named as
// such, with what helps: a writable filesystem there. The warnings advised
// the directory's owner or mode, which cannot help. The error is injected:
// a test cannot mount a filesystem read-only.
func TestStateDirsOnAReadOnlyFilesystemSayIt(t *testing.T) {
	dir := t.TempDir()
	was := access
	access = func(string, uint32) error { return syscall.EROFS }
	t.Cleanup(func() { access = was })
	got := notWritableStateDirs(dir)
	if len(got) != 6 {
		t.Fatalf("%d warnings, want 6 (the dead-letter and de-dup files twice, the spool to make and the spool made):\n%s", len(got), strings.Join(got, "\n"))
	}
	for _, w := range got {
		for _, want := range []string{"read-only filesystem", "owner or mode cannot help", "StateDirectory=", "ReadWritePaths=", "Kubernetes"} {
			if !strings.Contains(w, want) {
				t.Errorf("%q lacks %q", w, want)
			}
		}
		if strings.Contains(w, "fix its owner") || strings.Contains(w, "fix the parent's owner") || strings.Contains(w, "fix the directory's owner") {
			t.Errorf("%q advises the owner or mode", w)
		}
	}
}
