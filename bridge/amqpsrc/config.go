package amqpsrc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Defaults and limits of Config.
const (
	DefaultPort          = "5671"
	DefaultAddress       = "default"
	DefaultCredit        = 64
	DefaultIdleTimeout   = 60 * time.Second
	DefaultAttachTimeout = 15 * time.Second
	DefaultDialTimeout   = 15 * time.Second
	DefaultSettleTimeout = 5 * time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute

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

// Config configures a Source. The zero value of every optional field takes
// its default; New fills them in and checks the rest.
type Config struct {
	// Endpoint is host:port of the AMQPS listener; a bare host gets port
	// 5671 (config key source.endpoint).
	Endpoint string
	// TLS are the source.tls.* settings. TLS is always on.
	TLS source.TLSOptions
	// Params returns the signing inputs. It is called on every dial, so the
	// signature is always fresh and a rotated secret or STS token is picked
	// up; ClientID is the base id (see Connections). Required.
	Params func() (iotauth.Params, error)
	// Clock is the time used to sign; nil is time.Now.
	Clock func() time.Time
	// Connections is the number of connections (slots), 1 to 64; 0 means 1.
	// With more than one, connection i uses client id "<ClientID>-<i>".
	Connections int
	// Address is the link source address (source.amqp.address); the
	// platform ignores it, RabbitMQ needs a real one. Default "default".
	Address string
	// Credit is the link credit (source.amqp.credit), default 64: at most
	// this many deliveries per connection are unsettled at once, which is
	// the pipeline's backpressure.
	Credit int
	// IdleTimeout is go-amqp's idle timeout (source.amqp.idle_timeout),
	// default 60s. go-amqp advertises half of it in the Open frame, and
	// the platform accepts 30s..300s there, so it must be 60s..600s. The
	// server must send a frame within the advertised half (it should every
	// quarter); a connection silent for the advertised half is dropped, so
	// the default finds a silent connection within about 33 s.
	IdleTimeout time.Duration
	// AttachTimeout bounds session begin plus receiver attach after the
	// login (the platform drops a connection without a receiver after 15s).
	// Default 15s.
	AttachTimeout time.Duration
	// DialTimeout bounds TCP, TLS and the SASL login (source.dial_timeout).
	// Default 15s.
	DialTimeout time.Duration
	// Vhost is the AMQP Open hostname (source.amqp.vhost); RabbitMQ
	// selects a vhost with "vhost:NAME". "" sends the endpoint host.
	Vhost string
	// Limiter bounds connection attempts; share one across every source of
	// one consumer group. nil means 100 per minute.
	Limiter *source.AttemptLimiter
	// Logger receives state changes; nil discards.
	Logger *slog.Logger

	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// connection attempts (source.reconnect_min_backoff, _max_backoff).
	// Defaults 1s and 1m.
	MinBackoff, MaxBackoff time.Duration
	// SettleTimeout bounds one accept or release (default 5s; the
	// platform's ACK timeout is 30s).
	SettleTimeout time.Duration

	// SilenceTimeout, when > 0, replaces the silence after which a
	// connection is dropped (default: the idle-time-out the bridge
	// advertises, IdleTimeout/2). Not a config key: tests use it.
	SilenceTimeout time.Duration
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

// withDefaults returns cfg with every zero optional field set and checks it.
// Every problem is reported at once, each naming its config key.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if cfg.Endpoint == "" {
		bad("source.endpoint: is required (host or host:port of the AMQP endpoint)")
	} else {
		host, port, err := net.SplitHostPort(cfg.Endpoint)
		if err != nil {
			host, port = cfg.Endpoint, DefaultPort
		}
		if host == "" {
			bad("source.endpoint: %q has no host", cfg.Endpoint)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad("source.endpoint: %q has an invalid port", cfg.Endpoint)
		}
		cfg.Endpoint = net.JoinHostPort(host, port)
	}
	if cfg.Params == nil {
		bad("source.credentials: amqpsrc.Config.Params is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	switch {
	case cfg.Connections == 0:
		cfg.Connections = 1
	case cfg.Connections < 0 || cfg.Connections > MaxConnections:
		bad("source.connections: %d is out of range: use 1 to %d (the platform allows %d clients per consumer group)",
			cfg.Connections, MaxConnections, MaxConnections)
	}
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	switch {
	case cfg.Credit == 0:
		cfg.Credit = DefaultCredit
	case cfg.Credit < 0 || cfg.Credit > MaxCredit:
		bad("source.amqp.credit: %d is out of range: use 1 to %d", cfg.Credit, MaxCredit)
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if adv := cfg.IdleTimeout / 2; adv < MinAdvertisedIdle || adv > MaxAdvertisedIdle {
		bad("source.amqp.idle_timeout: %s would advertise %s in the AMQP Open frame (go-amqp sends half), "+
			"but the platform accepts %s to %s: use %s to %s",
			cfg.IdleTimeout, adv, MinAdvertisedIdle, MaxAdvertisedIdle, 2*MinAdvertisedIdle, 2*MaxAdvertisedIdle)
	}
	positive := func(d *time.Duration, def time.Duration, key string) {
		switch {
		case *d == 0:
			*d = def
		case *d < 0:
			bad("%s: %s must be positive", key, *d)
		}
	}
	positive(&cfg.AttachTimeout, DefaultAttachTimeout, "source.amqp.attach_timeout")
	positive(&cfg.DialTimeout, DefaultDialTimeout, "source.dial_timeout")
	positive(&cfg.SettleTimeout, DefaultSettleTimeout, "source.amqp.settle_timeout")
	positive(&cfg.MinBackoff, DefaultMinBackoff, "source.reconnect_min_backoff")
	positive(&cfg.MaxBackoff, DefaultMaxBackoff, "source.reconnect_max_backoff")
	if cfg.MaxBackoff < cfg.MinBackoff {
		bad("source.reconnect_max_backoff: %s is less than source.reconnect_min_backoff %s", cfg.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Limiter == nil {
		cfg.Limiter = source.NewAttemptLimiter(100, time.Minute)
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
		return nil, fmt.Errorf("source.endpoint: %w", err)
	}
	return cfg.TLS.TLSConfig(host)
}

// clientID returns the client id of slot i: the base id when there is one
// connection, "<base>-<i>" otherwise.
func clientID(base string, i, n int) string {
	if n <= 1 {
		return base
	}
	return base + "-" + strconv.Itoa(i)
}
