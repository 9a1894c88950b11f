// Package testfile writes the files a test's fixture needs: a file with a
// given content in a directory (often t.TempDir()), its path returned, the
// test failed if the write fails. For tests only; a test whose subject is
// the write itself (its error, its mode) writes with os.WriteFile.
package testfile

import (
	"os"
	"path/filepath"
	"testing"
)

// Write writes content to dir/name and returns that path. A new file gets
// mode 0600 (0600 is not narrowed by a usual umask, so a secret's file is
// as a deployment would have it); an existing file is truncated and keeps
// its mode. Write calls t.Helper, and t.Fatal if the write fails, so it
// must be called from the test's goroutine.
func Write(t testing.TB, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
