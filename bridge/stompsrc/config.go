package stompsrc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Ack modes (Config.Ack).
const (
	AckAuto             = "auto"
	AckClientIndividual = "client-individual"
)

// Config configures a Source. Every field but Host, Clock and Logger is
// required and taken as it is: the defaults live in config.Default(), and
// the wiring fills every field from the config.
type Config struct {
	// Endpoint is host:port.
	Endpoint string
	TLS      source.TLSOptions
	// Params returns the signing parameters. It is called on every dial, so
	// that every CONNECT is signed afresh and rotated secrets take effect.
	// Params.ClientID is the base client id; EncodeBase64 is set from this
	// Config. It must be safe for concurrent use.
	Params func() (iotauth.Params, error)
	// Clock is the time used for signing; nil means time.Now.
	Clock func() time.Time
	// Connections is the number of connections (slots), >= 1. With more
	// than one, connection i uses client id "<ClientID>-<i>".
	Connections int
	// Destination is the SUBSCRIBE destination (the platform's: "/topic/#").
	Destination string
	// Ack is AckAuto or AckClientIndividual.
	Ack string
	// EncodeBase64 asks the platform to base64 every body (encode=base64 in
	// the username); bodies are decoded on arrival.
	EncodeBase64 bool
	// Host is the STOMP host header; "" means the endpoint's host.
	Host string
	// HeartBeat is the interval of heart-beats asked of the server; 0
	// disables heart-beats. The client sends none.
	HeartBeat time.Duration
	// CheckInterval is the period of the connection check.
	CheckInterval time.Duration
	// ReadGather is the pause of a connection's reads while messages arrive
	// densely (see internal/gatherconn); 0 reads each message at once.
	ReadGather time.Duration
	// DialTimeout bounds TCP connect, TLS handshake and the STOMP CONNECT
	// exchange together.
	DialTimeout time.Duration
	// Limiter bounds connection attempts; share one across the connections
	// of a consumer group.
	Limiter *source.AttemptLimiter
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// connection attempts (reset after a stable minute).
	MinBackoff, MaxBackoff time.Duration
	// Names are what the operator calls the fields (the wiring gives the
	// config keys); errors and log lines name fields with it. nil shows
	// "Config.<Field>".
	Names source.Names
}

// checked returns cfg, with a discarding Logger and time.Now for nil ones,
// or every problem at once, each a *source.FieldError named by cfg.Names.
// It does no I/O.
func (cfg Config) checked() (Config, error) {
	var errs []error
	n := cfg.Names
	bad := func(f source.Field, format string, args ...any) {
		errs = append(errs, n.Bad(f, format, args...))
	}
	if err := source.CheckEndpoint(cfg.Endpoint, n); err != nil {
		errs = append(errs, err)
	}
	if cfg.Params == nil {
		bad(source.FieldParams, "no signing parameters (Config.Params is nil)")
	}
	if cfg.Connections < 1 {
		bad(source.FieldConnections, "must be at least 1, got %d", cfg.Connections)
	}
	if cfg.Destination == "" {
		bad(source.FieldDestination, "is required (the platform's is /topic/#)")
	}
	switch cfg.Ack {
	case AckAuto, AckClientIndividual:
	default:
		bad(source.FieldAck, "%q is not supported: use %s or %s", cfg.Ack, AckAuto, AckClientIndividual)
	}
	if cfg.HeartBeat < 0 || (cfg.HeartBeat > 0 && cfg.HeartBeat < time.Millisecond) {
		bad(source.FieldHeartBeat, "must be 0 (off) or at least 1ms, got %s", cfg.HeartBeat)
	}
	if cfg.CheckInterval <= 0 {
		bad(source.FieldCheckInterval, "must be positive, got %s", cfg.CheckInterval)
	}
	if cfg.DialTimeout <= 0 {
		bad(source.FieldDialTimeout, "must be positive, got %s", cfg.DialTimeout)
	}
	if cfg.MinBackoff <= 0 || cfg.MaxBackoff < cfg.MinBackoff {
		bad(source.FieldMinBackoff, "and %s must be positive and in order, got %s and %s",
			n.Of(source.FieldMaxBackoff), cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.Limiter == nil {
		bad(source.FieldLimiter, "no attempt limiter (Config.Limiter is nil)")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := errors.Join(errs...); err != nil {
		return cfg, fmt.Errorf("stomp source config: %w", err)
	}
	return cfg, nil
}

// host returns the STOMP host header value.
func (cfg Config) host() string {
	if cfg.Host != "" {
		return cfg.Host
	}
	h, _, _ := net.SplitHostPort(cfg.Endpoint)
	return h
}
