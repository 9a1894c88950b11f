package amqpsrc

import (
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// The protocol's own timeouts (not config keys). The bounds of the config
// values (credit, idle-time-out, connections) and their checks are source's
// (source.CheckCredit and the others), which config validation calls too.
const (
	DefaultAttachTimeout = 15 * time.Second
	DefaultSettleTimeout = 5 * time.Second
	// DefaultSettleLinger is how long a link's settler lets settlements
	// gather before it writes them (see Config.SettleLinger).
	DefaultSettleLinger = 25 * time.Millisecond
)

// Config configures a Source: the settings every source has
// (source.Settings; TLS is always on) and AMQP's own. Every config value is
// required and taken as it is: the defaults live in config.Default(), and
// the wiring fills every field from the config. Only the protocol's own
// timeouts (AttachTimeout, SettleTimeout), Clock, Logger, Vhost and
// SilenceTimeout may be left zero.
type Config struct {
	source.Settings
	// Address is the link source address; the
	// platform ignores it, RabbitMQ needs a real one.
	Address string
	// Credit is the link credit: at most this many deliveries per connection are unsettled at once, which is
	// the pipeline's backpressure.
	Credit int
	// IdleTimeout is the connection's idle timeout.
	// The bridge advertises half of it in the Open frame, and
	// the platform accepts 30s..300s there, so it must be 60s..600s. The
	// server must send a frame within the advertised half (it should every
	// quarter); a connection silent for the advertised half is dropped (with
	// 60s, within about 33 s).
	IdleTimeout time.Duration
	// AttachTimeout bounds session begin plus receiver attach after the
	// login (the platform drops a connection without a receiver after 15s).
	// Default 15s.
	AttachTimeout time.Duration
	// Vhost is the AMQP Open hostname; RabbitMQ
	// selects a vhost with "vhost:NAME". "" sends the endpoint host.
	Vhost string
	// SettleTimeout bounds one accept or release (default 5s; the
	// platform's ACK timeout is 30s).
	SettleTimeout time.Duration

	// SilenceTimeout, when > 0, replaces the silence after which a
	// connection is dropped (default: the idle-time-out the bridge
	// advertises, IdleTimeout/2). Not a config key: tests use it.
	SilenceTimeout time.Duration
	// SettleLinger, when > 0, replaces DefaultSettleLinger: how long a
	// link's settler lets the settlements of several MNS requests gather
	// before it writes them in one socket write, unless one is awaited
	// (the credit, Close). Not a config key: tests use it.
	SettleLinger time.Duration
	// Now, when set, replaces time.Now for the credit watch
	// (creditwatch.go). Not a config key: tests use it.
	Now func() time.Time
}

// silenceLimit is how long a connection may stay silent: the idle-time-out
// the bridge advertises (IdleTimeout/2), within which the
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
	p := cfg.Names.Problems()
	cfg.Settings = cfg.Settings.Check(p)

	if cfg.Address == "" {
		p.Bad(source.FieldAddress, "is required (the platform ignores it; RabbitMQ needs a queue)")
	}
	if err := source.CheckCredit(cfg.Credit); err != nil {
		p.Bad(source.FieldCredit, "%v", err)
	}
	if err := source.CheckIdleTimeout(cfg.IdleTimeout); err != nil {
		p.Bad(source.FieldIdleTimeout, "%v", err)
	}
	own := func(d *time.Duration, def time.Duration, f source.Field) {
		if *d == 0 {
			*d = def
		}
		if *d <= 0 {
			p.Bad(f, "%s must be positive", *d)
		}
	}
	own(&cfg.AttachTimeout, DefaultAttachTimeout, source.FieldAttachTimeout)
	own(&cfg.SettleTimeout, DefaultSettleTimeout, source.FieldSettleTimeout)
	if cfg.SettleLinger <= 0 {
		cfg.SettleLinger = DefaultSettleLinger
	}
	return cfg, p.Err()
}
