package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Known fake secrets: tests assert they never show up in errors or output.
const (
	testKeyID  = "LTAI5tTestKeyId0001"
	testSecret = "sEcReT-Value-0123456789"
	testToken  = "sts-ToKeN-abcdefghijklmnop"
)

// testEnv is the environment of the tests: only the AccessKey pair.
func testEnv(extra ...string) func(string) (string, bool) {
	m := map[string]string{
		"ALIBABA_CLOUD_ACCESS_KEY_ID":     testKeyID,
		"ALIBABA_CLOUD_ACCESS_KEY_SECRET": testSecret,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func parseFile(t *testing.T, path string, env func(string) (string, bool)) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(data, path, env)
}

// assertNoSecrets fails when s holds one of the test secrets.
func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{testSecret, testToken} {
		if strings.Contains(s, secret) {
			t.Errorf("%s shows a secret: %s", what, s)
		}
	}
}

func TestExampleLoadsAndValidates(t *testing.T) {
	cfg, err := parseFile(t, "../configs/example.yaml", testEnv())
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if got := cfg.Source.Credentials.AccessKeyID; got != testKeyID {
		t.Errorf("access_key_id = %q, want %q from the environment", got, testKeyID)
	}
	if cfg.MNS.Credentials != cfg.Source.Credentials {
		t.Errorf("mns.credentials = %+v, want the source's", cfg.MNS.Credentials)
	}
	if secret, _, err := cfg.MNSSecrets(); err != nil || secret != testSecret {
		t.Errorf("MNSSecrets() = %q, %v; want the source's secret", secret, err)
	}
	dir, _ := filepath.Abs("../configs")
	if want := filepath.Join(dir, "dead-letter.jsonl"); cfg.Delivery.DeadLetter.File != want {
		t.Errorf("dead_letter.file = %q, want %q (relative to the config file)", cfg.Delivery.DeadLetter.File, want)
	}
}

// TestExampleShowsDefaults proves the example writes every key, and every
// optional key at its Default value.
func TestExampleShowsDefaults(t *testing.T) {
	cfg, err := parseFile(t, "../configs/example.yaml", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, p := range keyPaths(reflect.TypeOf(Config{}), "") {
		if _, ok := cfg.meta.lines[p]; !ok && !perProtocolDefault[p] {
			missing = append(missing, p)
		}
	}
	// A key whose default depends on the protocol is shown commented out,
	// so that a copy keeps the loader's default for whatever protocol it
	// is switched to (TestExampleSwitchedProtocolKeepsItsSpoolDefault).
	for p := range perProtocolDefault {
		if _, ok := cfg.meta.lines[p]; ok {
			t.Errorf("configs/example.yaml sets %s, whose default depends on source.protocol: show it commented out", p)
		}
	}
	data, err := os.ReadFile("../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "\nspool:\n") || !strings.Contains(string(data), "\n  # dir: "+Default().Spool.Dir+"\n") {
		t.Errorf("configs/example.yaml does not show spool.dir commented out at its default (  # dir: %s)", Default().Spool.Dir)
	}
	if len(missing) > 0 {
		t.Errorf("configs/example.yaml lacks keys: %s", strings.Join(missing, ", "))
	}

	// Set what the example must set (no default), then compare the rest.
	want := Default()
	want.Source.Endpoint = cfg.Source.Endpoint
	want.Source.ClientID = cfg.Source.ClientID
	want.Source.Credentials = cfg.Source.Credentials
	want.MNS.Endpoint = cfg.MNS.Endpoint
	want.MNS.Credentials = cfg.MNS.Credentials
	want.Routes = cfg.Routes
	want.DefaultRoute = cfg.DefaultRoute
	want.Delivery.DeadLetter.File = filepath.Join(filepath.Dir(cfg.Delivery.DeadLetter.File), want.Delivery.DeadLetter.File)
	want.Delivery.Dedup.File = filepath.Join(filepath.Dir(cfg.Delivery.Dedup.File), want.Delivery.Dedup.File)
	want.Spool.Dir = filepath.Join(filepath.Dir(cfg.Spool.Dir), want.Spool.Dir)
	got := *cfg
	got.Path, got.meta = "", nil
	if !reflect.DeepEqual(got, want) {
		gy, _ := yaml.Marshal(got)
		wy, _ := yaml.Marshal(want)
		t.Errorf("example differs from Default:\n got: %s\nwant: %s", gy, wy)
	}
}

// perProtocolDefault lists the keys whose default depends on
// source.protocol: configs/example.yaml shows them commented out.
var perProtocolDefault = map[string]bool{"spool.dir": true}

// TestExampleSwitchedProtocolKeepsItsSpoolDefault: a copy of
// configs/example.yaml switched to amqp, or to STOMP client-individual, has
// no spool, as a config that leaves spool.dir out (the platform redelivers
// by itself); the example as shipped (STOMP auto) has one.
func TestExampleSwitchedProtocolKeepsItsSpoolDefault(t *testing.T) {
	data, err := os.ReadFile("../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, old, new string
		spool          bool
	}{
		{"as shipped (stomp auto)", "", "", true},
		{"amqp", "  protocol: stomp ", "  protocol: amqp  ", false},
		{"stomp client-individual", "    ack: auto ", "    ack: client-individual ", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := string(data)
			if c.old != "" {
				if !strings.Contains(text, c.old) {
					t.Fatalf("configs/example.yaml has no %q", c.old)
				}
				text = strings.Replace(text, c.old, c.new, 1)
			}
			path := filepath.Join(t.TempDir(), "example.yaml")
			cfg, err := Parse([]byte(text), path, testEnv())
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Spool.Dir != ""; got != c.spool {
				t.Errorf("spool.dir = %q; want the spool on: %v (its default for %s)", cfg.Spool.Dir, c.spool, c.name)
			}
		})
	}
}

// keyPaths lists the key paths of every leaf of t, outside lists.
func keyPaths(t reflect.Type, prefix string) []string {
	// mns.credentials is written as {} (the source's); its keys are the
	// source's, which the example shows.
	if t == durationType || t == sizeType || t.Kind() != reflect.Struct || prefix == "mns.credentials" {
		return []string{prefix}
	}
	var out []string
	for name, ft := range yamlFields(t) {
		p := name
		if prefix != "" {
			p = prefix + "." + name
		}
		if ft.Kind() == reflect.Slice {
			out = append(out, p)
			continue
		}
		out = append(out, keyPaths(ft, p)...)
	}
	sort.Strings(out)
	return out
}

func TestMinimalConfigGetsDefaults(t *testing.T) {
	cfg, err := parseFile(t, "testdata/good/minimal.yaml", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	addr, err := cfg.Source.Address()
	if err != nil || addr != "iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:61614" {
		t.Errorf("Address() = %q, %v; want the STOMP default port", addr, err)
	}
	if cfg.Delivery.BatchSize != 16 || cfg.Source.STOMP.HeartBeat != 30*time.Second || cfg.Spool.MaxBytes != GiB {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

// TestBadConfigs runs every testdata/bad/NAME.yaml and expects each line of
// NAME.err as a substring of the error.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".err")
			if err != nil {
				t.Fatalf("every bad config needs its .err: %v", err)
			}
			_, err = parseFile(t, file, testEnv())
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
				if !strings.Contains(err.Error(), line) {
					t.Errorf("error lacks %q; got:\n%v", line, err)
				}
			}
			assertNoSecrets(t, "error", err.Error())
		})
	}
}

func TestMultipleErrorsAreFieldErrors(t *testing.T) {
	_, err := parseFile(t, "testdata/bad/multiple.yaml", testEnv())
	u, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not a joined error: %v", err, err)
	}
	for _, e := range u.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) || fe.Path == "" || fe.Line == 0 {
			t.Errorf("%v: want a *FieldError with a path and a line", e)
		}
	}
}

func TestExpand(t *testing.T) {
	env := testEnv("EMPTY", "", "A", "alpha")
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "alpha"},
		{in: "x-${A}-y", want: "x-alpha-y"},
		{in: "${A:-d}", want: "alpha"},
		{in: "${UNSET:-d}", want: "d"},
		{in: "${EMPTY:-d}", want: "d"},
		{in: "${EMPTY}", want: ""},
		{in: "${UNSET:-}", want: ""},
		{in: "$${A}", want: "${A}"},
		{in: "a$$b", want: "a$b"},
		{in: "cost $5", want: "cost $5"},
		{in: "end$", want: "end$"},
		{in: "${UNSET}", err: "environment variable UNSET is not set"},
		{in: "${A", err: "unterminated"},
		{in: "${1A}", err: "does not hold a variable name"},
		{in: "${}", err: "does not hold a variable name"},
	} {
		got, err := expand(tc.in, env)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("expand(%q) error = %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestExpandOnlyValues(t *testing.T) {
	data := []byte(`# a comment with ${NOT_SET} is left alone
source:
  endpoint: ${HOST:-iot.example.com}:${PORT}
  client_id: "${ID}"
  connections: ${CONNS}
  stomp:
    encode_base64: ${B64:-true}
    heartbeat: ${HB:-0}
  credentials: &creds
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret: "$${ALIBABA_CLOUD_ACCESS_KEY_SECRET}"
mns:
  endpoint: https://1.mns.cn-hangzhou.aliyuncs.com
  credentials: *creds
routes:
  - match: /#
    queue: q
delivery:
  dead_letter:
    file: ${DLF:-}
    queue: ${DLQ}
`)
	cfg, err := Parse(data, "", testEnv("PORT", "61614", "ID", "007", "CONNS", "3", "DLQ", "dead"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"endpoint", cfg.Source.Endpoint, "iot.example.com:61614"},
		{"client_id", cfg.Source.ClientID, "007"},
		{"connections", fmt.Sprint(cfg.Source.Connections), "3"},
		{"encode_base64", fmt.Sprint(cfg.Source.STOMP.EncodeBase64), "true"},
		{"heartbeat", cfg.Source.STOMP.HeartBeat.String(), "0s"},
		// $$ is a literal $, and an alias does not expand its anchor twice.
		{"secret", cfg.Source.Credentials.AccessKeySecret.Reveal(), "${ALIBABA_CLOUD_ACCESS_KEY_SECRET}"},
		{"mns secret", cfg.MNS.Credentials.AccessKeySecret.Reveal(), "${ALIBABA_CLOUD_ACCESS_KEY_SECRET}"},
		// An empty expansion in a string field overrides the default.
		{"dead_letter.file", cfg.Delivery.DeadLetter.File, ""},
		{"dead_letter.queue", cfg.Delivery.DeadLetter.Queue, "dead"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"1048576", MiB, true},
		{"64MiB", 64 * MiB, true},
		{"64 MiB", 64 * MiB, true},
		{"1GB", 1e9, true},
		{"1GiB", GiB, true},
		{"2kB", 2000, true},
		{"3KiB", 3 * KiB, true},
		{"0", 0, true},
		{"10B", 10, true},
		{"1.5GiB", 0, false},
		{"-1", 0, false},
		{"1XB", 0, false},
		{"MiB", 0, false},
		{"", 0, false},
		{"99999999999TiB", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, s := range []Size{GiB, 1536 * KiB, 1000, 0} {
		back, err := ParseSize(s.String())
		if err != nil || back != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s.String(), back, err, s)
		}
	}
}

func TestDurationZeroAndNull(t *testing.T) {
	data := []byte(minimal + "log:\n  summary_interval: 0\nspool:\n  commit_interval:\n")
	cfg, err := Parse(data, "", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.SummaryInterval != 0 {
		t.Errorf("summary_interval = %s, want 0 (disabled)", cfg.Log.SummaryInterval)
	}
	if cfg.Spool.CommitInterval != Default().Spool.CommitInterval {
		t.Errorf("commit_interval with no value = %s, want the default", cfg.Spool.CommitInterval)
	}
}

// minimal is testdata/good/minimal.yaml without its comment.
const minimal = `source:
  endpoint: iot.example.com
  client_id: edge-gw-01
  credentials:
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret: ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /{productKey}/{deviceName}/user/#
    queue: telemetry-{productKey}
`

func TestMergeKeys(t *testing.T) {
	data := []byte(minimal + `x: &common
  batch_size: 4
`)
	_, err := Parse(data, "", testEnv())
	if err == nil || !strings.Contains(err.Error(), `unknown key "x"`) {
		t.Fatalf("want unknown key x, got %v", err)
	}
	data = []byte(minimal + `default_route: &dr
  queue: unrouted
delivery:
  <<: {batch_size: 4, retires: 1}
`)
	_, err = Parse(data, "", testEnv())
	if err == nil || !strings.Contains(err.Error(), `unknown key "retires" in delivery`) {
		t.Errorf("merge key: want the unknown key inside it reported, got %v", err)
	}
	data = []byte(minimal + "delivery:\n  <<: {batch_size: 4}\n")
	cfg, err := Parse(data, "", testEnv())
	if err != nil || cfg.Delivery.BatchSize != 4 {
		t.Errorf("merge key: batch_size = %v, %v; want 4", cfg, err)
	}
}

// TestSpoolOnByDefaultWithAckAuto proves the default loses nothing: with
// STOMP ack auto (the platform never redelivers) the spool is on unless the
// file turns it off with `dir: ""`; a source that redelivers by itself gets
// it only when the file asks.
func TestSpoolOnByDefaultWithAckAuto(t *testing.T) {
	base, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	env := func(k string) (string, bool) {
		if k == "STATE_DIRECTORY" {
			return state, true
		}
		return testEnv()(k)
	}
	for _, c := range []struct {
		name, source, spool, want string
	}{
		{"stomp auto (default)", "", "", filepath.Join(state, "spool")},
		{"stomp auto, turned off", "", "spool:\n  dir: \"\"\n", ""},
		{"stomp auto, elsewhere", "", "spool:\n  dir: /var/spool/x\n", "/var/spool/x"},
		{"stomp client-individual", "  stomp:\n    ack: client-individual\n", "", ""},
		{"stomp client-individual, asked for", "  stomp:\n    ack: client-individual\n", "spool:\n  dir: sp\n", filepath.Join(state, "sp")},
		{"amqp", "  protocol: amqp\n", "", ""},
		{"amqp, asked for", "  protocol: amqp\n", "spool:\n  dir: sp\n", filepath.Join(state, "sp")},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := strings.Replace(string(base), "source:\n", "source:\n"+c.source, 1) + c.spool
			cfg, err := Parse([]byte(data), filepath.Join(t.TempDir(), "c.yaml"), env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Spool.Dir != c.want {
				t.Errorf("spool.dir = %q, want %q", cfg.Spool.Dir, c.want)
			}
		})
	}
}

// An unknown key does not hide the rest: the file still decodes and every
// range error is reported with it, at once.
func TestUnknownKeysAndRangeErrorsReportedTogether(t *testing.T) {
	data := []byte(minimal + "source2: {}\ndelivery:\n  batch_size: 17\n")
	_, err := Parse(data, "c.yaml", testEnv())
	if err == nil {
		t.Fatal("Parse accepted an unknown key and a batch size out of range")
	}
	for _, want := range []string{`unknown key "source2"`, "delivery.batch_size: must be 1 to"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// A wrong type still stops at the first round: the rest cannot decode.
	_, err = Parse([]byte(minimal+"source2: {}\ndelivery:\n  batch_size: many\n"), "c.yaml", testEnv())
	if err == nil || !strings.Contains(err.Error(), `unknown key "source2"`) || !strings.Contains(err.Error(), "batch_size") {
		t.Errorf("unknown key with a type error: %v", err)
	}
}
