package stompsrc

import (
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
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
// names its field (a source.FieldError; without Names, "Config.<Field>").
func TestNewTakesNoDefaults(t *testing.T) {
	_, err := New(Config{Settings: source.Settings{Endpoint: "h:61614", Params: testParams(goodParams())}})
	for _, f := range []source.Field{source.FieldConnections, source.FieldDestination, source.FieldAck,
		source.FieldCheckInterval, source.FieldDialTimeout, source.FieldMinBackoff, source.FieldLimiter} {
		if !source.HasField(err, f) || !strings.Contains(err.Error(), "Config."+string(f)+": ") {
			t.Errorf("New = %v, want it to name %s", err, f)
		}
	}
	if _, err := New(filled(Config{Settings: source.Settings{Endpoint: "h:61614", Params: testParams(goodParams())}})); err != nil {
		t.Errorf("New with config.Default()'s values: %v", err)
	}
}

// TestFieldsAreConfigFields: every source.Field the STOMP source reports
// is a field of its Config.
func TestFieldsAreConfigFields(t *testing.T) {
	sourcetest.CheckFields(t, Config{}, sourcetest.Common...)
	sourcetest.CheckFields(t, Config{}, source.FieldDestination, source.FieldAck, source.FieldHeartBeat, source.FieldCheckInterval)
}
