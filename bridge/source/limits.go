package source

import "time"

// The platform's TLS ports: where an endpoint without a port connects
// (config's Source.Address) and what an error about a port names.
const (
	STOMPPort = "61614"
	AMQPPort  = "5671"
)

// Bounds of the Fields' values: the platform's limits and the protocols'
// own. They live here, beside the Fields, as the one copy that both sides
// read: a protocol's Config check (stompsrc, amqpsrc) and config.Validate,
// which reports them at the config key and cannot import the protocol
// packages (their tests build Configs from config.Default()).
const (
	// MaxConnections is the platform's limit of clients per consumer group
	// (FieldConnections, every protocol).
	MaxConnections = 64
	// MaxAttemptsPerMinute is the platform's limit of connection attempts a
	// minute per consumer group, across every client (FieldLimiter): the
	// platform refuses ("throttled") the attempts above it.
	MaxAttemptsPerMinute = 100

	// MinHeartBeat is the shortest STOMP heart-beat (FieldHeartBeat) other
	// than 0 (off): the heart-beat header counts milliseconds.
	MinHeartBeat = time.Millisecond

	// MaxCredit bounds the AMQP link credit (FieldCredit): the messages the
	// platform may push on one connection before the bridge settles any.
	MaxCredit = 10000
	// MinAdvertisedIdle and MaxAdvertisedIdle are the idle-time-outs the
	// platform accepts in the AMQP Open frame. The bridge advertises half of
	// its IdleTimeout (FieldIdleTimeout), which must therefore be
	// MinIdleTimeout to MaxIdleTimeout.
	MinAdvertisedIdle = 30 * time.Second
	MaxAdvertisedIdle = 300 * time.Second
	MinIdleTimeout    = 2 * MinAdvertisedIdle
	MaxIdleTimeout    = 2 * MaxAdvertisedIdle
)
