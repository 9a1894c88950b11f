package amqpsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// linkCloseTimeout bounds the receiver's detach: RabbitMQ 3.x never answers
// a closing detach, and the connection close that follows ends the link
// anyway.
const linkCloseTimeout = 2 * time.Second

// dialer opens real connections.
type dialer struct {
	cfg Config
	tls *tls.Config
}

// dial signs afresh, connects TCP and TLS, logs in with SASL PLAIN (all
// within DialTimeout), then begins a session and attaches one receiver
// (within AttachTimeout). On any failure nothing stays open. Errors say
// which step failed and what to check; they never hold a secret.
func (d *dialer) dial(ctx context.Context, _ int, id string) (connection, error) {
	cfg := d.cfg
	p, err := cfg.Params()
	if err != nil {
		return nil, fmt.Errorf("amqp connect as %s: read credentials: %w", id, err)
	}
	p.ClientID = id
	creds, err := iotauth.Sign(p, cfg.Clock())
	if err != nil {
		return nil, fmt.Errorf("amqp connect as %s: sign the login: %w (%w)", id, err, source.ErrFatal)
	}

	cfg.TLS.WarnIfInsecure(cfg.Logger, cfg.Names, id, cfg.Endpoint)
	cfg.Logger.Debug("amqp dialling", "conn", id, "endpoint", cfg.Endpoint,
		"username", iotauth.RedactUsername(creds.Username)) // the username holds no secret once redacted

	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := source.DialTLS(dctx, cfg.Endpoint, d.tls)
	if err != nil {
		return nil, explainDial(cfg, id, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Endpoint)
	hostname := cfg.Vhost
	if hostname == "" {
		hostname = host
	}
	// The watch sees every byte go-amqp reads: a silent connection is
	// dropped after the idle-time-out the bridge advertises (half of
	// IdleTimeout), not after go-amqp's IdleTimeout.
	hw := newHoldWriter(nc)
	rw := newReadWatch(hw, cfg.silenceLimit(), cfg.Names.Of(source.FieldIdleTimeout))
	conn, err := amqp.NewConn(dctx, rw, &amqp.ConnOptions{
		SASLType:    amqp.SASLTypePlain(creds.Username, creds.Password),
		IdleTimeout: cfg.IdleTimeout,
		HostName:    hostname,
	})
	if err != nil {
		_ = nc.Close()
		return nil, explainLogin(cfg, id, err)
	}

	c := &amqpConn{net: nc, conn: conn, watch: rw, hold: hw}
	go rw.watch(conn.Done())
	actx, cancelAttach := context.WithTimeout(ctx, cfg.AttachTimeout)
	defer cancelAttach()
	c.sess, err = conn.NewSession(actx, nil)
	if err == nil {
		// Credit -1: manual credit, issued by Source.awaitCredit.
		c.rcv, err = c.sess.NewReceiver(actx, cfg.Address, &amqp.ReceiverOptions{Credit: -1})
	}
	if err != nil {
		// The broker may hold a half-attached receiver (a consumer): drop
		// the socket so that it forgets it.
		c.Abort()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("amqp attach receiver to %q as %s: %w; check %s "+
			"and that the consumer group is subscribed (the platform drops a connection without a receiver after 15s)",
			cfg.Address, id, err, cfg.Names.Of(source.FieldAddress))
	}
	return c, nil
}

// explainDial turns a TCP or TLS failure into an error naming what to check
// (source.ExplainDial).
func explainDial(cfg Config, id string, err error) error {
	return source.ExplainDial(cfg.Names, fmt.Sprintf("amqp connect to %s as %s", cfg.Endpoint, id), cfg.DialTimeout, err)
}

// explainLogin turns an AMQP open or SASL failure into an error naming what
// to check.
func explainLogin(cfg Config, id string, err error) error {
	op := fmt.Sprintf("amqp login to %s as %s", cfg.Endpoint, id)
	// go-amqp reports a SASL failure as untyped text; this is the one place
	// that reads it, and the error it returns is typed (ErrLoginRefused).
	if strings.Contains(err.Error(), "throttled") {
		return fmt.Errorf("%s: %w: %w; the consumer group made too many connection attempts "+
			"(the platform allows 100 a minute per group, across every client): lower %s "+
			"so that the bridges of the group share that budget", op, bridge.ErrLoginRefused, err, cfg.Names.Of(source.FieldLimiter))
	}
	if strings.Contains(err.Error(), "SASL") {
		return source.LoginRefused(cfg.Names, op, "", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return source.ExplainDial(cfg.Names, op, cfg.DialTimeout, err)
	}
	return fmt.Errorf("amqp open to %s as %s: %w; check %s and %s",
		cfg.Endpoint, id, err, cfg.Names.Of(source.FieldEndpoint), cfg.Names.Of(source.FieldIdleTimeout))
}

// explainLoss describes why an established connection ended.
func explainLoss(err error) error {
	if err == nil {
		return errors.New("the link ended without an error")
	}
	var ce *amqp.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return fmt.Errorf("closed by the server: %w", err)
	}
	var le *amqp.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return fmt.Errorf("receiver detached by the server: %w", err)
	}
	return err
}

// amqpConn is a go-amqp connection with its session and receiver. It owns
// the socket, so a close that the peer does not answer can be forced.
type amqpConn struct {
	net   net.Conn
	watch *readWatch
	hold  *holdWriter
	conn  *amqp.Conn
	sess  *amqp.Session
	rcv   *amqp.Receiver
}

func (c *amqpConn) Receive(ctx context.Context) (*amqp.Message, error) {
	return c.rcv.Receive(ctx, nil)
}

func (c *amqpConn) Accept(ctx context.Context, m *amqp.Message) error {
	return c.rcv.AcceptMessage(ctx, m)
}

func (c *amqpConn) Release(ctx context.Context, m *amqp.Message) error {
	return c.rcv.ReleaseMessage(ctx, m)
}

func (c *amqpConn) Hold()                      { c.hold.Hold() }
func (c *amqpConn) Flush() error               { return c.hold.Flush() }
func (c *amqpConn) IssueCredit(n uint32) error { return c.rcv.IssueCredit(n) }
func (c *amqpConn) Done() <-chan struct{}      { return c.conn.Done() }
func (c *amqpConn) Err() error                 { return c.watch.cause(c.conn.Err()) }

// Abort closes the socket first, then lets go-amqp wind down (it finds the
// socket closed and returns at once).
func (c *amqpConn) Abort() {
	_ = c.net.Close()
	_ = c.conn.Close()
}

// Close releases the messages the receiver prefetched but nobody received,
// detaches the receiver (at most linkCloseTimeout), ends the session and
// closes the connection, all within ctx; past ctx's deadline it closes the
// socket. It returns ctx's error when it had to force.
func (c *amqpConn) Close(ctx context.Context) error {
	select {
	case <-c.conn.Done():
	default:
		if c.rcv != nil {
			for m := c.rcv.Prefetched(); m != nil && ctx.Err() == nil; m = c.rcv.Prefetched() {
				_ = c.rcv.ReleaseMessage(ctx, m)
			}
			lctx, cancel := context.WithTimeout(ctx, linkCloseTimeout)
			_ = c.rcv.Close(lctx)
			cancel()
		}
		if c.sess != nil {
			_ = c.sess.Close(ctx)
		}
	}
	done := make(chan struct{})
	go func() {
		_ = c.conn.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		_ = c.net.Close()
		<-done
		return ctx.Err()
	}
}
