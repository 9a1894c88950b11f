package app

import (
	"slices"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
)

// TestDestinationsFollowTheRoutesAndReload: the destinations "check
// -connect" and readiness look up are the routes' fixed ones, the default
// route's and the dead-letter queue, each once; after a reload, the new
// routes'.
func TestDestinationsFollowTheRoutesAndReload(t *testing.T) {
	dir := t.TempDir()
	load := func(routes ...config.Route) *config.Config {
		t.Helper()
		c := configtest.New()
		c.Source.Endpoint, c.Source.ClientID, c.Source.ConsumerGroupID = "127.0.0.1:61614", "dest-test", "g1"
		c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
		c.MNS.Endpoint = "http://127.0.0.1:1"
		c.Routes = routes
		c.DefaultRoute.Queue = "unrouted"
		c.Delivery.DeadLetter = config.DeadLetter{Queue: "dead-letters"}
		c.HTTP.Listen = ""
		cfg, err := config.Load(configtest.Write(t, dir, "bridge.yaml", c))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	b, err := New(load(config.Route{Match: "/{productKey}/#", Queue: "telemetry-{productKey}"}, config.Route{Match: "/a/#", Topic: "fixed"},
		config.Route{Match: "/c/#", Queue: "unrouted"}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []bridge.Destination{{Kind: bridge.Topic, Name: "fixed"}, {Kind: bridge.Queue, Name: "unrouted"}, {Kind: bridge.Queue, Name: "dead-letters"}}
	if got := b.destinations(); !slices.Equal(got, want) {
		t.Fatalf("destinations %v, want %v", got, want)
	}
	if _, err := b.Reload(load(config.Route{Match: "/b/#", Queue: "other"})); err != nil {
		t.Fatal(err)
	}
	want = []bridge.Destination{{Kind: bridge.Queue, Name: "other"}, {Kind: bridge.Queue, Name: "unrouted"}, {Kind: bridge.Queue, Name: "dead-letters"}}
	if got := b.destinations(); !slices.Equal(got, want) {
		t.Fatalf("after reload: destinations %v, want %v", got, want)
	}
}
