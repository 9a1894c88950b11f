package bridge

import "sync"

// A redelivered copy joins its held original.
//
// When a source connection drops (expired credentials, an idle time-out, a
// restart of the platform), the platform delivers again what the bridge had
// not settled on it, also messages the pipeline still holds because MNS is
// slow or a retry waits. The de-dup window knows only the ids MNS accepted,
// so such a copy would be sent as well. Instead, Handle joins it to the
// delivery of the same message id that the pipeline holds (its original):
// the copy is neither routed nor sent, and when the original is settled
// (done) each of its copies is settled with the same outcome: Accepted once
// MNS stored the message or the dead-letter target holds it (one entry),
// Released when the shutdown cuts the drain short, or, for deliveries that
// are not Redeliverable, kept for Stranded once for the message (its copies
// are settled with it, so the spool or the dead-letter file holds it once).
// A copy's settlement does not depend on the original's: when the
// original's link is gone, its copy, on the new link, still tells the
// platform.
//
// A copy holds admission room like any delivery and waits for it before it
// is looked up, holding nothing: what the pipeline holds stays bounded,
// whatever the number of reconnects, and the original never waits on
// intake (it is on a lane or in a dead-letter write), so waiting for room
// cannot deadlock. A copy that arrives after its original was settled is a
// new delivery (the de-dup window catches it, when enabled).
//
// Joining does not depend on the de-dup window: a copy is the same delivery
// given again on another link, not a second message. Messages without an id
// are never joined. Deliveries that are not Redeliverable are joined too:
// the platform does not send those twice (STOMP ack auto), but a replayed
// dead-letter file may hold a message twice (TestReplayOfARepeatedEntry).

// indexRole is a delivery's place in the pipeline's heldIndex.
type indexRole uint8

const (
	notIndexed indexRole = iota // no id, or not (yet) taken
	indexed                     // the delivery held for its id
	joined                      // a copy joined to the one held
)

// heldIndex maps a message id to the delivery held for it (its original,
// the first admitted). Safe for concurrent use.
type heldIndex struct {
	mu sync.Mutex
	m  map[string]*Delivery
}

// join reports whether d joined the delivery held for its message id, as
// one of its copies; when it did not and d has an id, d is now the one held
// for it. Handle calls it once per delivery.
func (x *heldIndex) join(d *Delivery) bool {
	id := d.MessageID
	if id == "" {
		return false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if orig := x.m[id]; orig != nil {
		d.index, d.copies, orig.copies = joined, orig.copies, d
		return true
	}
	d.index = indexed
	x.m[id] = d
	return false
}

// leave removes d from the index, when it is the delivery held for its id,
// and returns the first of the copies joined to it (each links to the
// next), for the caller to settle with d's outcome. It is nil for a
// delivery that was not indexed and on any call after the first; it is
// not called for a copy (one is settled with its original, never on its
// own).
func (x *heldIndex) leave(d *Delivery) *Delivery {
	if d.MessageID == "" {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if d.index != indexed {
		return nil
	}
	delete(x.m, d.MessageID)
	d.index = notIndexed
	c := d.copies
	d.copies = nil
	return c
}

// copies returns how many copies are joined to d (0 for a delivery not
// indexed).
func (x *heldIndex) copies(d *Delivery) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for c := d.copies; c != nil; c = c.copies {
		n++
	}
	return n
}
