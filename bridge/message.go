// Package bridge holds the protocol-neutral core of iot-mns-bridge: the message
// model, the Source and Sink contracts as the pipeline consumes them, routing,
// batching, settling, de-duplication, the spool and the reconnect supervisor.
//
// It knows nothing of STOMP, AMQP or MNS wire details: sources live in
// bridge/stompsrc and bridge/amqpsrc, sinks in sinks/.
package bridge

import (
	"strings"
	"sync/atomic"
	"time"
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
	// Body is the device payload, already decoded (base64 bodies of STOMP
	// encode=base64 logins are decoded by the source).
	Body []byte
	// Properties are the remaining headers or application properties, as text.
	Properties map[string]string
	// Invalid, when not empty, says why the body cannot be forwarded as it
	// arrived (for example "body is not valid base64"); Body then holds the
	// bytes as received. The pipeline dead-letters such a message with this
	// reason and settles it: it is never forwarded garbled.
	Invalid string
}

// DeviceFromTopic returns the product key and device name that the platform's
// topic layouts carry: "/{pk}/{dn}/..." for device topics (with or without a
// "/sys" prefix) and "/as/mqtt/status/{pk}/{dn}" for status messages. Both are
// empty when the topic has neither form.
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

func (o Outcome) String() string {
	switch o {
	case Accepted:
		return "accepted"
	case Released:
		return "released"
	}
	return "unknown"
}

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
	// Received is when the source handed the message to the pipeline.
	Received time.Time
	// Token is the source's own handle for settling (an AMQP message, a STOMP
	// frame, a spool key); the pipeline never looks at it.
	Token any

	settler Settler
	settled atomic.Bool
	held    int64 // bytes counted against the pipeline's byte bound
}

// NewDelivery returns a delivery that reports its outcome to s. A nil s makes
// a delivery whose settling is a no-op: it has no upstream that would send it
// again (STOMP ack auto, where the platform settled it when it sent it;
// replays; tests). See Redeliverable.
func NewDelivery(m Message, s Settler, token any) *Delivery {
	return &Delivery{Message: m, Received: time.Now(), Token: token, settler: s}
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
