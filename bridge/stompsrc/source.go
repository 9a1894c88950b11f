// Package stompsrc is the STOMP-over-TLS protocol of the source: it signs,
// connects, logs in and subscribes, reads the next MESSAGE frame as a
// bridge.Delivery, settles and closes. The reconnecting, the slots, the
// backoff and what is fatal are source.Driver's, the same for every
// protocol.
//
// Every dial signs afresh, CONNECTs with heart-beats and SUBSCRIBEs. The
// slot's goroutine reads the frames (wire.go, a reader of our own over
// go-stomp's frame types: liveness, size limits and parsing in one pass)
// and hands each message to the handler, with no goroutine between the
// socket and the pipeline; nothing is read while the handler blocks. A
// timer per connection finds a silent one (heart-beats missed); silence, a
// read error or an ERROR frame fails the link, and the driver redials.
//
// With ack auto the platform settles a message when it sends it: the
// deliveries are the bridge's alone (source.Link.Owned), settling one is a
// no-op, and when intake stops the link sends DISCONNECT and hands over
// what the server sent before its RECEIPT. With ack client-individual,
// Accept sends ACK and Release sends NACK on the connection the message came
// on; if that connection is gone nothing is sent and the platform
// redelivers.
package stompsrc

import (
	"context"
	"crypto/tls"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// ErrClosed is returned (wrapped) by Run after Close.
var ErrClosed = source.ErrClosed

// Source consumes the subscription over Config.Connections connections: a
// source.Driver over STOMP links. It implements bridge.Source and
// bridge.StateReporter. Its methods are safe for concurrent use; Run may be
// called once.
type Source struct {
	*source.Driver
	cfg Config
	tls *tls.Config
	log *slog.Logger

	loggedHeaders atomic.Bool
}

// New checks cfg (see Config: it takes every value as it is). It reads the
// CA file (a CA bundle that cannot be used is a config error: found here,
// once) and calls cfg.Params once to check the signing inputs, but opens no
// connection.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.checked()
	if err != nil {
		return nil, err
	}
	tc, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, tls: tc, log: cfg.Log("stomp")}
	if s.Driver, err = cfg.NewDriver("stomp", s.log, s.dial); err != nil {
		return nil, err
	}
	return s, nil
}

// dial is the driver's source.DialFunc.
func (s *Source) dial(ctx context.Context, _ int, clientID string) (source.Link, error) {
	l, err := dialAs(ctx, s.cfg, s.tls, "stomp connect", clientID, s.log, true)
	if err != nil {
		return nil, err
	}
	l.src = s
	return l, nil
}

// delivery turns a received MESSAGE frame into a delivery settled through l.
func (s *Source) delivery(l *link, f *inFrame) *bridge.Delivery {
	l.received.Add(1)
	if s.loggedHeaders.CompareAndSwap(false, true) {
		s.logHeaders(l, f)
	}
	var msg bridge.Message
	if s.cfg.EncodeBase64 && bridge.IsCanonicalBase64(f.Body) {
		// Checked, not decoded: a sink that writes base64 sends it as it is.
		msg = toMessage(f.Header, f.Body, false)
		msg.Base64 = true
	} else {
		msg = toMessage(f.Header, f.Body, s.cfg.EncodeBase64)
	}
	if l.acks == nil {
		return bridge.NewDelivery(msg, nil, nil)
	}
	// The token keeps what ACK and NACK need, not the frame: a base64 body
	// would otherwise be held twice, encoded and decoded.
	return bridge.NewDelivery(msg, l, ackToken{ack: f.Header.Get(frame.Ack), messageID: f.Header.Get(frame.MessageId)})
}

// logHeaders logs the headers of the first message once: the platform does
// not document which headers it sends.
func (s *Source) logHeaders(l *link, m *inFrame) {
	var b strings.Builder
	for i := 0; m.Header != nil && i < m.Header.Len(); i++ {
		k, v := m.Header.GetAt(i)
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + "=" + strconv.Quote(v))
	}
	l.log.Info("first stomp message received", "headers", b.String(), "body_bytes", len(m.Body))
}

var (
	_ bridge.Source        = (*Source)(nil)
	_ bridge.StateReporter = (*Source)(nil)
	_ bridge.Settler       = (*link)(nil)
	_ source.Link          = (*link)(nil)
)
