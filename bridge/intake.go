package bridge

import (
	"context"
	"sync/atomic"
	"time"
)

// item is one delivery on its way through the pipeline.
type item struct {
	d        *Delivery
	out      Outgoing
	dest     Destination
	size     int // out's size as the sink counts it against its byte limit
	attempts int
	first    time.Time
	lastErr  error
	class    DeadLetterClass // set with lastErr when the item is dead-lettered
	// env is the plan of the JSON envelope; its size is 0 when the
	// envelope is raw (out.Body is then the message's body).
	env jsonEnvelope
	// fixed: the destination is literal in the config (Route.Fixed).
	fixed bool
}

// outLen is the length of the body written to MNS.
func (it *item) outLen() int {
	if it.env.size > 0 {
		return it.env.size
	}
	return len(it.out.Body)
}

// Handle takes one delivery (it is the Handler given to sources). It blocks
// while MaxInFlight deliveries or MaxInFlightBytes are held, until ctx is
// done or the pipeline closes; then it returns an error and the delivery is
// still the caller's. When there is room it takes the delivery even if ctx
// is done. Once Handle returned nil, the pipeline settles the delivery.
//
// Handle does the intake in the caller's goroutine: admission, joining a
// redelivered copy to its held original (join.go), de-dup,
// routing and rendering, then it queues the message on its destination's
// lane, which starts a sender when a batch is ready. Nothing waits for a
// hand-off to another goroutine per message.
func (p *Pipeline) Handle(ctx context.Context, d *Delivery) error {
	select {
	case <-p.closed:
		return ErrClosed
	default:
	}
	d.held = heldSize(&d.Message)
	if err := p.admit.acquire(ctx, p.closed, d.held); err != nil {
		return err
	}
	p.stats.enter()
	p.m.Received.Inc()
	if p.held.join(d) {
		// Settled with its original (done), and counted then.
		return nil
	}
	now := p.now()
	m := &d.Message
	if m.Invalid != "" {
		p.deadLetterNow(&item{d: d, first: now}, m.Invalid, ClassInvalidBody)
		return nil
	}
	if p.cfg.Dedup != nil && p.cfg.Dedup.Seen(m.MessageID, now) {
		p.m.Duplicates.Inc()
		p.done(d, Accepted, &p.stats.duplicates)
		return nil
	}
	tune := p.tune.Load()
	r := tune.Router.Route(m.Topic)
	if r.DeadLetter {
		p.deadLetterNow(&item{d: d, first: now}, r.Reason, r.Class)
		return nil
	}
	it := &item{d: d, dest: r.Dest, fixed: r.Fixed, first: now, out: Outgoing{Tag: r.Tag, ID: m.MessageID, GroupID: r.GroupID}}
	if p.cfg.Properties.Enabled() || r.Properties != nil {
		var rp []Property
		if r.Properties != nil {
			rp = *r.Properties
		}
		it.out.Properties, it.out.SystemProperties = p.cfg.Properties.Build(m, rp)
	}
	if tune.Envelope == EnvelopeJSON {
		// The envelope holds the payload itself.
		if err := m.DecodeBody(); err != nil {
			p.deadLetterNow(it, err.Error(), ClassInvalidBody)
			return nil
		}
		// The envelope is written for each request (see send), not held.
		it.env = planEnvelope(m)
	} else {
		// A base64 body the platform sent goes to the sink as it is.
		it.out.Body, it.out.Base64 = m.Body, m.Base64
	}
	p.enqueue(ctx, it)
	return nil
}

// enqueue puts it on its destination's lane, or releases it when the drain
// deadline has passed; ctx is Handle's (see lane.add).
func (p *Pipeline) enqueue(ctx context.Context, it *item) {
	for {
		l := p.lane(it.dest)
		switch l.add(ctx, it) {
		case laneAdded:
			return
		case laneStopped:
			// The drain deadline passed: give it back.
			p.done(it.d, Released, nil)
			return
		case laneRemoved:
			// Removed as idle just now: look it up again.
		}
	}
}

// done settles d, frees its slot and counts, then settles the copies joined
// to d (join.go) with the same outcome; the last settle after intake
// stopped wakes Drain. accepted is the count of d's way to be accepted
// (forwarded, dead-lettered, a duplicate); nil with Released. A release of
// a delivery that is not redeliverable does not settle it: it is kept for
// Stranded, once for the message: a copy of one kept is not kept again
// (the spool or the dead-letter file holds the message once, as the
// dead-letter target does when it is dead-lettered).
//
// Each delivery is counted in one outcome. A copy is counted in Joined
// when its original is accepted or kept (it is settled with it, not sent),
// and in Released when it is released: what happened to that delivery is
// that it went back upstream (the platform, or the spool, has it again and
// the next start or redelivery counts it again), so Released, or with the
// spool left_in_spool, counts it and Joined does not.
func (p *Pipeline) done(d *Delivery, o Outcome, accepted *atomic.Int64) {
	c := p.held.leave(d)
	kept := p.settle(d, o, false, accepted)
	for ; c != nil; c = c.copies {
		kept = p.settle(c, o, kept, &p.stats.joined)
	}
}

// settle is done for one delivery, counted in accepted when it is
// accepted, or kept with a message already kept (a copy's Joined); kept
// says the message is already kept for Stranded. It reports whether the
// message is kept now (by d or before).
func (p *Pipeline) settle(d *Delivery, o Outcome, kept bool, accepted *atomic.Int64) bool {
	outcome := accepted
	if o == Released && !d.Redeliverable() {
		// Nothing upstream to tell: marking it settled only makes this
		// happen once.
		if !d.settled.CompareAndSwap(false, true) {
			return kept
		}
		if !kept {
			p.stranded.Add(d)
			outcome = &p.stats.strandedN
			kept = true
		}
	} else if !d.settle(o) {
		return kept
	} else if o == Released {
		outcome = &p.stats.released
	} else {
		p.stats.lastProgress.Store(p.now())
	}
	if outcome == &p.stats.joined {
		p.m.Joined.Inc()
	}
	p.admit.release(d.held)
	if p.stats.leave(outcome) == 0 && p.closing.Load() {
		p.emptyOne.Do(func() { close(p.empty) })
	}
	return kept
}

func (p *Pipeline) releaseAll(items []*item) {
	for _, it := range items {
		p.done(it.d, Released, nil)
	}
}
