package amqpsrc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
)

// TestLoginRefusalIsTyped: a SASL failure (amqp10.SASLError) is
// returned wrapping bridge.ErrLoginRefused, as the STOMP source's refused
// CONNECT is; other open failures are not login refusals.
func TestLoginRefusalIsTyped(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671"}}
	sasl := fmt.Errorf("login: %w", &amqp10.SASLError{Code: amqp10.SASLAuth})
	if err := explainLogin(cfg, "c1", sasl); !errors.Is(err, bridge.ErrLoginRefused) || !errors.Is(err, sasl) {
		t.Errorf("SASL failure: %v, want it wrapping bridge.ErrLoginRefused and the cause", err)
	}
	if err := explainLogin(cfg, "c1", context.DeadlineExceeded); errors.Is(err, bridge.ErrLoginRefused) {
		t.Errorf("timeout: %v counts as a refused login", err)
	}
}
