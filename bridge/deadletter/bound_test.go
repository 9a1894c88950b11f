package deadletter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// refusingSink answers every message with a permanent error, as MNS does
// for a queue that was deleted.
type refusingSink struct{}

func (refusingSink) Send(_ context.Context, _ bridge.Destination, msgs []bridge.Outgoing) []error {
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = bridge.Permanent(errors.New("QueueNotExist"))
	}
	return errs
}

// settles records each delivery's outcomes.
type settles struct {
	mu  sync.Mutex
	got map[string][]bridge.Outcome
}

func (s *settles) Settle(d *bridge.Delivery, o bridge.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got[d.MessageID] = append(s.got[d.MessageID], o)
}

// TestPipelineHoldsWhenTheDeadLetterFileIsFull: a destination that refuses
// everything sends the stream to the dead-letter file. When the file
// reaches its bound, the pipeline holds the messages, intake stops, the
// file stays within the bound and the failure shows in Stats (readiness);
// once the operator moves the file away, everything held is written to a
// new file and nothing is lost.
func TestPipelineHoldsWhenTheDeadLetterFileIsFull(t *testing.T) {
	const (
		bound = 64 << 10
		total = 35 // the file holds about 20 entries: it fills with 10 more held and 5 waiting
		body  = 2 << 10
	)
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	targets := NewTargets(path, nil, "")
	targets.BoundFile(bound)
	if err := targets.Open(); err != nil {
		t.Fatal(err)
	}
	defer targets.Close()
	router, err := bridge.NewRouter([]bridge.RouteSpec{{Match: "/#", Queue: "deleted"}}, bridge.DefaultRouteSpec{}, bridge.NameRules{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := bridge.NewPipeline(bridge.PipelineConfig{
		Router: router, Sink: refusingSink{}, DeadLetters: targets, Envelope: bridge.EnvelopeRaw,
		BatchSize: 16, BatchBytes: 64 << 10, MaxInFlight: 10, MaxInFlightBytes: 64 << 20, Linger: time.Millisecond,
		MaxRequestsPerDestination: 64, MaxRequests: 128,
		Retry: bridge.RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &settles{got: map[string][]bridge.Outcome{}}
	msg := func(i int) bridge.Message {
		b := make([]byte, body)
		for j := range b {
			b[j] = byte(i + j)
		}
		return bridge.Message{Topic: "/pk/dev/user/t", MessageID: fmt.Sprintf("m%03d", i), Body: b}
	}
	fed := make(chan int, 1)
	go func() {
		i := 0
		for ; i < total; i++ {
			if err := p.Handle(context.Background(), bridge.NewDelivery(msg(i), rec, nil)); err != nil {
				break
			}
		}
		fed <- i
	}()

	// The file fills, the pipeline holds, intake stops.
	wait(t, func() bool { st := p.Stats(); return st.DeadLetterError != "" && st.InFlight == 10 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Handle(ctx, bridge.NewDelivery(msg(total), rec, nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Handle while the dead-letter file is full = %v, want it to block (the context's error)", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > bound {
		t.Fatalf("dead-letter file of %d bytes, more than its bound %d", st.Size(), bound)
	}
	if s := p.Stats(); s.DeadLettered+s.InFlight != s.Received || s.Received >= total {
		t.Fatalf("received %d, dead-lettered %d, held %d: want intake stopped with every message written or held", s.Received, s.DeadLettered, s.InFlight)
	}

	// The operator replays the file elsewhere and moves it away.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if n := <-fed; n != total {
		t.Fatalf("fed %d, want %d", n, total)
	}
	wait(t, func() bool { return p.Stats().DeadLettered == total })
	if e := p.Stats().DeadLetterError; e != "" {
		t.Fatalf("DeadLetterError after recovery = %q", e)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range []string{path + ".1", path} {
		if err := ReadFile(f, func(_ int, e Entry) error { seen[e.MessageID]++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for i := range total {
		id := msg(i).MessageID
		if seen[id] != 1 {
			t.Fatalf("%s is %d times in the dead-letter files, want once", id, seen[id])
		}
		if o := rec.got[id]; len(o) != 1 || o[0] != bridge.Accepted {
			t.Fatalf("%s settled %v, want accepted once", id, o)
		}
	}
}

// wait polls cond; the deadline only turns a hang into a failure.
func wait(t *testing.T, cond func() bool) {
	t.Helper()
	waitfor.Until(t, "the condition", 60*time.Second, cond)
}
