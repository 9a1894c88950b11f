// Package configtest writes bridge configs for tests from a typed
// config.Config: start from New (config.Default()), set the fields a test
// needs, and Write it. The YAML holds only what differs from the defaults,
// so the bridge under test fills in the same defaults as a real deployment,
// and it holds secrets in clear (the Config prints them as "***"): for tests
// only.
package configtest

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// New returns config.Default(), ready to be filled in.
func New() *config.Config {
	c := config.Default()
	return &c
}

// YAML renders c as a config file: every field that differs from
// config.Default(), under its YAML key.
func YAML(c *config.Config) ([]byte, error) {
	def := config.Default()
	n := node(reflect.ValueOf(*c), reflect.ValueOf(def))
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode}
	}
	return yaml.Marshal(n)
}

// Write renders c into dir/name and returns the file's path; it fails the
// test on error.
func Write(t testing.TB, dir, name string, c *config.Config) string {
	t.Helper()
	data, err := YAML(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	sizeType     = reflect.TypeOf(config.Size(0))
	secretType   = reflect.TypeOf(config.Secret(""))
)

// node returns the YAML of v, or nil when v equals def (the default).
func node(v, def reflect.Value) *yaml.Node {
	if def.IsValid() && reflect.DeepEqual(v.Interface(), def.Interface()) {
		return nil
	}
	switch {
	case v.Type() == durationType:
		return scalar("!!str", time.Duration(v.Int()).String())
	case v.Type() == sizeType:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	case v.Type() == secretType:
		return scalar("!!str", v.String())
	}
	switch v.Kind() {
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode}
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || key == "" || key == "-" {
				continue
			}
			var d reflect.Value
			if def.IsValid() {
				d = def.Field(i)
			}
			if c := node(v.Field(i), d); c != nil {
				m.Content = append(m.Content, scalar("!!str", key), c)
			}
		}
		if len(m.Content) == 0 {
			return nil
		}
		return m
	case reflect.Slice:
		s := &yaml.Node{Kind: yaml.SequenceNode}
		for i := 0; i < v.Len(); i++ {
			c := node(v.Index(i), reflect.Zero(v.Type().Elem())) // an element's zero fields are left out
			if c == nil {
				c = &yaml.Node{Kind: yaml.MappingNode}
			}
			s.Content = append(s.Content, c)
		}
		return s
	case reflect.Map:
		m := &yaml.Node{Kind: yaml.MappingNode}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			m.Content = append(m.Content, scalar("!!str", k.String()), node(v.MapIndex(k), reflect.Value{}))
		}
		return m
	case reflect.String:
		return scalar("!!str", v.String())
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	}
	panic(fmt.Sprintf("configtest: no YAML for %s", v.Type()))
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}
