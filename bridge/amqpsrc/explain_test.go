package amqpsrc

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
)

// TestExplainDialUnknownAuthority: crypto/x509 returns an
// UnknownAuthorityError as a value; the explanation must match it (it
// looked for a pointer, which never matched) and name source.tls.ca_file.
func TestExplainDialUnknownAuthority(t *testing.T) {
	err := explainDial(Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", Names: config.SourceNames()}}, "edge-1", fmt.Errorf("tls: %w", x509.UnknownAuthorityError{}))
	if !strings.Contains(err.Error(), "TLS certificate not trusted") || !strings.Contains(err.Error(), "source.tls.ca_file") {
		t.Errorf("explainDial(UnknownAuthorityError) = %v, want the CA explanation", err)
	}
}

// TestExplainAttach: a refused attach names the address and the group's
// subscription; a server that would pre-settle (at-most-once) names the
// endpoint instead, since the address cannot cause it.
func TestExplainAttach(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", Names: config.SourceNames()}, Address: "/q"}
	err := explainAttach(cfg, "edge-1", fmt.Errorf("attach: %w", amqp10.ErrAtMostOnce))
	if !errors.Is(err, amqp10.ErrAtMostOnce) || !strings.Contains(err.Error(), "check source.endpoint") || strings.Contains(err.Error(), "source.amqp.address") {
		t.Errorf("explainAttach(ErrAtMostOnce) = %v, want it to name source.endpoint, not the address", err)
	}
	err = explainAttach(cfg, "edge-1", errors.New("amqp:not-found"))
	if !strings.Contains(err.Error(), "check source.amqp.address") || !strings.Contains(err.Error(), "consumer group is subscribed") {
		t.Errorf("explainAttach(not found) = %v, want it to name source.amqp.address and the subscription", err)
	}
}
