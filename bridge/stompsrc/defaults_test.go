package stompsrc

import (
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// testDefaults is the source section of config.Default(), the one place
// defaults come from: the Source takes every value as it is.
var testDefaults = config.Default().Source

// filled returns c with every zero config value set from config.Default(),
// as the wiring does (sourcetest.Fill).
func filled(c Config) Config {
	sourcetest.Fill(&c)
	return c
}

// TestNewTakesNoDefaults: the source fills in no config value of its own
// (they drifted from config.Default()); a value left zero is an error that
// names its key.
func TestNewTakesNoDefaults(t *testing.T) {
	_, err := New(Config{Endpoint: "h:61614", Params: testParams(goodParams())})
	for _, key := range []string{"source.connections", "source.stomp.destination", "source.stomp.ack",
		"source.stomp.check_interval", "source.dial_timeout", "source.reconnect_min_backoff", "source.connect_attempts_per_minute"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("New = %v, want it to name %s", err, key)
		}
	}
	if _, err := New(filled(Config{Endpoint: "h:61614", Params: testParams(goodParams())})); err != nil {
		t.Errorf("New with config.Default()'s values: %v", err)
	}
}
