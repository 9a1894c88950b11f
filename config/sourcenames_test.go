package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestSourceNamesAreConfigKeys: every name the wiring gives the sources
// (the mapping from their Config fields to config keys) is a key of the
// config file, and no two fields share one.
func TestSourceNamesAreConfigKeys(t *testing.T) {
	keys := map[string]bool{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			keys[key] = true
			if f.Type.Kind() == reflect.Struct {
				walk(key+".", f.Type)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	if !keys["source.tls.ca_file"] {
		t.Fatalf("the walk over the yaml tags found no source.tls.ca_file: %d keys", len(keys))
	}
	seen := map[string]bool{}
	for field, key := range SourceNames() {
		if !keys[key] {
			t.Errorf("SourceNames()[%s] = %q is not a config key", field, key)
		}
		if seen[key] {
			t.Errorf("%q names two fields", key)
		}
		seen[key] = true
	}
}
