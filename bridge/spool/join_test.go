package spool

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// gatedSink accepts every message once its gate is open (the test opens it
// before the drain), counting each id.
type gatedSink struct {
	gate chan struct{}
	mu   sync.Mutex
	got  map[string]int
}

func (s *gatedSink) Send(_ context.Context, _ bridge.Destination, msgs []bridge.Outgoing) []error {
	<-s.gate
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.got[m.ID]++
	}
	return make([]error, len(msgs))
}

type noDeadLetters struct{}

func (noDeadLetters) DeadLetter(context.Context, []bridge.DeadLetter) error { return nil }

// TestSpooledCopiesJoinInThePipeline: with the spool on, the pipeline's
// deliveries are the spool's messages. A redelivery the spool stored while
// the first copy waits to be sent (the platform sent it again before the
// first copy's settlement reached it: its connection dropped before the
// commit) is fed to the pipeline and joins the first: MNS gets the
// message once, and both leave the spool.
func TestSpooledCopiesJoinInThePipeline(t *testing.T) {
	s := open(t, Options{})
	router, err := bridge.NewRouter(nil, bridge.DefaultRouteSpec{Queue: "telemetry"}, bridge.NameRules{})
	if err != nil {
		t.Fatal(err)
	}
	sink := &gatedSink{gate: make(chan struct{}), got: map[string]int{}}
	p, err := bridge.NewPipeline(bridge.PipelineConfig{Router: router, Sink: sink, DeadLetters: noDeadLetters{},
		Envelope: bridge.EnvelopeRaw, BatchSize: 16, BatchBytes: 64 << 10, MaxInFlight: 100, MaxInFlightBytes: 1 << 20,
		MaxRequestsPerDestination: 4, MaxRequests: 4,
		Retry: bridge.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	st := NewStage(s, p.Handle, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() { st.Feed(ctx); close(fed) }()
	defer func() { cancel(); <-fed }()
	for _, link := range []string{"link-1", "link-2"} {
		if err := st.Intake(ctx, bridge.NewDelivery(msg(1), nopSettler{}, link)); err != nil {
			t.Fatal(err)
		}
	}
	// A copy is counted in Joined once its original is settled: until
	// then both are held, the first one in the gated Send.
	waitfor.Until(t, "the stored copy taken by the pipeline", 30*time.Second, func() bool { st := p.Stats(); return st.Received == 2 && st.InFlight == 2 })
	close(sink.gate)
	waitDepth(t, s, 0)
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sink.got["m-1"]; n != 1 {
		t.Errorf("MNS got the message %d times, want once", n)
	}
	if st := p.Stats(); st.Forwarded != 1 || st.Joined != 1 {
		t.Errorf("pipeline %+v, want 1 forwarded, 1 joined", st)
	}
}
