// Package fieldtest checks that a package speaks of its own fields (package
// field): its code names no config key, since what the operator calls a
// field comes from the wiring as data. A key written into its code, in a
// string or a comment, would be a second owner of the mapping, one that
// drifts from the config.
package fieldtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// NoConfigKeys reads the non-test .go files in dirs and fails t for every
// line that names a config key: one of names (what the wiring calls the
// package's fields; the first word of each is its key), the last part of a
// key that has an underscore ("ca_file"), or any "<prefix>.<lower case>"
// path. It fails too when it reads fewer than minFiles files (a wrong
// directory).
func NoConfigKeys(t *testing.T, names []string, prefix string, minFiles int, dirs ...string) {
	t.Helper()
	var words []string
	for _, name := range names {
		key, _, _ := strings.Cut(name, " ")
		key = strings.TrimSuffix(key, ",")
		words = append(words, key)
		if last := key[strings.LastIndex(key, ".")+1:]; strings.Contains(last, "_") {
			words = append(words, last)
		}
	}
	keyPath := regexp.MustCompile(`(^|[^A-Za-z0-9_/.])` + regexp.QuoteMeta(prefix) + `\.[a-z]`)
	files := 0
	for _, dir := range dirs {
		paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range paths {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for i, line := range strings.Split(string(b), "\n") {
				for _, w := range words {
					if strings.Contains(line, w) {
						t.Errorf("%s:%d names the config key %q: report a Field and name it with Config.Names:\n\t%s",
							path, i+1, w, strings.TrimSpace(line))
					}
				}
				if keyPath.MatchString(line) {
					t.Errorf("%s:%d names a config key path (%s.…): report a Field and name it with Config.Names:\n\t%s",
						path, i+1, prefix, strings.TrimSpace(line))
				}
			}
		}
	}
	if files < minFiles {
		t.Fatalf("read %d files in %v, want at least %d: wrong directory?", files, dirs, minFiles)
	}
}
