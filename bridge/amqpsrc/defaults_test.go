package amqpsrc

import (
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

// testDefaults is the source section of config.Default(), the one place
// defaults come from: the Source takes every value as it is.
var testDefaults = config.Default().Source

// filled returns c with every zero config value set from config.Default(),
// as the wiring does.
func filled(c Config) Config {
	d := testDefaults
	if c.Connections == 0 {
		c.Connections = d.Connections
	}
	if c.Address == "" {
		c.Address = d.AMQP.Address
	}
	if c.Credit == 0 {
		c.Credit = d.AMQP.Credit
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.AMQP.IdleTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = d.ReconnectMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = d.ReconnectMaxBackoff
	}
	if c.Limiter == nil {
		c.Limiter = source.NewAttemptLimiter(d.ConnectAttemptsPerMinute, time.Minute)
	}
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
