package bridge

import (
	"fmt"
	"time"
)

// Stalled reports a stuck pipeline: it holds messages and, for longer than
// limit, it forwarded or dead-lettered none AND no request to the sink (nor
// a dead-letter write, nor a request of one: Answered) returned, whatever
// the outcome. It returns nil
// otherwise, and an error that says what is stuck and since when.
//
// A failing destination is not stuck: while MNS fails (an outage, account
// throttling, a network blackhole), its lane sends one request at a time at
// most every maxProbeInterval (the retry policy's InitialBackoff when that
// is longer), each bounded by the sink's request time-out, and every
// answer counts: a 503, a transport error and a time-out too. A restart
// cannot fix MNS; /readyz says that it fails. What is left is a request
// that never returns (a sink that ignores its context) or a pipeline that
// stopped sending while it holds messages: that is what a liveness probe or
// a watchdog must restart.
//
// limit must be longer than the quietest a working pipeline gets while it
// holds messages: the retry policy's MaxBackoff (a retry's or a probe's
// wait) plus the sink's request time-out. The cost of this check is one
// atomic store per request (Stats.LastAnswer), none per message.
func (p *Pipeline) Stalled(limit time.Duration) error {
	s := &p.stats
	held := s.inFlight.Load()
	if held <= 0 {
		return nil
	}
	last := s.lastProgress.Load()
	if a := s.lastAnswer.Load(); a.After(last) {
		last = a
	}
	now := p.now()
	quiet := now.Sub(last)
	if quiet <= limit {
		return nil
	}
	what := "no request to MNS is in progress: nothing is being sent (a sender is blocked elsewhere, e.g. in a dead-letter write, or none runs)"
	switch n := len(p.reqs); {
	case n == 1:
		what = "1 request to MNS is in progress and has not returned (a send that ignores its time-out)"
	case n > 1:
		what = fmt.Sprintf("%d requests to MNS are in progress and none has returned (sends that ignore their time-out)", n)
	}
	return fmt.Errorf("pipeline stuck since %s (%s): %d messages held; since then none was forwarded or dead-lettered and no MNS request or dead-letter write returned; %s",
		now.Add(-quiet).UTC().Format(time.RFC3339), quiet.Round(time.Second), held, what)
}

// Answered records that MNS answered a request made for the pipeline
// outside its own sends, whatever the answer (accepted, an error, a
// time-out): each request of a dead-letter queue write
// (deadletter.Targets.OnAnswer). Stalled counts it as it counts the return
// of each of the pipeline's own requests, so a dead-letter write that sends
// many requests to a slow MNS is not stuck. Safe for concurrent use.
func (p *Pipeline) Answered() { p.answered(p.now()) }

// answered records an answer at t: the one place liveness learns that MNS
// (or the dead-letter target) answered.
func (p *Pipeline) answered(t time.Time) { p.stats.lastAnswer.Store(t) }
