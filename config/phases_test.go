package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestEveryPhaseAtOnce: the problems of ${VAR} expansion, of decoding
// (durations, sizes, numbers, lists) and of validation come in one error,
// one line each in the order of the file, each key once: a value that did
// not decode is neither validated (no "required" after an unset ${VAR}) nor
// compared with another key (reconnect_max_backoff with the unparsable
// reconnect_min_backoff), and a route whose queue did not expand is not
// reported again as a route without a queue.
func TestEveryPhaseAtOnce(t *testing.T) {
	_, err := parseFile(t, "testdata/phases/all.yaml", testEnv())
	if err == nil {
		t.Fatal("Parse succeeded, want an error")
	}
	f := "testdata/phases/all.yaml:"
	want := []string{
		f + `2: source.protocol: "mqtt" is not supported: use stomp or amqp`,
		f + `4: source.client_id: "edge|gw" must not contain "|"`,
		f + `5: source.connections: "many" is not a whole number`,
		f + `8: source.credentials.access_key_secret: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set`,
		f + `10: source.stomp.heartbeat: "30" is not a duration`,
		f + `11: source.reconnect_min_backoff: "forever" is not a duration`,
		f + `14: mns.endpoint: "mns.example.com" must be http(s)://host[:port]`,
		f + `15: mns.body_encoding: "hex" is not supported: use base64 or raw`,
		f + `18: routes[0].queue: environment variable IOT_MNS_BRIDGE_TEST_QUEUE is not set`,
		f + `19: routes[1]: is an empty entry`,
		f + `21: routes[2].queue: "x_y" is not a valid MNS queue name`,
		f + `23: delivery.batch_size: must be 1 to 16, got 32`,
		f + `24: delivery.max_in_flight_bytes: "64XB" is not a size`,
		f + `26: delivery.retry.initial_backoff: "10" is not a duration`,
		f + `29: delivery.dead_letter.file: environment variable IOT_MNS_BRIDGE_TEST_DLQ is not set`,
		f + `31: spool.commit_interval: must be a duration like 30s, not a list or a mapping`,
		f + `33: log.level: "verbose" is not supported`,
		f + `34: shutdown_timeout: must be more than 0, got 0s`,
		f + `35: unknown key "unknown_key" at the top level`,
	}
	assertLines(t, err, want)
	var fe *FieldError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if !errors.As(e, &fe) || fe.Line == 0 {
			t.Errorf("%v: want a *FieldError with a line", e)
		}
	}
	assertNoSecrets(t, "error", err.Error())
}

// TestUnsetSecretVariableNamesItsFileTwin: the example config's secret,
// ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}, unset (a first check, the unit's env
// file that holds no secret) is reported with the *_file twin the systemd
// unit and the image read it from, as well as the variable.
func TestUnsetSecretVariableNamesItsFileTwin(t *testing.T) {
	_, err := Parse([]byte("source:\n  credentials:\n    access_key_secret: ${IOT_MNS_BRIDGE_TEST_UNSET}\n    security_token: ${IOT_MNS_BRIDGE_TEST_UNSET}\n"), "c.yaml", testEnv())
	for _, want := range []string{
		"c.yaml:3: source.credentials.access_key_secret: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set: set it, or give a default with " +
			"${IOT_MNS_BRIDGE_TEST_UNSET:-default}; or keep the secret in a file and name it with access_key_secret_file instead " +
			"(the systemd unit and the image pass it so: access_key_secret_file: access_key_secret)\n",
		"c.yaml:4: source.credentials.security_token: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set: set it, or give a default with " +
			"${IOT_MNS_BRIDGE_TEST_UNSET:-default}; or keep the secret in a file and name it with security_token_file instead\n",
	} {
		if err == nil || !strings.Contains(err.Error()+"\n", want) {
			t.Errorf("Parse: %v, want %q", err, want)
		}
	}
}

// TestAliasesAndMergesFailAtTheirKey: a value reached through an alias is
// reported at the key that uses it, once per such key; a merge (<<) item
// that is no mapping is reported and the keys written next to it are still
// validated; list items that did not decode keep the others at their index
// and give no follow-on error about an empty name.
func TestAliasesAndMergesFailAtTheirKey(t *testing.T) {
	_, err := parseFile(t, "testdata/phases/aliases.yaml", testEnv())
	f := "testdata/phases/aliases.yaml:"
	assertLines(t, err, []string{
		f + `1: unknown key "x-anchor" at the top level`,
		f + `4: source.client_id: "edge|gw" must not contain "|"`,
		f + `5: source.dial_timeout: "5" is not a duration`,
		f + `5: source: must be a mapping of keys`,
		f + `6: source.reconnect_min_backoff: "forever" is not a duration`,
		f + `7: source.reconnect_max_backoff: "forever" is not a duration`,
		f + `14: mns.properties.platform_properties[1]: must be a single value`,
		f + `14: mns.properties.platform_properties[2]: environment variable NOPE is not set`,
		f + `18: routes[1]: must be a mapping of keys`,
		f + `20: routes[2].queue: "a_b" is not a valid MNS queue name`,
	})
}

// TestAliasesOfAFailingAnchorFailAtTheirKey: a key that reuses through an
// alias an anchored value that failed at its own key is reported too, at the
// alias' line (under an aliased mapping too), and a value that fails only
// at the alias' key (a name where a number belongs) leaves the anchor's key
// its value (no "client_id: required").
func TestAliasesOfAFailingAnchorFailAtTheirKey(t *testing.T) {
	_, err := parseFile(t, "testdata/phases/anchors.yaml", testEnv())
	f := "testdata/phases/anchors.yaml:"
	const unset = "environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set"
	assertLines(t, err, []string{
		f + `4: source.connections: "edge-gw-01" is not a whole number`,
		f + `5: source.reconnect_min_backoff: "forever" is not a duration`,
		f + `6: source.reconnect_max_backoff: "forever" is not a duration`,
		f + `14: routes[0].queue: ` + unset,
		f + `15: routes[0].properties.kind: ` + unset,
		f + `15: routes[0].properties.tag: must be a single value`,
		f + `17: routes[1].queue: ` + unset,
		f + `18: routes[1].properties.kind: ` + unset,
		f + `18: routes[1].properties.tag: must be a single value`,
	})
}

// assertLines checks that err has one line per want, each starting with it.
func assertLines(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatal("Parse succeeded, want an error")
	}
	got := strings.Split(err.Error(), "\n")
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Errorf("missing: %s", want[i])
		case i >= len(want):
			t.Errorf("extra: %s", got[i])
		case !strings.HasPrefix(got[i], want[i]):
			t.Errorf("line %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
}

// TestNoFollowOnErrors: a key whose value did not decode is reported once;
// the checks that compare it with another key, or check the keys of its
// block together, are skipped: each config here has exactly one problem.
func TestNoFollowOnErrors(t *testing.T) {
	const id = "    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}\n"
	const client = "  client_id: edge-gw-01\n"
	for _, tc := range []struct {
		name, old, new, rest, want string
	}{
		{"key file unset", id, "    access_key_id_file: ${IOT_MNS_BRIDGE_TEST_UNSET}\n", "",
			"f.yaml:5: source.credentials.access_key_id_file: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set"},
		{"protocol unset", client, client + "  protocol: ${IOT_MNS_BRIDGE_TEST_UNSET}\n  amqp:\n    credit: 10\n", "",
			"f.yaml:4: source.protocol: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set"},
		{"default route unset", "", "", "default_route:\n  queue: ${IOT_MNS_BRIDGE_TEST_UNSET}\n",
			"f.yaml:13: default_route.queue: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set"},
		{"dedup size", "", "", "delivery:\n  dedup:\n    size: many\n    max_age: 0s\n",
			`f.yaml:14: delivery.dedup.size: "many" is not a whole number`},
		{"min backoff", client, client + "  reconnect_min_backoff: 1\n  reconnect_max_backoff: 10ms\n", "",
			`f.yaml:4: source.reconnect_min_backoff: "1" is not a duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(minimal, tc.old, tc.new, 1)+tc.rest), "f.yaml", testEnv())
			if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got\n%v\nwant only\n%s...", err, tc.want)
			}
		})
	}
}

// TestNumberAndBooleanErrorsSayWhatToWrite: a whole number or a boolean
// that did not decode is reported with what to write; a quoted one that
// would be right without its quotes says so, instead of the contradiction
// it read as before (walked: 'source.connections: "2" is not a whole
// number', 'encode_base64: "true" is not true or false').
func TestNumberAndBooleanErrorsSayWhatToWrite(t *testing.T) {
	const client = "  client_id: edge-gw-01\n"
	for _, tc := range []struct{ name, line, want string }{
		{"quoted number", `  connections: "2"`, `f.yaml:4: source.connections: "2" is quoted, which makes it text: write the number without quotes`},
		{"single-quoted number", `  connections: '2'`, `f.yaml:4: source.connections: "2" is quoted, which makes it text: write the number without quotes`},
		{"word", `  connections: many`, `f.yaml:4: source.connections: "many" is not a whole number: write one in digits, like 4`},
		{"fraction", `  connections: 1.5`, `f.yaml:4: source.connections: "1.5" is not a whole number: write one in digits, like 4`},
		{"too large", `  connections: 99999999999999999999`, `f.yaml:4: source.connections: "99999999999999999999" is too large a number`},
		{"quoted boolean", "  stomp:\n    encode_base64: \"true\"", `f.yaml:5: source.stomp.encode_base64: "true" is quoted, which makes it text: write true or false without quotes`},
		{"word boolean", "  stomp:\n    encode_base64: yes please", `f.yaml:5: source.stomp.encode_base64: "yes please" is not true or false: write true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(strings.Replace(minimal, client, client+tc.line+"\n", 1)), "f.yaml", testEnv())
			if err == nil || err.Error() != tc.want {
				t.Errorf("got\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

// TestAliasExpandsOnce: a value reached through an alias inside an anchored
// mapping that two routes use is expanded once ($$ is a literal $).
func TestAliasExpandsOnce(t *testing.T) {
	data, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, `    properties: &p {a: &v "a$$$$b", b: *v}
  - match: /{productKey}/b/#
    queue: second
    properties: *p
`...)
	cfg, err := Parse(data, "f.yaml", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range cfg.Routes {
		if r.Properties["a"] != "a$$b" || r.Properties["b"] != "a$$b" {
			t.Errorf("routes[%d].properties = %v, want a$$b twice", i, r.Properties)
		}
	}
}
