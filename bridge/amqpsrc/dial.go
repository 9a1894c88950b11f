package amqpsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

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
	p, creds, err := cfg.Login("amqp connect", id, nil)
	if err != nil {
		return nil, err
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
	// The watch sees every byte the client reads: a silent connection is
	// dropped after the idle-time-out the bridge advertises (half of
	// IdleTimeout).
	rw := newReadWatch(nc, cfg.silenceLimit(), cfg.Names.Of(source.FieldIdleTimeout))
	rcv, err := amqp10.Dial(dctx, rw, amqp10.ReceiverConfig{
		ContainerID: id,
		Hostname:    hostname,
		Username:    creds.Username,
		Password:    creds.Password,
		IdleTimeout: cfg.IdleTimeout / 2,
		Prefetch:    cfg.Credit,
		// A server that takes no bytes for as long as it may stay silent
		// is as dead as a silent one.
		WriteTimeout: cfg.silenceLimit(),
	})
	if err != nil {
		return nil, cfg.Refusal(p, explainLogin(cfg, id, err))
	}

	actx, cancelAttach := context.WithTimeout(ctx, cfg.AttachTimeout)
	defer cancelAttach()
	// The broker may hold a half-attached receiver (a consumer): a failed
	// attach drops the socket so that it forgets it.
	if err := rcv.Attach(actx, cfg.Address); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, explainAttach(cfg, id, err)
	}
	c := &amqpConn{rcv: rcv, watch: rw}
	go rw.watch(rcv.Done())
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
	var sasl *amqp10.SASLError
	if errors.As(err, &sasl) {
		switch {
		case strings.Contains(string(sasl.AdditionalData), "throttled"):
			return fmt.Errorf("%s: %w: %w; %s", op, bridge.ErrLoginRefused, err, source.ThrottledAdvice(cfg.Names))
		case sasl.ServerFault():
			return fmt.Errorf("%s: %w: %w; %s", op, bridge.ErrLoginRefused, err, saslSystemAdvice(cfg, sasl.Code))
		}
		if sasl.Code == amqp10.SASLAuth && source.NamesOtherCause(string(sasl.AdditionalData)) {
			// The platform answers a full consumer group (9600) and others
			// with SASL auth: its text, not AMQP's "the server refused the
			// credentials", says what is wrong.
			err = &bareSASL{err: err, sasl: sasl}
		}
		return source.LoginRefused(cfg.Names, op, "", err)
	}
	// The socket's deadline is the dial's (amqp10.Dial sets it from ctx):
	// when it fires before the context's timer, the read's i/o timeout
	// comes back instead of the context's error. The dial timeout bounds
	// the connect and the login alike: a login it cut short is the
	// connect's failure, in the same words whatever step it cut.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return explainDial(cfg, id, err)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// A hang-up before any answer: a STOMP port, most likely.
		return source.ExplainDial(cfg.Names, fmt.Sprintf("amqp open to %s as %s", cfg.Endpoint, id), cfg.DialTimeout, err)
	}
	return fmt.Errorf("amqp open to %s as %s: %w; check %s and %s",
		cfg.Endpoint, id, err, cfg.Names.Of(source.FieldEndpoint), cfg.Names.Of(source.FieldIdleTimeout))
}

// saslSystemAdvice tells the operator what to do about a login the server
// refused for its own system error (SASL outcome sys, sys-perm or
// sys-temp, AMQP 1.0 part 5, 5.3.3.6): the credentials are not the cause.
func saslSystemAdvice(cfg Config, code uint8) string {
	instance, group := cfg.Names.Of(source.FieldIotInstanceID), cfg.Names.Of(source.FieldConsumerGroupID)
	switch code {
	case amqp10.SASLSysTemp:
		return "the server had a transient system error: the bridge logs in again with back-off; " +
			"nothing to change unless it persists, then check the IoT Platform's status for the instance in " + instance
	case amqp10.SASLSysPerm:
		return "the server has a system error that will not clear without intervention: the bridge keeps " +
			"logging in with back-off, but the IoT Platform must fix it: report it to Alibaba Cloud support " +
			"with the instance in " + instance + " and the consumer group in " + group
	}
	return "the server failed with a system error it did not name: the bridge logs in again with back-off; " +
		"if it persists, check the IoT Platform's status for the instance in " + instance +
		" and report it to Alibaba Cloud support"
}

// explainAttach turns a refused receiver attach into an error naming what
// to check: the address and the consumer group's subscription, or, for a
// server that would pre-settle its deliveries, the endpoint (the platform's
// subscription redelivers what is not settled, so it is not the platform).
func explainAttach(cfg Config, id string, err error) error {
	op := fmt.Sprintf("amqp attach receiver to %q as %s", cfg.Address, id)
	if errors.Is(err, amqp10.ErrAtMostOnce) {
		return fmt.Errorf("%s: %w; check %s: it must be the IoT Platform's AMQP subscription endpoint",
			op, err, cfg.Names.Of(source.FieldEndpoint))
	}
	return fmt.Errorf("%s: %w; check %s and that the consumer group is subscribed "+
		"(the platform drops a connection without a receiver after 15s)", op, err, cfg.Names.Of(source.FieldAddress))
}

// explainLoss describes why an established connection ended.
func explainLoss(err error) error {
	if err == nil {
		return errors.New("the link ended without an error")
	}
	var ce *amqp10.ConnError
	if errors.As(err, &ce) && ce.RemoteErr != nil {
		return fmt.Errorf("closed by the server: %w", err)
	}
	var se *amqp10.SessionError
	if errors.As(err, &se) && se.RemoteErr != nil {
		return fmt.Errorf("session ended by the server: %w", err)
	}
	var le *amqp10.LinkError
	if errors.As(err, &le) && le.RemoteErr != nil {
		return fmt.Errorf("receiver detached by the server: %w", err)
	}
	return err
}

// amqpConn is the own AMQP 1.0 client's connection (amqp10.Receiver),
// its reads watched for silence.
type amqpConn struct {
	rcv   *amqp10.Receiver
	watch *readWatch
}

func (c *amqpConn) Receive(ctx context.Context) (*amqp10.Delivery, error) {
	return c.rcv.Receive(ctx)
}

// Accept and Release fail with ctx's error once ctx has ended (the settle
// round took too long); their write is bounded by the client's write
// timeout (see Flush).
func (c *amqpConn) Accept(ctx context.Context, m *amqp10.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.rcv.Accept(m)
}

func (c *amqpConn) Release(ctx context.Context, m *amqp10.Delivery) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.rcv.Release(m)
}

func (c *amqpConn) Hold()                      { c.rcv.Hold() }
func (c *amqpConn) Flush() error               { return c.rcv.Flush() }
func (c *amqpConn) IssueCredit(n uint32) error { return c.rcv.IssueCredit(n) }
func (c *amqpConn) Done() <-chan struct{}      { return c.rcv.Done() }
func (c *amqpConn) Err() error                 { return c.watch.cause(c.rcv.Err()) }
func (c *amqpConn) Abort()                     { c.rcv.Abort() }

// Close releases the messages received but not taken, detaches the
// receiver, ends the session and closes the connection within ctx; past
// ctx's deadline it closes the socket and returns ctx's error.
func (c *amqpConn) Close(ctx context.Context) error { return c.rcv.Close(ctx) }

func (c *amqpConn) ReleasedAtClose() int { return c.rcv.ReleasedAtClose() }

// bareSASL is a SASL auth refusal whose server text names a cause other
// than the credentials: its text is err's with the SASL error's Bare text
// in place of its Error text; it wraps err.
type bareSASL struct {
	err  error
	sasl *amqp10.SASLError
}

func (e *bareSASL) Error() string {
	return strings.Replace(e.err.Error(), e.sasl.Error(), e.sasl.Bare(), 1)
}

func (e *bareSASL) Unwrap() error { return e.err }
