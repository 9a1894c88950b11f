package source

import (
	"fmt"
	"time"
)

// The platform's TLS ports: where an endpoint without a port connects
// (config's Source.Address) and what an error about a port names.
const (
	STOMPPort = "61614"
	AMQPPort  = "5671"
)

// Bounds of the Fields' values: the platform's limits and the protocols'
// own. They live here, beside the Fields, with the one check of each
// (CheckConnections and the others below), which both sides call: a
// protocol's Config check (Settings.Check, stompsrc, amqpsrc), which puts the
// Field's name in front, and config.Validate, which puts the config key in
// front and cannot import the protocol packages (their tests build Configs
// from config.Default()).
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

	// ConnectAuthDeadline is the platform's deadline from the TCP connect
	// to a logged-in connection (AMQP: with its receiver link attached): it
	// closes a connection that takes longer. A FieldDialTimeout above it is
	// allowed but never waited out: the platform closes first.
	ConnectAuthDeadline = 15 * time.Second

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

// The checks of the bounds: each returns nil for a value within its bound,
// else the reason, which names no field (the caller puts the field or the
// config key in front) and says what to use.

// CheckConnections checks a number of connections (FieldConnections).
func CheckConnections(n int) error {
	if n < 1 || n > MaxConnections {
		return fmt.Errorf("must be 1 to %d, got %d: the platform allows %d clients per consumer group", MaxConnections, n, MaxConnections)
	}
	return nil
}

// CheckAttemptsPerMinute checks a limit of connection attempts a minute
// (what FieldLimiter is built with).
func CheckAttemptsPerMinute(n int) error {
	if n < 1 || n > MaxAttemptsPerMinute {
		return fmt.Errorf("must be 1 to %d, got %d: the platform refuses more than %d connection "+
			"attempts a minute per consumer group; bridges sharing a group should split that (e.g. 45 each for two)",
			MaxAttemptsPerMinute, n, MaxAttemptsPerMinute)
	}
	return nil
}

// CheckHeartBeat checks a STOMP heart-beat interval (FieldHeartBeat): 0
// (off) or at least MinHeartBeat.
func CheckHeartBeat(d time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("must not be negative, got %s (0 turns heart-beats off)", d)
	case d > 0 && d < MinHeartBeat:
		return fmt.Errorf("must be 0 (off) or at least %s, got %s: the heart-beat header counts milliseconds", MinHeartBeat, d)
	}
	return nil
}

// CheckCredit checks an AMQP link credit (FieldCredit).
func CheckCredit(n int) error {
	if n < 1 || n > MaxCredit {
		return fmt.Errorf("must be 1 to %d, got %d", MaxCredit, n)
	}
	return nil
}

// CheckIdleTimeout checks an AMQP idle-time-out (FieldIdleTimeout): the
// bridge advertises half of it, which the platform must accept.
func CheckIdleTimeout(d time.Duration) error {
	if d < MinIdleTimeout || d > MaxIdleTimeout {
		return fmt.Errorf("must be %gs to %gs, got %s: the bridge advertises half of it in the AMQP Open frame and the platform accepts %gs to %gs",
			MinIdleTimeout.Seconds(), MaxIdleTimeout.Seconds(), d, MinAdvertisedIdle.Seconds(), MaxAdvertisedIdle.Seconds())
	}
	return nil
}
