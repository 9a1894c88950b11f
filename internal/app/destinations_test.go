package app

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// TestDestinationsFollowTheRoutesAndReload: the destinations "check
// -connect" and readiness look up are the routes' fixed ones, the default
// route's and the dead-letter queue, each once; after a reload, the new
// routes'.
func TestDestinationsFollowTheRoutesAndReload(t *testing.T) {
	dir := t.TempDir()
	load := func(routes string) *config.Config {
		t.Helper()
		path := filepath.Join(dir, "bridge.yaml")
		yaml := `source:
  protocol: stomp
  endpoint: 127.0.0.1:61614
  client_id: dest-test
  consumer_group_id: g1
  credentials:
    access_key_id: ` + testAK + `
    access_key_secret: ` + testSecret + `
mns:
  endpoint: http://127.0.0.1:1
routes:
` + routes + `default_route:
  queue: unrouted
delivery:
  dead_letter:
    queue: unrouted
    file: ""
http:
  listen: ""
`
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	b, err := New(load("  - match: /{productKey}/#\n    queue: telemetry-{productKey}\n  - match: /a/#\n    topic: fixed\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.Destination{{Kind: bridge.Topic, Name: "fixed"}, {Kind: bridge.Queue, Name: "unrouted"}}
	if got := b.destinations(); !slices.Equal(got, want) {
		t.Fatalf("destinations %v, want %v", got, want)
	}
	if _, err := b.Reload(load("  - match: /b/#\n    queue: other\n")); err != nil {
		t.Fatal(err)
	}
	want = []bridge.Destination{{Kind: bridge.Queue, Name: "other"}, {Kind: bridge.Queue, Name: "unrouted"}}
	if got := b.destinations(); !slices.Equal(got, want) {
		t.Fatalf("after reload: destinations %v, want %v", got, want)
	}
}
