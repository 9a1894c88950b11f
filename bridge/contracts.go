package bridge

import (
	"context"
	"errors"
)

// Handler takes one delivery into the pipeline. It blocks while the pipeline
// is full, which is how backpressure reaches a source: a source calls it from
// its receive loop and does not read more until it returns. It returns an
// error only when ctx is done or the pipeline is shutting down; the delivery
// is then not the pipeline's and the source must release it.
type Handler func(ctx context.Context, d *Delivery) error

// Source is a consumer of the IoT platform subscription (one per protocol).
//
// Run connects, receives and passes every delivery to h until ctx is done,
// reconnecting by itself with backoff; it returns nil after ctx is done, or
// an error only for a problem that retrying cannot fix. After Run returns the
// connections stay open, so that deliveries in flight can still be settled,
// until Close.
//
// Close releases every delivery still unsettled (where the protocol can),
// closes all connections within ctx's deadline and waits for Run to return.
type Source interface {
	Run(ctx context.Context, h Handler) error
	Close(ctx context.Context) error
}

// ConnState is a source connection's state, for readiness and metrics.
type ConnState struct {
	// Name identifies the connection, e.g. the client id "edge-gw-01-0".
	Name      string
	Connected bool
	// Reconnects counts successful connects after the first.
	Reconnects int64
	// LastError is the most recent connection error, "" when none. It never
	// contains a secret.
	LastError string
}

// StateReporter is implemented by sources that can report their connections.
type StateReporter interface {
	ConnStates() []ConnState
}

// DestinationKind tells an MNS queue from an MNS topic.
type DestinationKind int

const (
	Queue DestinationKind = iota + 1
	Topic
)

func (k DestinationKind) String() string { return enumName(k, "queue", "topic") }

// enumName is the name of v, a value of an enum numbered from 1 in the
// order of names, or "unknown".
func enumName[T ~int](v T, names ...string) string {
	if v < 1 || int(v) > len(names) {
		return "unknown"
	}
	return names[v-1]
}

// Destination is an MNS queue or topic.
type Destination struct {
	Kind DestinationKind
	Name string
}

func (d Destination) String() string { return d.Kind.String() + " " + d.Name }

// Outgoing is one message as the sink must write it.
type Outgoing struct {
	// Body is the payload (after the envelope), before any body encoding,
	// which is the sink's business; or, when Base64 is set, the payload's
	// canonical standard base64 text (see Message.Base64), which a sink
	// that writes base64 sends as it is and any other decodes.
	Body   []byte
	Base64 bool
	// Tag is the MNS message tag (topics only), "" for none.
	Tag string
	// ID names the message in errors and logs (the platform messageId).
	ID string
	// Properties are MNS user properties (unique names, in order) and
	// SystemProperties MNS system properties (traceparent, ...); nil for
	// none. The sink checks them against the MNS limits.
	Properties, SystemProperties []Property
	// GroupID is the MNS MessageGroupId for FIFO queues and topics; "" for
	// none.
	GroupID string
}

// Sink writes messages to a destination.
//
// Send returns exactly one error per message, in order: nil when the
// destination accepted that message. It is safe for concurrent use. A
// non-nil error is retryable unless it says otherwise (see Retryable). Send
// honours ctx: on cancel it returns promptly with ctx's error for every
// message not known to be accepted.
type Sink interface {
	Send(ctx context.Context, dest Destination, msgs []Outgoing) []error
}

// SinkLimits is what one Sink.Send request can carry: at most Messages
// messages whose sizes, as Size counts them, add up to at most Bytes. A zero
// Messages or Bytes is no limit of the sink's own (the pipeline's batch
// settings still apply).
type SinkLimits struct {
	Messages int
	Bytes    int
	// Size is what message o, whose body will be bodyLen bytes, counts
	// against Bytes (for MNS: its MessageBody text after the encoding and its
	// properties); nil counts bodyLen.
	Size func(o *Outgoing, bodyLen int) int
}

// Fit is how many of msgs, from the first, one request carries within l:
// at least one (a message over the limits goes alone, for the sink to
// refuse by name).
func (l SinkLimits) Fit(msgs []Outgoing) int {
	bytes := 0
	for i := range msgs {
		size := len(msgs[i].Body)
		if l.Size != nil {
			size = l.Size(&msgs[i], size)
		}
		if i > 0 && (l.Messages > 0 && i >= l.Messages || l.Bytes > 0 && bytes+size > l.Bytes) {
			return i
		}
		bytes += size
	}
	return len(msgs)
}

// LimitedSink is a Sink that declares its request limits per destination.
// The pipeline builds every batch within them, so one batch is one request
// and the sink never splits a batch (a single message over the limits is
// still sent alone, for the sink to refuse by name).
type LimitedSink interface {
	Sink
	Limits(dest Destination) SinkLimits
}

// Checker is implemented by sinks that can look a destination up without
// writing to it (check -connect, readiness).
type Checker interface {
	Check(ctx context.Context, dest Destination) error
}

// Retryable reports whether err is worth retrying. An error says it is not
// by having a method Retryable() bool that returns false (MNS 4xx, a body
// over the size limit). Any other non-nil error is retryable: retrying an
// unknown failure until the retry budget runs out is safer than dropping.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var r interface{ Retryable() bool }
	if errors.As(err, &r) {
		return r.Retryable()
	}
	return true
}

// MissingDestination reports whether err says the destination does not
// exist (MNS QueueNotExist, TopicNotExist): it has a method
// MissingDestination() bool that returns true. Such an error is permanent,
// but for a route whose destination is literal in the config the pipeline
// holds and retries the messages (the queue may be created, the route
// fixed), as it does for refused credentials; for a templated destination
// it dead-letters them with the reason.
func MissingDestination(err error) bool {
	var m interface{ MissingDestination() bool }
	return errors.As(err, &m) && m.MissingDestination()
}

// Unanswered reports whether err says the destination gave no answer at
// all within the request's time limit (MNS or the network is down or cut
// off), not an answer that refused the request (throttling, a 5xx): it has
// a method Unanswered() bool that returns true. A stop's drain takes one
// such request as enough to end early (drainend.go): another would cost a
// whole time limit more to say the same.
func Unanswered(err error) bool {
	var u interface{ Unanswered() bool }
	return errors.As(err, &u) && u.Unanswered()
}

// PermanentError marks an error that retrying cannot fix.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string   { return e.Err.Error() }
func (e *PermanentError) Unwrap() error   { return e.Err }
func (e *PermanentError) Retryable() bool { return false }

// Permanent wraps err as not retryable.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}
