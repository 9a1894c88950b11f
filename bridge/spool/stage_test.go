package spool

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// feedRecorder is a pipeline that records what the stage forwards and
// accepts it (the spool then deletes it), optionally held until released.
type feedRecorder struct {
	mu   sync.Mutex
	ids  []string
	keys []uint64
	got  chan struct{} // one send per forwarded message
	hold chan struct{} // closed: forward; nil: never held
	held chan struct{} // closed when the first message waits for hold
	once sync.Once
}

func newFeedRecorder(n int, held bool) *feedRecorder {
	r := &feedRecorder{got: make(chan struct{}, n+16)}
	if held {
		r.hold, r.held = make(chan struct{}), make(chan struct{})
	}
	return r
}

func (r *feedRecorder) handle(ctx context.Context, d *bridge.Delivery) error {
	if r.hold != nil {
		r.once.Do(func() { close(r.held) })
		select {
		case <-r.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.ids = append(r.ids, d.MessageID)
	r.keys = append(r.keys, d.Token.(uint64))
	r.mu.Unlock()
	d.Accept()
	r.got <- struct{}{}
	return nil
}

func (r *feedRecorder) wait(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-r.got:
		case <-time.After(time.Minute):
			t.Fatalf("forwarded %d of %d messages", i, n)
		}
	}
}

// TestStageForwardsEachMessageOnceInOrder: an earlier run's messages, then
// more than the stage keeps in memory while the pipeline is held (the rest
// is read back from the file), reach the pipeline exactly once, in arrival
// order, and leave the spool.
func TestStageForwardsEachMessageOnceInOrder(t *testing.T) {
	s := open(t, Options{})
	const earlier, n = 10, memMessages + 1000
	var want []string
	for i := range earlier {
		m := msg(i)
		m.MessageID = fmt.Sprintf("old-%d", i)
		add(t, s, m)
		want = append(want, m.MessageID)
	}
	rec := newFeedRecorder(earlier+n, true)
	st := NewStage(s, rec.handle, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() { defer close(fed); st.Feed(ctx) }()
	defer func() { cancel(); <-fed }()
	<-rec.held // the feeder waits in the pipeline with the first earlier message

	var accepted sync.WaitGroup
	for i := range n {
		m := msg(i)
		m.MessageID = fmt.Sprintf("new-%d", i)
		want = append(want, m.MessageID)
		accepted.Add(1)
		d := bridge.NewDelivery(m, settleFunc(func(o bridge.Outcome) {
			if o != bridge.Accepted {
				t.Errorf("delivery %s settled %v, want accepted once durable", m.MessageID, o)
			}
			accepted.Done()
		}), nil)
		if err := st.Intake(ctx, d); err != nil {
			t.Fatalf("Intake %d: %v", i, err)
		}
	}
	accepted.Wait() // every message is durable and settled upstream
	close(rec.hold)
	rec.wait(t, earlier+n)

	rec.mu.Lock()
	got, keys := rec.ids, rec.keys
	rec.mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("forwarded %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("forwarded #%d is %s, want %s (each once, in arrival order)", i, got[i], want[i])
		}
		if i > 0 && keys[i] <= keys[i-1] {
			t.Fatalf("key %d after %d: not in key order", keys[i], keys[i-1])
		}
	}
	if r, want := st.diskRead.Load(), int64(earlier+n-memMessages); r != want {
		t.Errorf("%d messages read from the file; want %d: the earlier run's %d and the %d memory could not hold", r, want, earlier, n-memMessages)
	}
	s.sync()
	if d := s.Stats().Depth; d != 0 {
		t.Errorf("spool depth %d after every message was accepted, want 0", d)
	}
}

// TestStageFeedsFromMemory: with the pipeline keeping up, messages
// committed in this run reach it from memory, not by reading the file
// again (that read was a tenth of the spool's CPU).
func TestStageFeedsFromMemory(t *testing.T) {
	s := open(t, Options{})
	const n = 200
	rec := newFeedRecorder(n, false)
	st := NewStage(s, rec.handle, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() { defer close(fed); st.Feed(ctx) }()
	defer func() { cancel(); <-fed }()
	for i := range n {
		m := msg(i)
		if err := st.Intake(ctx, bridge.NewDelivery(m, nil, nil)); err != nil {
			t.Fatalf("Intake %d: %v", i, err)
		}
		rec.wait(t, 1)
	}
	rec.mu.Lock()
	got := rec.ids
	rec.mu.Unlock()
	for i := range n {
		if want := msg(i).MessageID; got[i] != want {
			t.Fatalf("forwarded #%d is %s, want %s", i, got[i], want)
		}
	}
	// A message can only come from the file when the feeder's timer
	// fires between a commit and its callback.
	if r := st.diskRead.Load(); r > n/2 {
		t.Errorf("%d of %d messages read back from the file; want them from memory", r, n)
	}
}

type settleFunc func(bridge.Outcome)

func (f settleFunc) Settle(_ *bridge.Delivery, o bridge.Outcome) { f(o) }
