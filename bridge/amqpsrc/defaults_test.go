package amqpsrc

import (
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
)

// filled returns c with every zero config value set from config.Default(),
// as the wiring does (sourcetest.Fill).
func filled(c Config) Config {
	sourcetest.Fill(&c)
	return c
}

// TestNewTakesNoDefaults: the source fills in no config value of its own
// (they drifted from config.Default(): idle timeout, attempts per minute);
// a value left zero is an error that names its key.
func TestNewTakesNoDefaults(t *testing.T) {
	_, err := New(Config{Endpoint: "h:5671", Params: testParams})
	for _, key := range []string{"source.connections", "source.amqp.address", "source.amqp.credit", "source.amqp.idle_timeout",
		"source.dial_timeout", "source.reconnect_min_backoff", "source.reconnect_max_backoff", "source.connect_attempts_per_minute"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("New = %v, want it to name %s", err, key)
		}
	}
	if _, err := New(filled(Config{Endpoint: "h:5671", Params: testParams})); err != nil {
		t.Errorf("New with config.Default()'s values: %v", err)
	}
}
