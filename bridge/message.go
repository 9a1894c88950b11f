// Package bridge holds the protocol-neutral core of iot-mns-bridge: the
// message model, the Source and Sink contracts, routing, and the pipeline
// that takes each delivery from a source to the sink and settles it. Its
// contract: a Delivery is settled exactly once, Accepted when the sink has
// its message or it is dead-lettered, Released (given back upstream) when
// the pipeline shuts down before that. It knows nothing of STOMP, AMQP or
// MNS wire details.
//
// The data path, by folder:
//
//	bridge/stompsrc, bridge/amqpsrc  the source, one package a protocol
//	bridge/source                    the driver both run on: slots, supervisor, attempt limiter, TLS
//	bridge/spool                     optional: local disk between the source and the pipeline (Stage)
//	bridge                           the pipeline: admit, route, batch, send, retry, dead-letter, settle
//	sinks/mns                        the sink: MNS queues and topics
//	bridge/deadletter                where what cannot be delivered goes (a file, an MNS queue)
//
// Settling goes back the same way: the pipeline settles each Delivery
// (Accept or Release) through its Settler, the source's link, which answers
// the platform (ACK, NACK, an AMQP disposition; nothing for STOMP ack auto,
// where the platform settled on sending); with the spool, the Stage settled
// upstream once the message was on disk, and the pipeline's Accept deletes
// it from the spool (a Release leaves it there for the next run).
//
// The files of this package:
//   - model and contracts: message.go (Message, Delivery, settle-once),
//     contracts.go (Handler, Source, Sink, LimitedSink, Checker, Retryable),
//     outcome.go (the typed outcomes: dead-letter classes, login refused);
//   - routing: route.go (the route grammar, compiled once by Router);
//   - the pipeline, in the order a delivery goes through it (pipeline.go
//     says what each does): admission.go, intake.go, join.go, lane.go,
//     sender.go, deadletters.go; around it pipelinecheck.go and fields.go
//     (its settings and how it names them), liveness.go (when it is stuck),
//     metrics.go, keeper.go (what a shutdown must keep), backoff.go (the
//     jittered backoff of its retries and of the sources' redials);
//   - what a message becomes at the sink: envelope.go (the body),
//     properties.go (the MNS message properties);
//   - de-duplication: dedup.go (the window of recent ids), dedupjournal.go
//     (the window kept across restarts).
package bridge

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync/atomic"
)

// Message is one device message as the platform pushed it.
type Message struct {
	// Topic is the platform topic, e.g. "/a1b2c3/dev-01/user/telemetry" or
	// "/as/mqtt/status/a1b2c3/dev-01". It may be empty when the source did not
	// carry one.
	Topic string
	// MessageID is the platform's id; redeliveries carry the same id.
	MessageID string
	// GenerateTime is the platform's generateTime in epoch milliseconds, 0 when
	// absent.
	GenerateTime int64
	// Body is the device payload, or its base64 text when Base64 is set.
	Body []byte
	// Base64 says Body is the payload's standard base64 text as the platform
	// sent it (a STOMP encode=base64 login), which the source checked to be
	// canonical (what encoding the payload gives back), not the payload:
	// a sink that writes base64 then sends Body as it is instead of
	// decoding and encoding again. Payload and DecodeBody give the payload.
	Base64 bool
	// Properties are the remaining headers or application properties, as text.
	Properties map[string]string
	// Invalid, when not empty, says why the body cannot be forwarded as it
	// arrived (for example "body is not valid base64"); Body then holds the
	// bytes as received. The pipeline dead-letters such a message with this
	// reason and settles it: it is never forwarded garbled.
	Invalid string
}

// Payload returns the device payload: Body, decoded when Base64 is set. The
// error (only for a Base64 body that is not valid base64, which a source
// must not produce) names the message.
func (m *Message) Payload() ([]byte, error) {
	if !m.Base64 {
		return m.Body, nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(m.Body)))
	n, err := base64.StdEncoding.Decode(out, m.Body)
	if err != nil {
		return nil, fmt.Errorf("message %s: body marked base64 is not valid base64: %w", m.MessageID, err)
	}
	return out[:n], nil
}

// DecodeBody replaces a Base64 body by the payload, for the users of a
// message that need the payload itself (the JSON envelope, the spool, the
// dead-letter file). On error the message is unchanged.
func (m *Message) DecodeBody() error {
	if !m.Base64 {
		return nil
	}
	p, err := m.Payload()
	if err != nil {
		return err
	}
	m.Body, m.Base64 = p, false
	return nil
}

// IsCanonicalBase64 reports whether b is standard padded base64 text that
// decoding and encoding again gives back unchanged (no line breaks, no
// stray bits in the last character): text that can be passed through in
// place of the payload's encoding.
func IsCanonicalBase64(b []byte) bool {
	if len(b)%4 != 0 {
		return false
	}
	n := len(b)
	pad := 0
	if n > 0 && b[n-1] == '=' {
		pad++
		if b[n-2] == '=' {
			pad++
		}
	}
	for _, c := range b[:n-pad] {
		if b64Value[c] < 0 {
			return false
		}
	}
	switch pad {
	case 1: // the last character before "=" carries 2 unused bits
		return b64Value[b[n-2]]&0x3 == 0
	case 2: // 4 unused bits
		return b64Value[b[n-3]]&0xf == 0
	}
	return true
}

// b64Value is the value of each standard base64 character, -1 for others.
var b64Value = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// DeviceFromTopic returns the product key and device name that the platform's
// topic layouts carry: "/{pk}/{dn}/..." for device topics (with or without a
// "/sys" prefix) and "/as/mqtt/status/{pk}/{dn}" for status messages. An OTA
// job's status, "/{pk}/{packageId}/{jobId}/ota/job/status", names a product
// and no device: the device name is empty. Both are empty when the topic has
// none of these forms.
func DeviceFromTopic(topic string) (productKey, deviceName string) {
	t := strings.TrimPrefix(topic, "/sys/")
	if t != topic {
		t = "/" + t
	}
	if rest, ok := strings.CutPrefix(t, "/as/mqtt/status/"); ok {
		pk, dn, _ := strings.Cut(rest, "/")
		if pk == "" || dn == "" || strings.Contains(dn, "/") {
			return "", ""
		}
		return pk, dn
	}
	parts := strings.SplitN(strings.TrimPrefix(t, "/"), "/", 4)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || !strings.HasPrefix(t, "/") {
		return "", ""
	}
	if len(parts) == 4 && parts[2] != "user" && parts[3] == "ota/job/status" {
		return parts[0], "" // parts[1] is the package's id, parts[2] the job's
	}
	return parts[0], parts[1]
}

// Outcome is how a delivery is settled upstream.
type Outcome int

const (
	// Accepted: the sink took the message, or it was dead-lettered. The
	// platform will not redeliver it.
	Accepted Outcome = iota + 1
	// Released: the bridge gives the message back (shutdown, dead link); the
	// platform will redeliver it.
	Released
)

func (o Outcome) String() string { return enumName(o, "accepted", "released") }

// Settler is implemented by a source: it is told the final outcome of each of
// its deliveries, exactly once per delivery. Settle must not block for long;
// it may be called from any goroutine.
type Settler interface {
	Settle(d *Delivery, o Outcome)
}

// Delivery is a Message together with the duty to settle it upstream exactly
// once. It is safe for concurrent use; only the first Accept or Release has an
// effect.
type Delivery struct {
	Message
	// Token is the source's own handle for settling (an AMQP message, a STOMP
	// frame, a spool key); the pipeline never looks at it.
	Token any

	settler Settler
	settled atomic.Bool
	// index and copies are the pipeline's joining of redelivered copies
	// (its join.go): whether d is held for its message id or joined to the
	// one held; for the one held the first copy joined to it, for a copy
	// the next (a list settled with the original's outcome).
	index  indexRole
	held   int64 // bytes counted against the pipeline's byte bound
	copies *Delivery
}

// NewDelivery returns a delivery that reports its outcome to s. A nil s makes
// a delivery whose settling is a no-op: it has no upstream that would send it
// again (STOMP ack auto, where the platform settled it when it sent it;
// replays; tests). See Redeliverable.
func NewDelivery(m Message, s Settler, token any) *Delivery {
	return &Delivery{Message: m, Token: token, settler: s}
}

// Accept settles the delivery as Accepted. It reports whether this call
// settled it (false when it was settled before).
func (d *Delivery) Accept() bool { return d.settle(Accepted) }

// Release settles the delivery as Released. It reports whether this call
// settled it.
func (d *Delivery) Release() bool { return d.settle(Released) }

// Redeliverable reports whether releasing the delivery gives the message
// back to an upstream that will deliver it again (an AMQP release, a STOMP
// client-individual NACK or missing ACK, the spool). When it is false, a
// release would lose the message: the pipeline never releases such a
// delivery but hands it back at shutdown (Pipeline.Stranded).
func (d *Delivery) Redeliverable() bool { return d.settler != nil }

// Settled reports whether the delivery has been settled.
func (d *Delivery) Settled() bool { return d.settled.Load() }

func (d *Delivery) settle(o Outcome) bool {
	if !d.settled.CompareAndSwap(false, true) {
		return false
	}
	if d.settler != nil {
		d.settler.Settle(d, o)
	}
	return true
}
