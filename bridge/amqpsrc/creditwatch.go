package amqpsrc

import (
	"fmt"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// A connection whose credit window stays full is credit-bound.
//
// A connection holds at most its credit (FieldCredit) unsettled messages; each
// refill waits until MNS took half of them. With a slow MNS (a far region,
// throttling, a busy proxy) a connection so carries about credit / MNS
// round trip messages a second, whatever the devices send, and the
// platform keeps the rest in the consumer group's backlog, whose lag grows
// (walk5: MNS at 3 s, 2 connections at credit 64, 41.6 msgs/s of 50 and
// not a line in the log). The link measures how much of each minute Next
// waited for credit; a minute spent mostly so, over several refills, is
// logged once (WARN) until the connections are no longer credit-bound
// (INFO). A single long wait is an MNS outage, logged by the pipeline, not
// a small window: a window needs creditBoundRefills refills to count.

const (
	creditWatchEvery   = time.Minute // the window over which the waits are summed
	creditBoundShare   = 0.9         // waited at least this share of a window: credit-bound
	creditFreeShare    = 0.5         // waited less than this share: no longer
	creditBoundRefills = 3           // refills a window needs to say either
)

// creditWatch is a link's sum of its credit waits over the current
// window; only Next touches it.
type creditWatch struct {
	since   time.Time     // the window's start
	waited  time.Duration // waited for credit in it
	refills int           // credit waits that ended in it
	got     int           // link.got at its start
}

// creditWaited records a wait for credit from start to end (Next, after
// askCredit) and, once a window has passed, tells the Source whether the
// link was credit-bound in it.
func (l *link) creditWaited(start, end time.Time) {
	w := &l.watch
	w.waited += end.Sub(start)
	w.refills++
	elapsed := end.Sub(w.since)
	if elapsed < creditWatchEvery {
		return
	}
	share := float64(w.waited) / float64(elapsed)
	rate := float64(l.got-w.got) / elapsed.Seconds()
	refills := w.refills
	*w = creditWatch{since: end, got: l.got}
	switch {
	case refills < creditBoundRefills:
	case share >= creditBoundShare && l.creditState.CompareAndSwap(linkFree, linkBound):
		if l.src.creditBound.Add(1) == 1 {
			n := l.src.cfg.Names
			l.src.log.Warn(fmt.Sprintf("AMQP connections wait for credit most of the time: a connection carries at most %s "+
				"messages per MNS round trip, and the platform keeps the rest in the consumer group's backlog, "+
				"whose lag grows; raise %s, or %s (each connection its own window)",
				n.Of(source.FieldCredit), n.Of(source.FieldCredit), n.Of(source.FieldConnections)),
				"client_id", l.id, "waited", fmt.Sprintf("%.0f%% of %s", 100*share, elapsed.Round(time.Second)),
				"per_s", fmt.Sprintf("%.1f", rate), "credit", l.src.cfg.Credit)
		}
	case share < creditFreeShare && l.creditState.CompareAndSwap(linkBound, linkFree):
		if l.src.creditBound.Add(-1) == 0 {
			l.src.log.Info("AMQP connections no longer wait for credit most of the time",
				"client_id", l.id, "waited", fmt.Sprintf("%.0f%% of %s", 100*share, elapsed.Round(time.Second)),
				"per_s", fmt.Sprintf("%.1f", rate))
		}
	}
}

// creditWatchEnded takes an ended link out of the Source's count,
// without a line: its successor measures anew. A window that Next closes
// after it (a grant taken as the connection ended) no longer counts.
func (l *link) creditWatchEnded() {
	if l.creditState.Swap(linkEnded) == linkBound {
		l.src.creditBound.Add(-1)
	}
}

// A link's state in the Source's count of credit-bound links.
const (
	linkFree  int32 = iota // not counted
	linkBound              // counted in Source.creditBound
	linkEnded              // ended: never counted again
)
