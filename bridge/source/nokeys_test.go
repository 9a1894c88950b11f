package source_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// TestProtocolPackagesNameNoConfigKey: the protocol packages (this one,
// its sourcetest, stompsrc and amqpsrc) report and advise in terms of their
// own Config fields (source.Field, source.FieldError); what the operator
// calls a field comes from the wiring as data (config.SourceNames, handed
// over as Config.Names). A config key written into their code, in a string
// or a comment, would be a second owner of the mapping that drifts from the
// config: this test fails on one. It reads the non-test .go files and looks
// for every key config.SourceNames knows, the last part of every key that
// has an underscore ("ca_file"), and any "source.<lower case>" path.
func TestProtocolPackagesNameNoConfigKey(t *testing.T) {
	var words []string
	for _, key := range config.SourceNames() {
		words = append(words, key)
		if last := key[strings.LastIndex(key, ".")+1:]; strings.Contains(last, "_") {
			words = append(words, last)
		}
	}
	keyPath := regexp.MustCompile(`(^|[^A-Za-z0-9_/.])source\.[a-z]`)
	files := 0
	for _, dir := range []string{".", "sourcetest", "../stompsrc", "../amqpsrc"} {
		names, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			b, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for i, line := range strings.Split(string(b), "\n") {
				for _, w := range words {
					if strings.Contains(line, w) {
						t.Errorf("%s:%d names the config key %q: report a source.Field and name it with Config.Names:\n\t%s",
							name, i+1, w, strings.TrimSpace(line))
					}
				}
				if keyPath.MatchString(line) {
					t.Errorf("%s:%d names a config key path (source.…): report a source.Field and name it with Config.Names:\n\t%s",
						name, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
	if files < 15 {
		t.Fatalf("read %d files, want the three packages' (at least 15): wrong directory?", files)
	}
}
