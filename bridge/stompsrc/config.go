package stompsrc

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Ack modes (config key source.stomp.ack).
const (
	AckAuto             = "auto"
	AckClientIndividual = "client-individual"
)

// Defaults applied by New to zero fields.
const (
	DefaultDestination   = "/topic/#"
	DefaultHeartBeat     = 30 * time.Second
	DefaultCheckInterval = time.Second
	DefaultDialTimeout   = 15 * time.Second
	// DefaultAttemptsPerMinute bounds connection attempts of one consumer
	// group when Config.Limiter is nil.
	DefaultAttemptsPerMinute = 100
)

// Config configures a Source. The zero value of every optional field means
// its default; New fills them in.
type Config struct {
	// Endpoint is host:port (the config layer defaults the port to 61614).
	Endpoint string
	TLS      source.TLSOptions
	// Params returns the signing parameters. It is called on every dial, so
	// that every CONNECT is signed afresh and rotated secrets take effect.
	// Params.ClientID is the base client id; EncodeBase64 is set from this
	// Config. It must be safe for concurrent use.
	Params func() (iotauth.Params, error)
	// Clock is the time used for signing; nil means time.Now.
	Clock func() time.Time
	// Connections is the number of connections (slots), >= 1; 0 means 1.
	// With more than one, connection i uses client id "<ClientID>-<i>".
	Connections int
	// Destination is the SUBSCRIBE destination, default "/topic/#".
	Destination string
	// Ack is AckAuto (default) or AckClientIndividual.
	Ack string
	// EncodeBase64 asks the platform to base64 every body (encode=base64 in
	// the username); bodies are decoded on arrival.
	EncodeBase64 bool
	// Host is the STOMP host header; "" means the endpoint's host.
	Host string
	// HeartBeat is the interval of heart-beats asked of the server; 0
	// disables heart-beats (the config layer defaults it to DefaultHeartBeat).
	// The client sends none.
	HeartBeat time.Duration
	// CheckInterval is the period of the connection check (default 1s).
	CheckInterval time.Duration
	// ReadGather is the pause of a connection's reads while messages arrive
	// densely (see internal/gatherconn); 0 reads each message at once.
	ReadGather time.Duration
	// DialTimeout bounds TCP connect, TLS handshake and the STOMP CONNECT
	// exchange together (default 15s).
	DialTimeout time.Duration
	// Limiter bounds connection attempts; share one across the connections
	// of a consumer group. nil means DefaultAttemptsPerMinute a minute.
	Limiter *source.AttemptLimiter
	Logger  *slog.Logger
	// MinBackoff and MaxBackoff bound the jittered exponential delay between
	// connection attempts (defaults 1s and 1m; reset after a stable minute).
	MinBackoff, MaxBackoff time.Duration
}

// withDefaults returns cfg with defaults filled in, or every problem at once.
// Errors name the config key. It does no I/O.
func (cfg Config) withDefaults() (Config, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if cfg.Endpoint == "" {
		bad("source.endpoint", "is required (host:port of the STOMP endpoint)")
	} else if host, port, err := net.SplitHostPort(cfg.Endpoint); err != nil || host == "" {
		bad("source.endpoint", "%q is not host:port", cfg.Endpoint)
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		bad("source.endpoint", "%q has an invalid port", cfg.Endpoint)
	}
	if cfg.Params == nil {
		bad("source.credentials", "no signing parameters (Config.Params is nil)")
	}
	switch {
	case cfg.Connections == 0:
		cfg.Connections = 1
	case cfg.Connections < 0:
		bad("source.connections", "must be at least 1, got %d", cfg.Connections)
	}
	if cfg.Destination == "" {
		cfg.Destination = DefaultDestination
	}
	switch cfg.Ack {
	case "":
		cfg.Ack = AckAuto
	case AckAuto, AckClientIndividual:
	default:
		bad("source.stomp.ack", "%q is not supported: use %s or %s", cfg.Ack, AckAuto, AckClientIndividual)
	}
	if cfg.HeartBeat < 0 || (cfg.HeartBeat > 0 && cfg.HeartBeat < time.Millisecond) {
		bad("source.stomp.heartbeat", "must be 0 (off) or at least 1ms, got %s", cfg.HeartBeat)
	}
	switch {
	case cfg.CheckInterval == 0:
		cfg.CheckInterval = DefaultCheckInterval
	case cfg.CheckInterval < 0:
		bad("source.stomp.check_interval", "must be positive, got %s", cfg.CheckInterval)
	}
	switch {
	case cfg.DialTimeout == 0:
		cfg.DialTimeout = DefaultDialTimeout
	case cfg.DialTimeout < 0:
		bad("source.dial_timeout", "must be positive, got %s", cfg.DialTimeout)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Limiter == nil {
		cfg.Limiter = source.NewAttemptLimiter(DefaultAttemptsPerMinute, time.Minute)
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
