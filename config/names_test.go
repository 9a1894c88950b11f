package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// configKeys is every key of the config file, from the yaml tags of Config.
func configKeys(t *testing.T) map[string]bool {
	t.Helper()
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
	return keys
}

// TestSourceNamesAreConfigKeys: every name the wiring gives the sources
// (the mapping from their Config fields to config keys) is a key of the
// config file, and no two fields share one.
func TestSourceNamesAreConfigKeys(t *testing.T) {
	keys := configKeys(t)
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

// TestMNSNamesAreConfigKeys: every name the wiring gives the MNS client
// starts with a key of the config file (the AccessKey fields go on to say
// where the key comes from when mns.credentials is empty), and no two
// fields share one.
func TestMNSNamesAreConfigKeys(t *testing.T) {
	keys := configKeys(t)
	seen := map[string]bool{}
	for field, name := range MNSNames() {
		key, _, _ := strings.Cut(name, " ")
		key = strings.TrimSuffix(key, ",")
		if !keys[key] {
			t.Errorf("MNSNames()[%s] = %q does not start with a config key", field, name)
		}
		if seen[key] {
			t.Errorf("%q names two fields", key)
		}
		seen[key] = true
	}
	for _, f := range []mns.Field{mns.FieldEndpoint, mns.FieldAccessKeyID, mns.FieldAccessKeySecret, mns.FieldBodyEncoding,
		mns.FieldTimeout, mns.FieldMaxConns, mns.FieldSignatureVersion, mns.FieldRegion} {
		if _, ok := MNSNames()[f]; !ok {
			t.Errorf("MNSNames() does not name %s", f)
		}
	}
}

// TestFieldKeysOnce: every row of the table names a field once, with a
// name that starts with a config key.
func TestFieldKeysOnce(t *testing.T) {
	keys := configKeys(t)
	seen := map[any]bool{}
	for _, fk := range fieldKeys {
		if key, _, _ := strings.Cut(fk.key, " "); !keys[strings.TrimSuffix(key, ",")] {
			t.Errorf("%T %v: %q does not start with a config key", fk.field, fk.field, fk.key)
		}
		if seen[fk.field] {
			t.Errorf("%T %v has two keys", fk.field, fk.field)
		}
		seen[fk.field] = true
	}
	if n, m, p := len(SourceNames()), len(MNSNames()), len(PipelineNames()); n+m+p != len(fieldKeys) || n == 0 || m == 0 || p == 0 {
		t.Errorf("SourceNames has %d names, MNSNames %d and PipelineNames %d; the table has %d rows", n, m, p, len(fieldKeys))
	}
}
