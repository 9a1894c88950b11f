package amqpsrc

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Limits of Config, and the defaults of the protocol's own timeouts (not
// config keys).
const (
	DefaultAttachTimeout = 15 * time.Second
	DefaultSettleTimeout = 5 * time.Second

	// The platform accepts an idle-time-out of 30 s to 300 s in the Open
	// frame; go-amqp advertises half of ConnOptions.IdleTimeout.
	MinAdvertisedIdle = 30 * time.Second
	MaxAdvertisedIdle = 300 * time.Second

	// MaxConnections is the platform's limit of clients per consumer group.
	MaxConnections = 64
	// MaxCredit bounds the link credit (messages the platform may push
	// before the bridge settles any).
	MaxCredit = 10000
)

// Config configures a Source. Every config value is required and taken as
// it is: the defaults live in config.Default(), and the wiring fills every
// field from the config. Only the protocol's own timeouts (AttachTimeout,
// SettleTimeout), Clock, Logger, Vhost and SilenceTimeout may be left zero.
type Config struct {
	// Endpoint is host:port of the AMQPS listener.
	Endpoint string
	// TLS are the TLS settings. TLS is always on.
	TLS source.TLSOptions
	// Params returns the signing inputs. It is called on every dial, so the
	// signature is always fresh and a rotated secret or STS token is picked
	// up; ClientID is the base id (see Connections). Required.
	Params func() (iotauth.Params, error)
	// Clock is the time used to sign; nil is time.Now.
	Clock func() time.Time
	// Connections is the number of connections (slots), 1 to 64.
	// With more than one, connection i uses client id "<ClientID>-<i>".
	Connections int
	// Address is the link source address; the
	// platform ignores it, RabbitMQ needs a real one.
	Address string
	// Credit is the link credit: at most this many deliveries per connection are unsettled at once, which is
	// the pipeline's backpressure.
	Credit int
	// IdleTimeout is go-amqp's idle timeout.
	// go-amqp advertises half of it in the Open frame, and
	// the platform accepts 30s..300s there, so it must be 60s..600s. The
	// server must send a frame within the advertised half (it should every
	// quarter); a connection silent for the advertised half is dropped (with
	// 60s, within about 33 s).
	IdleTimeout time.Duration
	// AttachTimeout bounds session begin plus receiver attach after the
	// login (the platform drops a connection without a receiver after 15s).
	// Default 15s.
	AttachTimeout time.Duration
	// DialTimeout bounds TCP, TLS and the SASL login.
	DialTimeout time.Duration
	// Vhost is the AMQP Open hostname; RabbitMQ
	// selects a vhost with "vhost:NAME". "" sends the endpoint host.
	Vhost string
	// Limiter bounds connection attempts; share one across every source of
	// one consumer group.
	Limiter *source.AttemptLimiter
	// Logger receives state changes; nil discards.
	Logger *slog.Logger

	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// connection attempts.
	MinBackoff, MaxBackoff time.Duration
	// SettleTimeout bounds one accept or release (default 5s; the
	// platform's ACK timeout is 30s).
	SettleTimeout time.Duration

	// SilenceTimeout, when > 0, replaces the silence after which a
	// connection is dropped (default: the idle-time-out the bridge
	// advertises, IdleTimeout/2). Not a config key: tests use it.
	SilenceTimeout time.Duration

	// Names are what the operator calls the fields (the wiring gives the
	// config keys); errors and log lines name fields with it. nil shows
	// "Config.<Field>".
	Names source.Names
}

// silenceLimit is how long a connection may stay silent: the idle-time-out
// the bridge advertises (go-amqp sends IdleTimeout/2), within which the
// server must send a frame; the specification asks it to send one every
// half of that.
func (cfg Config) silenceLimit() time.Duration {
	if cfg.SilenceTimeout > 0 {
		return cfg.SilenceTimeout
	}
	return cfg.IdleTimeout / 2
}

// checked returns cfg, with the protocol's own timeouts (AttachTimeout,
// SettleTimeout: not config keys) at their defaults when zero, a discarding
// Logger and time.Now for nil ones, or every problem at once, each a
// *source.FieldError named by cfg.Names. Every config value is taken as it
// is: the defaults live in config.Default().
func (cfg Config) checked() (Config, error) {
	var errs []error
	n := cfg.Names
	bad := func(f source.Field, format string, args ...any) { errs = append(errs, n.Bad(f, format, args...)) }

	if err := source.CheckEndpoint(cfg.Endpoint, n); err != nil {
		errs = append(errs, err)
	}
	if cfg.Params == nil {
		bad(source.FieldParams, "amqpsrc.Config.Params is required")
	}
	if cfg.Connections < 1 || cfg.Connections > MaxConnections {
		bad(source.FieldConnections, "%d is out of range: use 1 to %d (the platform allows %d clients per consumer group)",
			cfg.Connections, MaxConnections, MaxConnections)
	}
	if cfg.Address == "" {
		bad(source.FieldAddress, "is required (the platform ignores it; RabbitMQ needs a queue)")
	}
	if cfg.Credit < 1 || cfg.Credit > MaxCredit {
		bad(source.FieldCredit, "%d is out of range: use 1 to %d", cfg.Credit, MaxCredit)
	}
	if adv := cfg.IdleTimeout / 2; adv < MinAdvertisedIdle || adv > MaxAdvertisedIdle {
		bad(source.FieldIdleTimeout, "%s would advertise %s in the AMQP Open frame (go-amqp sends half), "+
			"but the platform accepts %s to %s: use %s to %s",
			cfg.IdleTimeout, adv, MinAdvertisedIdle, MaxAdvertisedIdle, 2*MinAdvertisedIdle, 2*MaxAdvertisedIdle)
	}
	positive := func(d *time.Duration, f source.Field) {
		if *d <= 0 {
			bad(f, "%s must be positive", *d)
		}
	}
	own := func(d *time.Duration, def time.Duration, f source.Field) {
		if *d == 0 {
			*d = def
		}
		positive(d, f)
	}
	own(&cfg.AttachTimeout, DefaultAttachTimeout, source.FieldAttachTimeout)
	own(&cfg.SettleTimeout, DefaultSettleTimeout, source.FieldSettleTimeout)
	positive(&cfg.DialTimeout, source.FieldDialTimeout)
	positive(&cfg.MinBackoff, source.FieldMinBackoff)
	positive(&cfg.MaxBackoff, source.FieldMaxBackoff)
	if cfg.MaxBackoff < cfg.MinBackoff {
		bad(source.FieldMaxBackoff, "%s is less than %s %s", cfg.MaxBackoff, n.Of(source.FieldMinBackoff), cfg.MinBackoff)
	}
	if cfg.Limiter == nil {
		bad(source.FieldLimiter, "no attempt limiter (amqpsrc.Config.Limiter is nil)")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, errors.Join(errs...)
}

// tlsConfig builds the client TLS config for the endpoint's host.
func (cfg Config) tlsConfig() (*tls.Config, error) {
	host, _, err := net.SplitHostPort(cfg.Endpoint)
	if err != nil {
		return nil, cfg.Names.Bad(source.FieldEndpoint, "%w", err)
	}
	return cfg.TLS.TLSConfig(host, cfg.Names)
}
