package bridge

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a pipeline clock the test moves by hand.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) now() time.Time             { return time.Unix(0, c.ns.Load()) }
func (c *testClock) add(d time.Duration)        { c.ns.Add(int64(d)) }
func (c *testClock) config(cfg *PipelineConfig) { cfg.Now = c.now }

// stuckSink's Send blocks, ignoring its context, until release is closed.
type stuckSink struct {
	entered chan struct{} // one token per Send that started
	release chan struct{}
}

func (s *stuckSink) Send(ctx context.Context, dest Destination, msgs []Outgoing) []error {
	s.entered <- struct{}{}
	<-s.release
	return make([]error, len(msgs))
}

// stuckDeadLetters' writes block, ignoring their context, until release is
// closed.
type stuckDeadLetters struct{ entered, release chan struct{} }

func (d *stuckDeadLetters) DeadLetter(ctx context.Context, entries []DeadLetter) error {
	d.entered <- struct{}{}
	<-d.release
	return nil
}

const testStallLimit = 2 * time.Minute

// wantStalled checks that p is stalled (over testStallLimit) and that the
// error says each of wants.
func wantStalled(t *testing.T, p *Pipeline, wants ...string) {
	t.Helper()
	err := p.Stalled(testStallLimit)
	for _, want := range wants {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Stalled = %v, want it to say %q", err, want)
		}
	}
}

// TestStalledIsNotAnOutage: a destination whose every request fails (an
// MNS outage: 503s) holds its messages with nothing forwarded for longer
// than the stall limit, and the pipeline is not stalled, because each
// probe's answer is progress; before, "held and none forwarded for the
// limit" was the rule, and an outage killed the bridge.
func TestStalledIsNotAnOutage(t *testing.T) {
	clock := newTestClock()
	h := newHarness(t, newFakeSink(func(call, i int, o Outgoing) error { return errors.New("HTTP 503: service unavailable") }), clock.config)
	defer h.drainCutShort(t)
	h.feed(t, 3, userTopic)
	waitUntil(t, func() bool { return h.p.Stats().Requests >= 1 })
	// The outage outlasts the limit; the lane goes on probing.
	clock.add(testStallLimit + time.Minute)
	after := clock.now()
	waitUntil(t, func() bool { h.p.probeNow(); return !h.p.Stats().LastAnswer.Before(after) })
	st := h.p.Stats()
	if st.InFlight != 3 || st.Forwarded != 0 || clock.now().Sub(st.LastProgress) <= testStallLimit {
		t.Fatalf("stats %+v: want 3 held, none forwarded for longer than %s", st, testStallLimit)
	}
	if err := h.p.Stalled(testStallLimit); err != nil {
		t.Errorf("an outage answering 503 for %s reported stuck: %v", clock.now().Sub(st.LastProgress), err)
	}
}

// TestStalledFindsASendThatNeverReturns: a request that ignores its
// context and never returns, with messages held, is stuck once the limit
// passed (not before), and the error says what and since when; once it
// returns the pipeline is fine again.
func TestStalledFindsASendThatNeverReturns(t *testing.T) {
	clock := newTestClock()
	sink := &stuckSink{entered: make(chan struct{}, 16), release: make(chan struct{})}
	h := newHarness(t, newFakeSink(nil), func(cfg *PipelineConfig) { clock.config(cfg); cfg.Sink = sink })
	h.feed(t, 3, func(int) string { return "/pk1/dev1/user/telemetry" })
	<-sink.entered
	start := clock.now()
	clock.add(testStallLimit)
	if err := h.p.Stalled(testStallLimit); err != nil {
		t.Errorf("stuck at the limit, before it passed: %v", err)
	}
	clock.add(time.Second)
	wantStalled(t, h.p, "pipeline stuck since "+start.UTC().Format(time.RFC3339)+" (2m1s)", "3 messages held",
		"1 request to MNS is in progress and has not returned (a send that ignores its time-out)")
	close(sink.release)
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 3 })
	if err := h.p.Stalled(testStallLimit); err != nil {
		t.Errorf("stuck with nothing held: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStalledFindsAPipelineThatStoppedSending: messages held and no
// request in progress (here the sender is blocked in a dead-letter write
// that never returns) is stuck too, and the error says nothing is being
// sent.
func TestStalledFindsAPipelineThatStoppedSending(t *testing.T) {
	clock := newTestClock()
	dead := &stuckDeadLetters{entered: make(chan struct{}, 16), release: make(chan struct{})}
	sink := newFakeSink(func(call, i int, o Outgoing) error { return &PermanentError{Err: errors.New("MessageTooLarge")} })
	h := newHarness(t, sink, func(cfg *PipelineConfig) { clock.config(cfg); cfg.DeadLetters = dead })
	h.feed(t, 2, func(int) string { return "/pk1/dev1/user/telemetry" })
	<-dead.entered
	clock.add(testStallLimit + time.Second)
	wantStalled(t, h.p, "2 messages held", "no request to MNS is in progress: nothing is being sent")
	close(dead.release)
	waitUntil(t, func() bool { return h.p.Stats().InFlight == 0 })
	if err := h.p.Stalled(testStallLimit); err != nil {
		t.Errorf("stuck with nothing held: %v", err)
	}
}

// TestStalledIsNotAFailingDeadLetterTarget: dead-letter writes that fail
// (an MNS dead-letter queue in the same outage, a full disk) are retried
// with backoff, and each failed write that returned is progress: the
// pipeline waits for its target, it is not stuck (/readyz says it).
func TestStalledIsNotAFailingDeadLetterTarget(t *testing.T) {
	clock := newTestClock()
	sink := newFakeSink(func(call, i int, o Outgoing) error { return &PermanentError{Err: errors.New("MessageTooLarge")} })
	h := newHarness(t, sink, clock.config)
	h.dead.failures = 1 << 30
	defer h.drainCutShort(t)
	h.feed(t, 2, func(int) string { return "/pk1/dev1/user/telemetry" })
	waitUntil(t, func() bool { return h.p.Stats().DeadLetterError != "" })
	clock.add(testStallLimit + time.Minute)
	after := clock.now()
	waitUntil(t, func() bool { return !h.p.Stats().LastAnswer.Before(after) })
	if st := h.p.Stats(); st.InFlight != 2 || clock.now().Sub(st.LastProgress) <= testStallLimit {
		t.Fatalf("stats %+v: want 2 held, none dead-lettered for longer than %s", st, testStallLimit)
	}
	if err := h.p.Stalled(testStallLimit); err != nil {
		t.Errorf("a failing dead-letter target reported stuck: %v", err)
	}
}
