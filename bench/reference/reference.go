// Package reference is the benchmark's stand-in for what users run today: a
// forwarder written like the IoT Platform's official STOMP sample and the MNS
// SDK samples. It is NOT part of the product. It subscribes
// with ack auto (messages count as delivered when they are pushed), and for
// each message, one after the other, makes one SendMessage request to MNS
// and only then reads the next message. No batching, no concurrency, no
// retry: a failed send is counted and the message is gone.
//
// The harness in bench/ runs it against the same simulator and emulator as
// the bridge to report the bridge's throughput as a multiple of it.
package reference

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// Config is what the forwarder needs.
type Config struct {
	// Addr is the STOMP-over-TLS endpoint, host:port.
	Addr string
	// TLS is the client TLS config (with the simulator's CA).
	TLS *tls.Config
	// Params sign the login; the forwarder signs once per connection.
	Params iotauth.Params
	// MNS is the client used for SendMessage, one message per request.
	MNS *mns.Client
	// Queue receives every message.
	Queue string
}

// Stats count what the forwarder did. Safe to read while Run runs.
type Stats struct {
	Received, Sent, Failed atomic.Int64
}

// Run connects, subscribes to /topic/# with ack auto and forwards messages
// one at a time until ctx is done or the connection fails. It blocks; it
// returns nil when ctx ends it. Messages pushed but not yet forwarded when
// it returns are lost, as they are with the sample.
func Run(ctx context.Context, cfg Config, st *Stats) error {
	creds, err := iotauth.Sign(cfg.Params, time.Now())
	if err != nil {
		return fmt.Errorf("reference: sign: %w", err)
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	raw, err := d.DialContext(dctx, "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("reference: dial %s: %w", cfg.Addr, err)
	}
	tc := tls.Client(raw, cfg.TLS)
	if err := tc.HandshakeContext(dctx); err != nil {
		raw.Close()
		return fmt.Errorf("reference: TLS handshake with %s: %w", cfg.Addr, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Addr)
	conn, err := stomp.Connect(tc, stomp.ConnOpt.Login(creds.Username, creds.Password), stomp.ConnOpt.Host(host),
		stomp.ConnOpt.HeartBeat(0, 0), stomp.ConnOpt.DisconnectReceiptTimeout(2*time.Second))
	if err != nil {
		tc.Close()
		return fmt.Errorf("reference: STOMP CONNECT to %s: %w", cfg.Addr, err)
	}
	defer func() { _ = conn.Disconnect() }()
	sub, err := conn.Subscribe("/topic/#", stomp.AckAuto)
	if err != nil {
		return fmt.Errorf("reference: SUBSCRIBE: %w", err)
	}
	for {
		var msg *stomp.Message
		select {
		case <-ctx.Done():
			return nil
		case msg = <-sub.C:
		}
		if msg == nil {
			return errors.New("reference: subscription closed")
		}
		if msg.Err != nil {
			return fmt.Errorf("reference: receive: %w", msg.Err)
		}
		st.Received.Add(1)
		if _, err := cfg.MNS.SendMessage(ctx, cfg.Queue, msg.Body); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			st.Failed.Add(1)
			continue
		}
		st.Sent.Add(1)
	}
}
