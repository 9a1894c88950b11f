package credentials

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"
)

// Files is a key whose parts are given as values or as files: each of the
// three may come from its *File twin instead. The files are read together
// and read again whenever one of them changes; a read is kept only when no
// file changed while it was read, so a writer that swaps all three at once
// (a Kubernetes secret volume, systemd credentials) never yields an id of
// one issue with the secret of another. Writers that replace the files one
// by one should use JSONFile instead.
type Files struct {
	AccessKeyID, AccessKeySecret, SecurityToken             string
	AccessKeyIDFile, AccessKeySecretFile, SecurityTokenFile string
	// Field is the config path of the key in errors ("source.credentials").
	Field string

	w fileWatch
}

func (f *Files) Name() string { return "static" }

func (f *Files) files() []string {
	return []string{f.AccessKeyIDFile, f.AccessKeySecretFile, f.SecurityTokenFile}
}

// Changed reports whether a file changed since the last Retrieve.
func (f *Files) Changed() bool {
	if f.AccessKeyIDFile == "" && f.AccessKeySecretFile == "" && f.SecurityTokenFile == "" {
		return false // values only: nothing can change
	}
	return f.w.changed(f.files())
}

func (f *Files) Retrieve(context.Context) (Credentials, error) {
	names := f.files()
	for attempt := 0; ; attempt++ {
		before := f.w.snapshot(names)
		vals := [3]string{f.AccessKeyID, f.AccessKeySecret, f.SecurityToken}
		keys := [3]string{"access_key_id_file", "access_key_secret_file", "security_token_file"}
		for i, name := range names {
			if name == "" {
				continue
			}
			v, err := readSecretFile(name)
			if err != nil {
				f.w.remember(before)
				return Credentials{}, fmt.Errorf("%s.%s: %w", f.Field, keys[i], err)
			}
			vals[i] = v
		}
		after := f.w.snapshot(names)
		if !equalStats(before, after) && attempt < 3 {
			continue // a file changed while we read: read all again
		}
		f.w.remember(after)
		c := Credentials{AccessKeyID: vals[0], AccessKeySecret: vals[1], SecurityToken: vals[2], Source: "static"}
		if f.AccessKeyIDFile != "" || f.AccessKeySecretFile != "" || f.SecurityTokenFile != "" {
			c.Source = "static (files)"
		}
		switch {
		case c.AccessKeyID == "":
			return Credentials{}, fmt.Errorf("%s.access_key_id: required (or access_key_id_file)", f.Field)
		case c.AccessKeySecret == "":
			return Credentials{}, fmt.Errorf("%s.access_key_secret: required (or access_key_secret_file)", f.Field)
		}
		return c, nil
	}
}

// readSecretFile returns a file's contents without surrounding white
// space. Errors name the file, never its contents.
func readSecretFile(name string) (string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return "", fileErr(name, err)
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return "", fmt.Errorf("file %s is empty", name)
	}
	return v, nil
}

// fileErr words a file error without wrapping the os error's text twice;
// a permission denied names the uid and gid the process runs as.
func fileErr(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("file %s does not exist", name)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("file %s is not readable by this user (uid %d, gid %d)", name, os.Getuid(), os.Getgid())
	}
	return fmt.Errorf("read %s: %w", name, err)
}

// JSONFile reads one file that holds the whole triple, in the format a
// credentials URI answers:
//
//	{"AccessKeyId": "...", "AccessKeySecret": "...", "SecurityToken": "...", "Expiration": "2026-11-30T03:46:38Z"}
//
// ("Code", when present, must be "Success"; SecurityToken and Expiration
// may be absent for a long-lived key). Replace the file atomically (write a
// temporary file, then rename it over the old one): it is read again when
// it changes, and a half-written file is refused, keeping the old triple.
type JSONFile struct {
	Path string
	// Field is the config path of the key in errors
	// ("source.credentials.credentials_file").
	Field string

	w fileWatch
}

func (f *JSONFile) Name() string { return "file" }

// Changed reports whether the file changed since the last Retrieve.
func (f *JSONFile) Changed() bool { return f.w.changed([]string{f.Path}) }

func (f *JSONFile) Retrieve(context.Context) (Credentials, error) {
	what := f.Field
	if what == "" {
		what = "credentials file"
	}
	snap := f.w.snapshot([]string{f.Path})
	f.w.remember(snap)
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", what, fileErr(f.Path, err))
	}
	c, err := parseIssue(data, false)
	if errors.Is(err, errEmpty) || errors.Is(err, errCutShort) {
		// Before: "not valid JSON (error at byte 0 of 0)" for a file
		// read while it was rewritten in place.
		return Credentials{}, fmt.Errorf("%s: file %s: %w (read while it was written? replace it atomically: write a "+
			"temporary file, then rename it over this one)", what, f.Path, err)
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: file %s: %w", what, f.Path, err)
	}
	c.Source = "file " + f.Path
	return c, nil
}

// fileWatch remembers the stat of files at the last read.
type fileWatch struct {
	mu   sync.Mutex
	last []fileStat
}

type fileStat struct {
	ok      bool
	size    int64
	modTime time.Time
	ino     uint64
}

func (w *fileWatch) snapshot(names []string) []fileStat {
	out := make([]fileStat, len(names))
	for i, n := range names {
		if n == "" {
			continue
		}
		if fi, err := os.Stat(n); err == nil {
			out[i] = fileStat{ok: true, size: fi.Size(), modTime: fi.ModTime(), ino: inode(fi)}
		}
	}
	return out
}

func (w *fileWatch) remember(s []fileStat) {
	w.mu.Lock()
	w.last = s
	w.mu.Unlock()
}

func (w *fileWatch) changed(names []string) bool {
	now := w.snapshot(names)
	w.mu.Lock()
	defer w.mu.Unlock()
	// Never read (a chain member after the one that yields): nothing to
	// compare with, and nothing of it is in use.
	return w.last != nil && !equalStats(w.last, now)
}

func equalStats(a, b []fileStat) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ok != b[i].ok || a[i].size != b[i].size || !a[i].modTime.Equal(b[i].modTime) || a[i].ino != b[i].ino {
			return false
		}
	}
	return true
}
