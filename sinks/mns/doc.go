// Package mns is a small client for the Alibaba Cloud MNS (SMQ) HTTP API and
// the queue and topic sink the bridge pipeline writes to.
//
// The Client speaks the signed REST protocol over net/http (V2 HMAC-SHA1 or
// V4 MNS4-HMAC-SHA256): SendMessage,
// BatchSendMessage, PublishMessage, GetQueueAttributes and GetTopicAttributes,
// with message properties (user and system) and FIFO MessageGroupIds. Every
// request carries a fresh x-mns-user-request-id, named in errors next to the
// server's x-mns-request-id, and the User-Agent iot-mns-bridge/<version>.
// Every call takes a context and is bounded by a per-request timeout; the
// client never retries by itself. Failures are returned as *Error (a reply
// from MNS) or as wrapped network and context errors; bridge.Retryable tells
// which ones are worth retrying (network errors, timeouts, 5xx, 429 and the
// legacy QpsLimitExceeded) from the permanent ones (every other 4xx, a body
// over 64 KB, a raw body that XML cannot carry, properties MNS would refuse).
//
// The Sink adapts the Client to bridge.Sink and bridge.Checker. Secrets
// (AccessKey secret, security token) never appear in errors or logs.
//
// The client takes its Config as given (no defaults for what the config
// owns: the timeout, the pool, the body encoding, the signature version)
// and speaks of its own fields (Field, FieldError); the wiring gives it
// what the operator calls them (Config.Names: the config keys).
//
// The request bodies are written by hand and the common replies are read by
// a small scanner (encoding/xml is the fallback for anything unusual), so
// the hot path allocates little and uses no reflection.
package mns
