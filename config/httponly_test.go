package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestParseHTTPReadsOnlyTheHTTPSection: status and healthcheck read the
// http section of a config whose other sections need variables and secret
// files the operator's shell does not have.
func TestParseHTTPReadsOnlyTheHTTPSection(t *testing.T) {
	const file = `source:
  endpoint: ${UNSET_ENDPOINT}
  credentials:
    access_key_secret_file: /no/such/secret
routes: [garbage
`
	// A broken section other than http is no concern of LoadHTTP, except
	// for YAML syntax, which is the whole file's.
	if _, err := parseHTTP([]byte(file), "c.yaml", testEnv()); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
		t.Fatalf("broken YAML: %v, want the syntax error", err)
	}
	const ok = `source:
  endpoint: ${UNSET_ENDPOINT}
  credentials:
    access_key_secret_file: /no/such/secret
http:
  listen: ${LISTEN:-127.0.0.1:9999}
  web_config_file: web.yml
`
	h, err := parseHTTP([]byte(ok), "/etc/iot-mns-bridge/config.yaml", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if h.Listen != "127.0.0.1:9999" || h.WebConfigFile != filepath.FromSlash("/etc/iot-mns-bridge/web.yml") {
		t.Errorf("got %+v, want the expanded listen and the web config next to the config", h)
	}
	h, err = parseHTTP([]byte("source: {}\n"), "c.yaml", testEnv())
	if err != nil || h != Default().HTTP {
		t.Errorf("no http section: %+v, %v; want the defaults", h, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"http:\n  listen: 9477\n", `c.yaml:2: http.listen: "9477" must be host:port`},
		{"http:\n  lisen: x\n", `c.yaml:2: unknown key "lisen" in http`},
		{"http:\n  listen: ${UNSET}\n", "c.yaml:2: http.listen: environment variable UNSET is not set"},
		// The file's structure is the whole file's, as its syntax.
		{"http: {}\n---\nhttp: {}\n", "c.yaml:2: a second YAML document"},
		{"- http\n", "c.yaml:1: the file must be a mapping"},
	} {
		if _, err := parseHTTP([]byte(tc.yaml), "c.yaml", testEnv()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestParseHTTPReportsInLineOrder: the problems of the http section come in
// the order of their lines, as Parse's do, whichever phase found them (the
// unknown key is the walker's, http.listen validation's).
func TestParseHTTPReportsInLineOrder(t *testing.T) {
	const file = `http:
  listen: 9477
  lisen: 127.0.0.1:9477
  web_config_file: ${UNSET}
`
	_, err := parseHTTP([]byte(file), "c.yaml", testEnv())
	assertLines(t, err, []string{
		`c.yaml:2: http.listen: "9477" must be host:port`,
		`c.yaml:3: unknown key "lisen" in http (did you mean "listen"?)`,
		`c.yaml:4: http.web_config_file: environment variable UNSET is not set`,
	})
}
