package testfile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestWriteMakesTheFileAndReturnsItsPath(t *testing.T) {
	dir := t.TempDir()
	path := Write(t, dir, "secret", "s3cret\n")
	if want := filepath.Join(dir, "secret"); path != want {
		t.Errorf("path %q, want %q", path, want)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "s3cret\n" {
		t.Errorf("content %q, %v; want %q", got, err, "s3cret\n")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

func TestWriteTruncatesAnExistingFileAndKeepsItsMode(t *testing.T) {
	dir := t.TempDir()
	path := Write(t, dir, "f", "a longer first content")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	Write(t, dir, "f", "short")
	if got, err := os.ReadFile(path); err != nil || string(got) != "short" {
		t.Errorf("content %q, %v; want %q", got, err, "short")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, %v; want the file's own 0644", fi.Mode().Perm(), err)
	}
}

// fatalTB records Fatal and ends its goroutine, as testing.T's Fatal does.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatal(args ...any) {
	f.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}

func TestWriteFailsTheTestWhenTheWriteFails(t *testing.T) {
	tb := &fatalTB{TB: t}
	missing := filepath.Join(t.TempDir(), "missing")
	returned := make(chan bool, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Write(tb, missing, "f", "x")
		returned <- true
	}()
	<-done
	if len(returned) != 0 {
		t.Error("Write returned after a failed write; want t.Fatal")
	}
	if tb.fatal == "" {
		t.Errorf("Write did not call Fatal for a file in a missing directory")
	}
}
