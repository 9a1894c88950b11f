package main

import (
	"path/filepath"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// TestTestbedConfigsLoad: every kind of bridge run the harness starts gets
// a config the bridge loads, with the spec's settings in it.
func TestTestbedConfigsLoad(t *testing.T) {
	tb, err := newTestbed(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for _, s := range []bridgeSpec{
		{Connections: 1},
		{Connections: 2, Spool: true, MaxInFlightBytes: "16MiB"},
		{Protocol: "amqp", Connections: 5, Credit: 200, Properties: true},
	} {
		runDir := t.TempDir()
		data, err := tb.config(runDir, "g1", "127.0.0.1:0", s)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(data, filepath.Join(runDir, "bridge.yaml"), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatalf("%+v: %v\n%s", s, err, data)
		}
		if cfg.Source.Protocol != map[bool]string{true: "amqp", false: "stomp"}[s.Protocol == "amqp"] ||
			cfg.Source.Connections != s.Connections || (cfg.Spool.Dir != "") != s.Spool ||
			cfg.MNS.Properties.Platform != s.Properties || (s.Credit > 0 && cfg.Source.AMQP.Credit != s.Credit) ||
			(s.MaxInFlightBytes != "" && cfg.Delivery.MaxInFlightBytes != 16*config.MiB) {
			t.Errorf("%+v: loaded %+v\n%s", s, cfg, data)
		}
	}
}
