package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParse: Parse never panics, a config it refuses is refused with each
// problem once, and a config it accepts validates again and dumps as YAML.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	seeds = append(seeds, "../configs/example.yaml")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &a [*a, *a]\nsource: *a\n"))
	f.Add([]byte("source: {<<: [{protocol: amqp}], credentials: {access_key_id: ${X:-y}}}\n"))
	env := testEnv()
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml", env)
		if err != nil {
			seen := map[string]bool{}
			for _, line := range strings.Split(err.Error(), "\n") {
				if seen[line] {
					t.Fatalf("the error repeats %q:\n%v", line, err)
				}
				seen[line] = true
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config fails Validate: %v", err)
		}
		if _, err := yaml.Marshal(cfg); err != nil {
			t.Fatalf("accepted config does not dump: %v", err)
		}
	})
}
