package deadletter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// gatedSink answers its first Send once release is closed, every message
// with a retryable error (MNS unreachable); it announces each Send on
// entered.
type gatedSink struct {
	entered chan struct{}
	release chan struct{}
}

func (s *gatedSink) Send(_ context.Context, _ bridge.Destination, msgs []bridge.Outgoing) []error {
	s.entered <- struct{}{}
	<-s.release
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = errors.New("HTTP 503: service unavailable")
	}
	return errs
}

// slowQueue is a dead-letter queue on a slow MNS. Like the MNS sink, it
// declares 16 messages a request and sends a longer Send as requests of 16
// in turn; it announces each request on entered (with its size) and
// answers it (accepting it) when the test sends on answer.
type slowQueue struct {
	entered chan int
	answer  chan struct{}
}

func (s *slowQueue) Send(_ context.Context, _ bridge.Destination, msgs []bridge.Outgoing) []error {
	for req := range slices.Chunk(msgs, 16) {
		s.entered <- len(req)
		<-s.answer
	}
	return make([]error, len(msgs))
}

func (s *slowQueue) Limits(bridge.Destination) bridge.SinkLimits {
	return bridge.SinkLimits{Messages: 16}
}

// TestLongDeadLetterWriteIsNotStuck: when a destination has failed longer
// than max_age, its expired messages go to the dead-letter queue in one
// write that sends a request per 16 entries in turn. Each answer of MNS
// during that write counts as life: the bridge is talking to MNS, it is not
// stuck, however long the write takes. Before, liveness saw no answer until
// the whole write returned, and /healthz (and the systemd watchdog) called
// a bridge with a slow MNS stuck. A request of that write that does not
// return is still found after the limit.
func TestLongDeadLetterWriteIsNotStuck(t *testing.T) {
	const (
		limit  = 2 * time.Minute
		maxAge = time.Hour
		n      = 40 // 3 requests to the dead-letter queue: 16, 16, 8
	)
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }

	sink := &gatedSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	queue := &slowQueue{entered: make(chan int), answer: make(chan struct{})}
	targets := NewTargets("", queue, "dlq")
	router, err := bridge.NewRouter([]bridge.RouteSpec{{Match: "/#", Queue: "telemetry"}}, bridge.DefaultRouteSpec{}, bridge.NameRules{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := bridge.NewPipeline(bridge.PipelineConfig{
		Router: router, Sink: sink, DeadLetters: targets, Envelope: bridge.EnvelopeRaw,
		// One request carries the n messages: full, it is sent at once.
		BatchSize: n, BatchBytes: 64 << 10, Linger: time.Hour, MaxInFlight: 1000, MaxInFlightBytes: 64 << 20,
		MaxRequestsPerDestination: 1, MaxRequests: 1,
		Retry: bridge.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAge: maxAge},
		Now:   now,
	})
	if err != nil {
		t.Fatal(err)
	}
	targets.OnAnswer(p.Answered) // as the bridge wires them
	rec := &settles{got: map[string][]bridge.Outcome{}}
	for i := range n {
		m := bridge.Message{Topic: "/pk/dev/user/t", MessageID: fmt.Sprintf("m%03d", i), Body: []byte("b")}
		if err := p.Handle(context.Background(), bridge.NewDelivery(m, rec, nil)); err != nil {
			t.Fatal(err)
		}
	}

	// MNS fails for longer than max_age: the request's answer gives up on
	// all n, and they go to the dead-letter queue in one write.
	<-sink.entered
	advance(maxAge)
	close(sink.release)
	for req := 1; req <= 3; req++ {
		if got, want := <-queue.entered, min(16, n-16*(req-1)); got != want {
			t.Fatalf("dead-letter request %d carries %d entries, want %d", req, got, want)
		}
		if req > 1 {
			// MNS answered the last request less than the limit ago;
			// from the third on, the write has lasted longer than it.
			if err := p.Stalled(limit); err != nil {
				t.Errorf("dead-letter request %d, MNS answering each: %v", req, err)
			}
		}
		if req == 3 {
			// This one does not return: stuck once the limit passed.
			advance(limit + time.Second)
			if err := p.Stalled(limit); err == nil {
				t.Errorf("a dead-letter request that has not returned for longer than the limit: not stuck")
			}
		}
		advance(limit * 6 / 10)
		queue.answer <- struct{}{}
	}
	wait(t, func() bool { return p.Stats().DeadLettered == n })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("m%03d", i)
		if o := rec.got[id]; len(o) != 1 || o[0] != bridge.Accepted {
			t.Fatalf("%s settled %v, want accepted once (dead-lettered)", id, o)
		}
	}
}
