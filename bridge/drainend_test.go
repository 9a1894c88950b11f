package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestDrainEndsWhenTheDeadLetterTargetFailsForEverythingHeld: at a stop
// while the dead-letter target refuses every write (a dead-letter queue
// the RAM user may not send to, MNS down, a full file) and every delivery
// held is redeliverable, Drain ends once the target failed a write and its
// retry after the stop, as it does for a failing destination, instead of
// waiting its whole deadline: `systemctl stop` waited shutdown_timeout
// (20 s) with the messages in the spool all along. The retries wait an
// hour here: the stop asks the target again at once, and the retry after
// that within maxProbeInterval.
func TestDrainEndsWhenTheDeadLetterTargetFailsForEverythingHeld(t *testing.T) {
	down := func(int, int, Outgoing) error { return errors.New("MNS is down") }
	tooLarge := func(int, int, Outgoing) error { return Permanent(errors.New("MessageTooLarge")) }
	for _, tc := range []struct {
		name  string
		topic func(i int) string
		fail  func(call, i int, o Outgoing) error
		retry RetryPolicy
	}{
		{"no route: dead-lettered at intake", func(int) string { return "/nowhere" }, nil,
			RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}},
		{"refused by MNS for good: dead-lettered by the lanes", userTopic, tooLarge,
			RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}},
		{"no route, and the others' destination failing", func(i int) string {
			if i%2 == 0 {
				return "/nowhere"
			}
			return userTopic(i)
		}, down, RetryPolicy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink(tc.fail)
			h := newHarness(t, sink, func(cfg *PipelineConfig) { cfg.Retry = tc.retry })
			h.dead.mu.Lock()
			h.dead.failures = 1 << 30
			h.dead.mu.Unlock()
			h.feed(t, 10, tc.topic) // redeliverable (h.rec settles them)
			waitUntil(t, func() bool { h.dead.mu.Lock(); defer h.dead.mu.Unlock(); return h.dead.writes >= 2 })
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a failure-only deadline
			defer cancel()
			if err := h.p.Drain(ctx); !errors.Is(err, ErrCannotProgress) {
				t.Fatalf("Drain with the dead-letter target failing = %v, want ErrCannotProgress before the deadline", err)
			}
			if st := h.p.Stats(); st.Released != 10 || st.InFlight != 0 || st.Stranded != 0 || st.DeadLettered != 0 {
				t.Errorf("after Drain: released %d, in flight %d, stranded %d, dead-lettered %d; want 10, 0, 0, 0",
					st.Released, st.InFlight, st.Stranded, st.DeadLettered)
			}
			h.settled(t, 10, Released)
		})
	}
}

// TestDrainKeepsItsDeadlineForDeadLettersThatCannotComeBack: dead letters
// that no upstream would send again (STOMP ack auto without the spool)
// keep the whole deadline however often the target fails meanwhile: it may
// take them before the deadline, and at its end they are handed back by
// Stranded (for the dead-letter file).
func TestDrainKeepsItsDeadlineForDeadLettersThatCannotComeBack(t *testing.T) {
	h := newHarness(t, newFakeSink(nil), nil)
	h.dead.mu.Lock()
	h.dead.failures = 1 << 30
	h.dead.mu.Unlock()
	for i := 0; i < 5; i++ {
		if err := h.p.Handle(context.Background(), NewDelivery(Message{Topic: "/nowhere", MessageID: fmt.Sprintf("s%d", i)}, nil, nil)); err != nil {
			t.Fatal(err)
		}
	}
	writes := func() int { h.dead.mu.Lock(); defer h.dead.mu.Unlock(); return h.dead.writes }
	waitUntil(t, func() bool { return writes() >= 2 })
	drainKeepsItsDeadline(t, h, writes)
	if st := h.p.Stats(); st.Stranded != 5 || st.InFlight != 0 {
		t.Errorf("after Drain: stranded %d, in flight %d; want 5, 0", st.Stranded, st.InFlight)
	}
}

// drainKeepsItsDeadline drains h and checks that Drain waits for its
// deadline however often MNS or the dead-letter target fails meanwhile:
// many failures after the drain began (calls counts them, each a few ms
// apart, over several of Drain's checks), then the deadline.
func drainKeepsItsDeadline(t *testing.T, h *harness, calls func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	before := calls()
	go func() { done <- h.p.Drain(ctx) }()
	waitUntil(t, func() bool { return calls() >= before+60 })
	select {
	case err := <-done:
		t.Fatalf("Drain returned %v before its deadline while holding what cannot come back", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Drain = %v, want the deadline's error", err)
	}
}
