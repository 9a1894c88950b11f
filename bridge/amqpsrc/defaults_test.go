package amqpsrc

import (
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
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
	_, err := New(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams}})
	for _, f := range []source.Field{source.FieldConnections, source.FieldAddress, source.FieldCredit, source.FieldIdleTimeout,
		source.FieldDialTimeout, source.FieldMinBackoff, source.FieldMaxBackoff, source.FieldLimiter} {
		if !source.HasField(err, f) || !strings.Contains(err.Error(), "Config."+string(f)+": ") {
			t.Errorf("New = %v, want it to name %s", err, f)
		}
	}
	if _, err := New(filled(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams}})); err != nil {
		t.Errorf("New with config.Default()'s values: %v", err)
	}
}

// TestFieldsAreConfigFields: every source.Field the AMQP source reports is
// a field of its Config.
func TestFieldsAreConfigFields(t *testing.T) {
	sourcetest.CheckFields(t, Config{}, sourcetest.Common...)
	sourcetest.CheckFields(t, Config{}, source.FieldAddress, source.FieldCredit, source.FieldIdleTimeout,
		source.FieldVhost, source.FieldAttachTimeout, source.FieldSettleTimeout)
}
