package stompsrc

import (
	"errors"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
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
// CONNECT exchange into an error that tells the operator what to check
// (source.ExplainDial, source.LoginRefused), naming the settings with n.
// The text of an error never contains the password or the security token.
func describeDial(n source.Names, endpoint string, timeout time.Duration, err error, secrets ...string) error {
	op := "stomp connect " + endpoint
	if f, ok := serverError(err); ok {
		// The stomp.Error is not wrapped: its text may hold a secret.
		return source.LoginRefused(n, op, frameText(f), nil, secrets...)
	}
	return source.ExplainDial(n, op, timeout, err)
}
