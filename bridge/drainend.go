package bridge

import (
	"errors"
	"time"
)

// A drain that cannot progress ends before its deadline.
//
// At shutdown Drain waits up to its deadline (shutdown_timeout) for MNS to
// take what the pipeline holds. During an MNS outage nothing is taken, and
// `systemctl restart` or stop waited the whole deadline only to release
// the same messages at its end. Drain ends early instead when nothing it
// holds can be forwarded and none would be lost by giving it back:
//
//   - every delivery held waits on a lane (none is being routed or sent: no
//     sender runs, but for those waiting to write dead letters), or waits
//     for a failing dead-letter target (below);
//   - MNS cannot take anything for the destination of each such lane: since
//     the drain began, a request to it failed whole, and so did its probe
//     (the next request, sent once the failure was known; an outage's
//     probes ask MNS every 2 s at most, and from the stop on they carry
//     the held retries however long their backoff grew: lane.dueOf), and
//     no request to it was answered (a message accepted, or none failed
//     retryably). One failed request is
//     not enough: while MNS throttles (say one request in three fails),
//     the destination is failing between a failed request and its probe,
//     up to 2 s, and a drain that ended then released messages MNS took
//     within seconds. A stop during an outage so waits one probe more than
//     it did (measured in the README's shutdown section), and a stop while
//     MNS answers that then goes down keeps the whole deadline. A request
//     that got no answer at all within its time limit (Unanswered: MNS or
//     the network is down, not throttling, which answers) is enough on its
//     own: its probe would wait a whole time limit more to say the same;
//   - the dead-letter target (the file, delivery.dead_letter.queue) cannot
//     take the dead letters waiting for it, by the same rule: since the
//     drain began a write failed and so did the retry after it (the stop
//     makes each waiting writer try again at once, then every
//     maxProbeInterval at most), or one got no answer within its time
//     limit, and none was stored. A dead-letter queue the RAM user may not
//     send to kept the whole deadline, with the messages in the spool;
//   - each is Redeliverable: released, it stays in the spool for the next
//     start, or the platform sends it again (AMQP, STOMP client-individual).
//
// A delivery that is not Redeliverable (STOMP ack auto without the spool)
// keeps the full deadline: at its end it goes to the dead-letter file, and
// MNS coming back within the deadline spares the operator a replay.

// ErrCannotProgress is what Drain returns when it ended before its
// deadline because nothing it held could be forwarded (see above); what it
// held was released.
var ErrCannotProgress = errors.New("MNS (or the dead-letter target) fails for every message held, which all go back to the spool or the platform")

// drainCheckEvery is how often Drain looks whether it can still progress.
const drainCheckEvery = 100 * time.Millisecond

// cannotProgress reports whether a drain that began at start (wall clock)
// can forward nothing it holds and may give it all back (see above).
func (p *Pipeline) cannotProgress(start time.Time) bool {
	held := p.stats.inFlight.Load()
	if held <= 0 {
		return false
	}
	waiting, ok := p.deadLettersWaiting(start)
	if !ok {
		return false
	}
	for _, l := range p.laneList() {
		n, ok := l.waitingForMNS(start)
		if !ok {
			return false
		}
		waiting += n
	}
	return waiting == held
}

// deadLettersWaiting returns the deliveries of the dead-letter writes that
// wait for a failing target, copies joined to them included, and whether
// they can only wait: there are none, or the target failed a write and the
// retry after it since start (or one write that got no answer), stored none
// since, and every delivery is Redeliverable.
func (p *Pipeline) deadLettersWaiting(start time.Time) (int64, bool) {
	q := &p.deadWaits
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.writes) == 0 {
		return 0, true
	}
	if !p.deadFail.failingSince(start) {
		return 0, false
	}
	var n int64
	for w := range q.writes {
		for _, it := range w.items {
			if !it.d.Redeliverable() {
				return 0, false
			}
			n += 1 + int64(p.held.copies(it.d))
		}
	}
	return n, true
}

// failingSince reports whether the target failed a write and the retry
// after it since start (or one write that got no answer), and stored none
// since.
func (d *deadFailing) failingSince(start time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err != "" && d.retryOf.After(start) && !d.okAt.After(start)
}

// waitingForMNS returns the deliveries the lane holds, copies joined to
// them included, and whether they can only wait: the lane runs no sender
// (but for those writing dead letters, whose deliveries deadLettersWaiting
// counts), and it holds nothing, or its destination failed a whole request
// and its probe after start, answered none since, and every delivery is
// Redeliverable.
func (l *lane) waitingForMNS(start time.Time) (int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.senders > l.deadLettering {
		return 0, false
	}
	if len(l.pending) == 0 && len(l.retries) == 0 {
		return 0, true
	}
	if !l.failing || !l.probeOf.After(start) || l.okAt.After(start) {
		return 0, false
	}
	var n int64
	count := func(it *item) bool {
		if !it.d.Redeliverable() {
			return false
		}
		n += 1 + int64(l.p.held.copies(it.d))
		return true
	}
	for _, it := range l.pending {
		if !count(it) {
			return 0, false
		}
	}
	for _, g := range l.retries {
		for _, it := range g.items {
			if !count(it) {
				return 0, false
			}
		}
	}
	return n, true
}
