// Package source is what every protocol source of the platform
// subscription shares: the connection slots and their supervisor
// (Supervisor: one session at a time per slot, jittered backoff, a stable
// connection resets it), the consumer group's attempt limiter
// (AttemptLimiter) and the TLS settings (TLSOptions). The protocol packages
// (bridge/stompsrc, bridge/amqpsrc) bring only what differs: sign, connect,
// read the next delivery, settle, close.
package source
