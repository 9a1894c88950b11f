package amqpsrc

import (
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
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
