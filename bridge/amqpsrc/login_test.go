package amqpsrc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
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

// TestSASLOutcomesAreExplained: each refusing SASL outcome code (AMQP 1.0
// part 5, 5.3.3.6) says what it means and what to do: auth (1) is the
// credentials; sys (2), sys-perm (3) and sys-temp (4) are the server's own
// errors, about which checking the credentials would mislead.
func TestSASLOutcomesAreExplained(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", Names: config.SourceNames()}}
	credentials := "AccessKey ID and secret"
	for _, tc := range []struct {
		code        uint8
		want        []string
		credentials bool // the advice is to check the credentials
	}{
		{amqp10.SASLAuth, []string{"code 0x1 (auth: the server refused the credentials)"}, true},
		{amqp10.SASLSys, []string{"code 0x2 (sys: an unspecified system error at the server, not the credentials)",
			"a system error it did not name", "back-off", "source.iot_instance_id", "support"}, false},
		{amqp10.SASLSysPerm, []string{"code 0x3 (sys-perm: a system error at the server that is unlikely to clear without intervention",
			"will not clear without intervention", "report it to Alibaba Cloud support", "source.iot_instance_id", "source.consumer_group_id"}, false},
		{amqp10.SASLSysTemp, []string{"code 0x4 (sys-temp: a transient system error at the server, not the credentials)",
			"transient", "logs in again with back-off", "nothing to change unless it persists"}, false},
		{9, []string{"code 0x9 (a code AMQP 1.0 does not define)"}, true},
	} {
		err := explainLogin(cfg, "c1", fmt.Errorf("login: %w", &amqp10.SASLError{Code: tc.code, AdditionalData: []byte("server text")}))
		if !errors.Is(err, bridge.ErrLoginRefused) || !strings.Contains(err.Error(), "server text") {
			t.Errorf("code %d: %v, want a refused login with the server's text", tc.code, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("code %d: %v\nwant %q", tc.code, err, w)
			}
		}
		if got := strings.Contains(err.Error(), credentials); got != tc.credentials {
			t.Errorf("code %d: %v\nadvises checking the credentials: %v, want %v", tc.code, err, got, tc.credentials)
		}
	}
}

// TestSASLAuthRefusalForAnotherCauseSaysOnlyThatCause: the platform
// answers a full consumer group (9600) with SASL auth (code 1). The line
// gave the consumer-group advice, then AMQP's meaning of the code, "(auth:
// the server refused the credentials)", which the walk's operator read as a
// credentials problem again. Now the line keeps the code and the platform's
// text without that meaning; a refusal whose text names no other cause
// keeps it.
func TestSASLAuthRefusalForAnotherCauseSaysOnlyThatCause(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", Names: config.SourceNames()}}
	const full = "authentication failed: 9600: too many connections in one consumer group: consumer group DEFAULT_GROUP has 64 clients online, the platform's limit (error 9600); a client must leave it first"
	sasl := &amqp10.SASLError{Code: amqp10.SASLAuth, AdditionalData: []byte(full)}
	err := explainLogin(cfg, "c1", fmt.Errorf("login: %w", sasl))
	var got *amqp10.SASLError
	if !errors.Is(err, bridge.ErrLoginRefused) || !errors.As(err, &got) || got != sasl {
		t.Errorf("9600: %v, want a refused login wrapping the SASL error", err)
	}
	errtext.Want(t, "9600", err, []string{"login refused by the server; the consumer group has the 64 clients online that the platform allows (error 9600)",
		": login: SASL PLAIN login refused with code 0x1: " + full})
	for _, not := range []string{"credentials", "AccessKey"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("9600: %q says %q: the refusal is not about them", err, not)
		}
	}
	if source.KeyMayBeRefused(err) {
		t.Errorf("9600: %v counts as a refusal of the key", err)
	}

	// A refusal that names the key keeps AMQP's meaning of the code.
	err = explainLogin(cfg, "c1", fmt.Errorf("login: %w", &amqp10.SASLError{Code: amqp10.SASLAuth, AdditionalData: []byte(`authentication failed: unknown authId "LTAIx"`)}))
	errtext.Want(t, "unknown authId", err, []string{`SASL PLAIN auth failed with code 0x1 (auth: the server refused the credentials): authentication failed: unknown authId "LTAIx"`})
}

// A login that source.dial_timeout cut short says so also when the socket's
// deadline (the same instant) fired before the context's timer, so that
// amqp10 returned the read's i/o timeout and not the context's error: it
// said 'awaiting sasl-outcome: read tcp ...: i/o timeout; check
// source.endpoint and source.amqp.idle_timeout' (walk8, a server 3 s slow at
// every step of the login), and the idle timeout plays no part in a login.
func TestLoginCutByTheSocketDeadlineIsTheDialTimeout(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", DialTimeout: 15 * time.Second}}
	ioTimeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	err := explainLogin(cfg, "c1", fmt.Errorf("awaiting sasl-outcome: %w", ioTimeout))
	if !strings.Contains(err.Error(), "timed out after 15s (Config.DialTimeout)") || strings.Contains(err.Error(), "IdleTimeout") {
		t.Errorf("got %q, want the dial timeout named and not the idle timeout", err)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%v does not wrap the cause", err)
	}
}

// A dial that source.dial_timeout cut short is one failure whatever step it
// cut, the TLS handshake (explainDial) or a step of the login
// (explainLogin): against a server slow at every step each attempt stopped
// at another one, the texts differed ('amqp connect ...' or 'amqp login
// ...', 'awaiting sasl-outcome', 'awaiting sasl-mechanisms', 'read the SASL
// protocol header') and each attempt logged a new ERROR line (walk8: 4 a
// minute).
func TestDialTimeoutAtAnyStepIsOneFailure(t *testing.T) {
	cfg := Config{Settings: source.Settings{Endpoint: "127.0.0.1:5671", DialTimeout: 15 * time.Second}}
	ioTimeout := func(port int) error {
		return &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
			Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5671}, Err: os.ErrDeadlineExceeded}
	}
	errs := []error{
		explainDial(cfg, "c1", context.DeadlineExceeded),
		explainLogin(cfg, "c1", fmt.Errorf("read the SASL protocol header: %w", ioTimeout(40001))),
		explainLogin(cfg, "c1", fmt.Errorf("awaiting sasl-mechanisms: %w", ioTimeout(40002))),
		explainLogin(cfg, "c1", fmt.Errorf("awaiting sasl-outcome: %w", ioTimeout(40003))),
		explainLogin(cfg, "c1", fmt.Errorf("awaiting sasl-outcome: %w (%w)", context.DeadlineExceeded, ioTimeout(40004))),
	}
	for _, err := range errs {
		if !strings.Contains(err.Error(), "timed out after 15s (Config.DialTimeout); check Config.Endpoint, the network and any firewall") {
			t.Errorf("%q does not name the dial timeout and what to check", err)
		}
		if source.FailureShape(err.Error()) != source.FailureShape(errs[0].Error()) {
			t.Errorf("two failures for one dial timeout:\n%s\n%s", errs[0], err)
		}
	}
}
