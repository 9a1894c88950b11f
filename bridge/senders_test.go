package bridge

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"testing"
)

// goroutineSink records which goroutine made each request.
type goroutineSink struct {
	*fakeSink
	mu  sync.Mutex
	ids map[uint64]int
}

func (s *goroutineSink) Send(ctx context.Context, dest Destination, msgs []Outgoing) []error {
	s.mu.Lock()
	s.ids[goroutineID()]++
	s.mu.Unlock()
	return s.fakeSink.Send(ctx, dest, msgs)
}

func (s *goroutineSink) goroutines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// goroutineID is the calling goroutine's number, from its stack's header.
func goroutineID() uint64 {
	var b [64]byte
	s := b[:runtime.Stack(b[:], false)]
	s = bytes.TrimPrefix(s, []byte("goroutine "))
	id, err := strconv.ParseUint(string(s[:bytes.IndexByte(s, ' ')]), 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

// TestSequentialRequestsShareTheirGoroutine: at a moderate rate each
// request starts when the one before has ended; they run on the goroutine
// kept between requests, not each on a new one (whose stack grew again
// during every request: 3–10 % of the bridge's CPU at 500–5,000 msgs/s).
// Both ways a request starts: a batch filled (Handle starts the sender)
// and a partial batch's linger (the timer's goroutine).
func TestSequentialRequestsShareTheirGoroutine(t *testing.T) {
	const n = 20
	for _, tc := range []struct {
		name  string
		batch int
	}{
		{"batch full", 1},
		{"linger", 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := &goroutineSink{fakeSink: newFakeSink(nil), ids: map[uint64]int{}}
			h := newHarness(t, sink.fakeSink, func(c *PipelineConfig) {
				c.Sink = sink
				c.BatchSize = tc.batch
			})
			for i := 0; i < n; i++ {
				m := Message{Topic: "/pk/dev/user/telemetry", MessageID: fmt.Sprintf("m%05d", i), Body: []byte(`{}`)}
				if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
					t.Fatalf("Handle: %v", err)
				}
				waitUntil(t, func() bool { return h.sink.wasAccepted(m.MessageID) && h.p.Stats().InFlight == 0 })
			}
			if got := sink.goroutines(); got > idleSenders {
				t.Errorf("%d requests one after another ran on %d goroutines, want at most the %d kept between requests", n, got, idleSenders)
			}
			h.settleAll(t, n, Accepted)
		})
	}
}
