package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"

	"gopkg.in/yaml.v3"
)

// LoadHTTP reads only the http section of the config file at path, over
// Default's: what the status and healthcheck commands need to find a running
// bridge. The other sections are neither expanded nor validated, and no
// secret file is read, so an operator's shell needs neither the bridge's
// environment (the env file systemd or docker gives it) nor the right to
// read its secrets. http.web_config_file is made absolute against the config
// file's directory, as Parse does.
//
// Errors are *FieldErrors of the http keys (an unknown key, a ${VAR} with no
// value, a bad http.listen), or the file's YAML syntax error.
func LoadHTTP(path string) (HTTP, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return HTTP{}, fmt.Errorf("load config: %w", err)
	}
	return parseHTTP(data, path, os.LookupEnv)
}

func parseHTTP(data []byte, path string, env func(string) (string, bool)) (HTTP, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return HTTP{}, syntaxError(path, err)
	}
	w := walker{file: path, env: env, lines: map[string]int{}, expanded: map[*yaml.Node]bool{}}
	if len(root.Content) > 0 && root.Content[0].Kind == yaml.MappingNode {
		top := root.Content[0]
		for i := 0; i+1 < len(top.Content); i += 2 {
			if k := top.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "http" {
				only := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{k, top.Content[i+1]}}
				w.walk(only, reflect.TypeOf(cfg), "")
				if len(w.errs) > 0 {
					return HTTP{}, errors.Join(w.errs...)
				}
				if err := only.Decode(&cfg); err != nil {
					return HTTP{}, decodeError(path, err)
				}
			}
		}
	}
	cfg.Path = path
	cfg.meta = &loadInfo{lines: w.lines, files: map[string]secretFile{}}
	if f := cfg.HTTP.WebConfigFile; f != "" && !filepath.IsAbs(f) && path != "" {
		if dir, err := filepath.Abs(filepath.Dir(path)); err == nil {
			cfg.HTTP.WebConfigFile = filepath.Join(dir, f)
		}
	}
	v := validator{c: &cfg}
	v.httpListen()
	if err := errors.Join(v.errs...); err != nil {
		return HTTP{}, err
	}
	return cfg.HTTP, nil
}
