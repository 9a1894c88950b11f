package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Marshal renders c as a config file that Load reads back: every field that
// differs from Default(), under its YAML key, durations as "1.5s", sizes in
// bytes. Secrets are written in clear (a Config prints them as "***"), so
// it is for configs generated for throwaway credentials: the demo, the
// benchmarks and tests.
func Marshal(c *Config) ([]byte, error) {
	n := marshalNode(reflect.ValueOf(*c), reflect.ValueOf(Default()))
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2) // as the examples in the README are written
	if err := enc.Encode(n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var secretType = reflect.TypeOf(Secret(""))

// marshalNode returns the YAML of v, or nil when v equals def (the
// default).
func marshalNode(v, def reflect.Value) *yaml.Node {
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
			if c := marshalNode(v.Field(i), d); c != nil {
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
			c := marshalNode(v.Index(i), reflect.Zero(v.Type().Elem())) // an element's zero fields are left out
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
			m.Content = append(m.Content, scalar("!!str", k.String()), marshalNode(v.MapIndex(k), reflect.Value{}))
		}
		return m
	case reflect.String:
		return scalar("!!str", v.String())
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	}
	panic(fmt.Sprintf("config: Marshal has no YAML for %s", v.Type()))
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}
