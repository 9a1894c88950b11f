package stompsrc

import (
	"net"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// Ack modes (Config.Ack).
const (
	AckAuto             = "auto"
	AckClientIndividual = "client-individual"
)

// Config configures a Source: the settings every source has
// (source.Settings) and STOMP's own. Every field but Host, Clock and Logger
// is required and taken as it is: the defaults live in config.Default(), and
// the wiring fills every field from the config. Params.EncodeBase64 is set
// from this Config.
type Config struct {
	source.Settings
	// Destination is the SUBSCRIBE destination (the platform's: "/topic/#").
	Destination string
	// Ack is AckAuto or AckClientIndividual.
	Ack string
	// EncodeBase64 asks the platform to base64 every body (encode=base64 in
	// the username); bodies are decoded on arrival.
	EncodeBase64 bool
	// Host is the STOMP host header; "" means the endpoint's host.
	Host string
	// HeartBeat is the interval of heart-beats asked of the server, at
	// least source.MinHeartBeat; 0 disables heart-beats. The client sends
	// none.
	HeartBeat time.Duration
	// CheckInterval is the period of the connection check.
	CheckInterval time.Duration
	// ReadGather is the pause of a connection's reads while messages arrive
	// densely (see internal/gatherconn); 0 reads each message at once.
	ReadGather time.Duration
}

// checked returns cfg, with a discarding Logger and time.Now for nil ones,
// or every problem at once, each a *source.FieldError named by cfg.Names.
// It does no I/O.
func (cfg Config) checked() (Config, error) {
	p := cfg.Names.Problems()
	cfg.Settings = cfg.Settings.Check(p)
	if cfg.Destination == "" {
		p.Bad(source.FieldDestination, "is required (the platform's is /topic/#)")
	}
	switch cfg.Ack {
	case AckAuto, AckClientIndividual:
	default:
		p.Bad(source.FieldAck, "%q is not supported: use %s or %s", cfg.Ack, AckAuto, AckClientIndividual)
	}
	if err := source.CheckHeartBeat(cfg.HeartBeat); err != nil {
		p.Bad(source.FieldHeartBeat, "%v", err)
	}
	if cfg.CheckInterval <= 0 {
		p.Bad(source.FieldCheckInterval, "must be positive, got %s", cfg.CheckInterval)
	}
	return cfg, p.Err()
}

// host returns the STOMP host header value.
func (cfg Config) host() string {
	if cfg.Host != "" {
		return cfg.Host
	}
	h, _, _ := net.SplitHostPort(cfg.Endpoint)
	return h
}
