package stompsrc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// ErrLoginRefused marks a CONNECT that the server answered with an ERROR
// frame; it is bridge.ErrLoginRefused, which the AMQP source wraps too.
var ErrLoginRefused = bridge.ErrLoginRefused

// serverError returns the server's ERROR frame carried by err, if any. The
// errors go-stomp makes up itself (connection closed, read timeout) carry
// no frame or a frame without a body; they are not server errors.
func serverError(err error) (*frame.Frame, bool) {
	var se stomp.Error
	if errors.As(err, &se) && se.Frame != nil && se.Frame.Command == frame.ERROR {
		return se.Frame, true
	}
	var sp *stomp.Error
	if errors.As(err, &sp) && sp != nil && sp.Frame != nil && sp.Frame.Command == frame.ERROR {
		return sp.Frame, true
	}
	return nil, false
}

// frameText is the ERROR frame's message header and the start of its body,
// on one line, with every secret in hide replaced by "***".
func frameText(f *frame.Frame, hide ...string) string {
	msg := f.Header.Get(frame.Message)
	body := strings.Join(strings.Fields(string(f.Body)), " ")
	if len(body) > 300 {
		body = body[:300] + "..."
	}
	text := msg
	switch {
	case text == "":
		text = body
	case body != "" && body != msg:
		text += " (" + body + ")"
	}
	if text == "" {
		text = "ERROR frame without a message"
	}
	for _, s := range hide {
		if s != "" {
			text = strings.ReplaceAll(text, s, "***")
		}
	}
	return text
}

// describeDial turns a failure of TCP connect, TLS handshake or the STOMP
// CONNECT exchange into an error that tells the operator what to check. The
// text of an error never contains the password or the security token.
func describeDial(endpoint string, timeout time.Duration, err error, secrets ...string) error {
	if f, ok := serverError(err); ok {
		return fmt.Errorf("stomp connect %s: %w: %q; check source.credentials, consumer_group_id, iot_instance_id and sign_method, and that the system clock is right",
			endpoint, ErrLoginRefused, frameText(f, secrets...))
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		alert     tls.AlertError
		recordHdr tls.RecordHeaderError
		opErr     *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("stomp connect %s: TLS: the server certificate is signed by an unknown authority; add its CA with source.tls.ca_file: %w", endpoint, err)
	case errors.As(err, &hostname):
		return fmt.Errorf("stomp connect %s: TLS: the server certificate does not match the name; set source.tls.server_name to a name it holds: %w", endpoint, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("stomp connect %s: TLS: the server certificate is not valid (expired, or not yet valid: check the clock): %w", endpoint, err)
	case errors.As(err, &recordHdr):
		return fmt.Errorf("stomp connect %s: TLS: the server did not answer with TLS; is this the TLS port (61614)?: %w", endpoint, err)
	case errors.As(err, &alert):
		return fmt.Errorf("stomp connect %s: TLS handshake refused by the server: %w", endpoint, err)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return fmt.Errorf("stomp connect %s: timed out after %s; check source.endpoint, the network and any firewall: %w", endpoint, timeout, err)
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("stomp connect %s: cannot reach the server; check source.endpoint and the network: %w", endpoint, err)
	}
	return fmt.Errorf("stomp connect %s: %w", endpoint, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
