// Package source is the one reconnecting driver of the platform
// subscription's sources: Driver keeps Config.Connections connection slots
// alive (Supervisor: one session at a time per slot, jittered backoff reset
// by a stable connection, the consumer group's AttemptLimiter), hands every
// delivery to the pipeline, keeps links open for the settles of deliveries in
// flight after Run returns, and closes them in Close. It decides, the same
// for every protocol, what is redialled and what is fatal (see Driver), and
// explains dial, TLS and login failures (ExplainDial, LoginRefused). The
// protocols' silence checks tell a pause of this process from a silent
// server by one rule (Paused).
//
// A protocol (bridge/stompsrc, bridge/amqpsrc) brings only what differs: a
// DialFunc that signs, connects, logs in and subscribes, and a Link that
// reads the next delivery, settles and closes. Its Config embeds Settings,
// what every source has (endpoint, TLS, signing inputs, connections,
// timeouts, backoff, limiter, names), which Settings.Check, TLSConfig,
// Login (the one place a login is signed) and NewDriver check and turn into
// the Driver the same way for every protocol. The bounds of the settings
// (limits.go: connections, attempts a minute, credit, idle-time-out,
// heart-beat) are here too, each with its one check (CheckConnections, ...),
// which the protocols and config validation call, each putting its own name
// of the field in front of the reason.
//
// The sources speak of their own Config fields, never of config keys: a
// value that cannot work is a *FieldError naming its Field, and every text
// that tells the operator which setting to change names it through Names,
// which the wiring fills with the config keys (config.SourceNames).
package source
