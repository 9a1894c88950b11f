package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// perDelivery is a Settler that records each delivery's outcomes (not each
// message id's: a copy shares its original's id) and checks that an Accept
// comes after the sink or the dead-letter target took the message.
type perDelivery struct {
	sink  *fakeSink
	dead  *fakeDead
	mu    sync.Mutex
	got   map[*Delivery][]Outcome
	early int
}

func newPerDelivery(h *harness) *perDelivery {
	return &perDelivery{sink: h.sink, dead: h.dead, got: map[*Delivery][]Outcome{}}
}

func (r *perDelivery) Settle(d *Delivery, o Outcome) {
	_, dl := r.dead.has(d.MessageID)
	early := o == Accepted && !r.sink.wasAccepted(d.MessageID) && !dl
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[d] = append(r.got[d], o)
	if early {
		r.early++
	}
}

// check fails unless each of ds was settled exactly once with want, none
// accepted early.
func (r *perDelivery) check(t *testing.T, want Outcome, ds ...*Delivery) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, d := range ds {
		if os := r.got[d]; len(os) != 1 || os[0] != want {
			t.Errorf("delivery %d (%s) settled %v, want once %v", i, d.MessageID, os, want)
		}
	}
	if r.early > 0 {
		t.Errorf("%d deliveries were accepted before the sink or dead-letter target had them", r.early)
	}
}

// gatedJoin is a pipeline whose sink holds each Send at its gate, with an
// original handed over and held in a Send, and its copy (same id, another
// delivery and token) handed over after it: the copy arrives while the
// original is held, as a redelivery after a reconnect does.
type gatedJoin struct {
	*harness
	rec        *perDelivery
	orig, copy *Delivery
}

func newGatedJoin(t *testing.T, sink *fakeSink, mod func(*PipelineConfig)) *gatedJoin {
	t.Helper()
	sink.gate = make(chan struct{})
	g := &gatedJoin{harness: newHarness(t, sink, mod)}
	g.rec = newPerDelivery(g.harness)
	m := Message{Topic: userTopic(1), MessageID: "m-1", Body: []byte(`{"n":1}`)}
	g.orig = NewDelivery(m, g.rec, "link-1 delivery 7")
	if err := g.p.Handle(context.Background(), g.orig); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.waiting == 1 })
	g.copy = NewDelivery(m, g.rec, "link-2 delivery 1")
	if err := g.p.Handle(context.Background(), g.copy); err != nil {
		t.Fatal(err)
	}
	if st := g.p.Stats(); st.InFlight != 2 {
		t.Fatalf("after the copy: %d in flight, want 2 (the copy holds its room)", st.InFlight)
	}
	return g
}

// TestCopyJoinsItsHeldOriginal: a copy of a message the pipeline holds
// (MNS slow) is not sent again: when MNS accepts the original, both
// deliveries are settled Accepted, each once, and the copy is counted
// (iot_mns_bridge_duplicates_joined_total). The de-dup window is off:
// joining does not depend on it.
func TestCopyJoinsItsHeldOriginal(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	g := newGatedJoin(t, newFakeSink(nil), func(c *PipelineConfig) { c.Metrics = m })
	close(g.sink.gate)
	drain(t, g.p)
	if n := g.sink.accepted["m-1"]; n != 1 {
		t.Errorf("the sink took the message %d times, want once", n)
	}
	g.rec.check(t, Accepted, g.orig, g.copy)
	if st := g.p.Stats(); st.Forwarded != 1 || st.Joined != 1 || st.InFlight != 0 || st.HeldBytes != 0 {
		t.Errorf("stats %+v, want 1 forwarded, 1 joined, nothing held", st)
	}
	if j, d := counterValue(t, m.Joined), counterValue(t, m.Duplicates); j != 1 || d != 0 {
		t.Errorf("duplicates_joined_total %v, duplicates_suppressed_total %v; want 1, 0", j, d)
	}
}

// TestCopyOfADeadLetteredOriginal: when the held original is dead-lettered
// (MNS refuses it for good), its copy is settled as the dead-letter path
// settles it (Accepted), and the dead-letter target has the message once.
func TestCopyOfADeadLetteredOriginal(t *testing.T) {
	g := newGatedJoin(t, newFakeSink(func(int, int, Outgoing) error { return Permanent(errors.New("InvalidArgument")) }), nil)
	close(g.sink.gate)
	drain(t, g.p)
	g.rec.check(t, Accepted, g.orig, g.copy)
	g.dead.mu.Lock()
	n := len(g.dead.entries)
	g.dead.mu.Unlock()
	if n != 1 {
		t.Errorf("%d dead-letter entries, want 1", n)
	}
	if st := g.p.Stats(); st.DeadLettered != 1 || st.Joined != 1 || st.InFlight != 0 {
		t.Errorf("stats %+v, want 1 dead-lettered, 1 joined, nothing held", st)
	}
}

// TestShutdownSettlesJoinedCopies: a shutdown that cuts the drain short
// while a copy waits on its original releases both (the platform sends the
// message again), or, for deliveries that nothing upstream would send
// again, hands the original back by Stranded, once for the message: the
// spool or the dead-letter file then holds it once, as the dead-letter
// target does when the original is dead-lettered. Nothing is left unsettled
// and nothing lost. Before, the copy was handed back too, and the
// dead-letter file held the message twice (replay sent it once).
//
// Each delivery is counted once, so that the stop line adds up: the
// released copy in released alone (it goes back to the platform, which
// sends it again), the copy of the stranded original in joined (the
// message is kept once, by its original). Before, the released copy was
// in joined as well (joined=2), and the stop line's outcomes came to one
// more than the deliveries received; duplicates_joined_total said 2 too.
func TestShutdownSettlesJoinedCopies(t *testing.T) {
	sink := newFakeSink(nil)
	sink.hang = true // until the drain deadline
	metrics := NewMetrics(prometheus.NewRegistry())
	g := newGatedJoin(t, sink, func(c *PipelineConfig) { c.Metrics = metrics })
	m := Message{Topic: userTopic(2), MessageID: "m-2", Body: []byte(`{"n":2}`)}
	orig2, copy2 := NewDelivery(m, nil, nil), NewDelivery(m, nil, nil) // not redeliverable (STOMP ack auto)
	for _, d := range []*Delivery{orig2, copy2} {
		if err := g.p.Handle(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if g.drainCutShort(t) != 2 {
		t.Errorf("released %d, want the original and its copy", g.p.Stats().Released)
	}
	g.rec.check(t, Released, g.orig, g.copy)
	stranded := g.p.Stranded()
	if len(stranded) != 1 || stranded[0] != orig2 {
		t.Errorf("stranded %v, want the not redeliverable original alone (%p), not its copy (%p)", stranded, orig2, copy2)
	}
	if !copy2.Settled() {
		t.Error("the copy of the stranded original is left unsettled")
	}
	st := g.p.Stats()
	if st.Received != 4 || st.Released != 2 || st.Joined != 1 || st.Stranded != 1 || st.InFlight != 0 || st.HeldBytes != 0 {
		t.Errorf("stats %+v, want 4 received: 2 released (the original and its copy), 1 joined (the stranded original's copy), 1 stranded, nothing held", st)
	}
	if out := st.Forwarded + st.DeadLettered + st.Duplicates + st.Joined + st.Released + st.Stranded; out != st.Received {
		t.Errorf("received %d, but forwarded + dead_lettered + duplicates + joined + released + stranded = %d: %+v", st.Received, out, st)
	}
	if j := counterValue(t, metrics.Joined); j != float64(st.Joined) {
		t.Errorf("duplicates_joined_total %v, the stats' joined %d: they count the same copies", j, st.Joined)
	}
}

// TestJoinedCopyHoldsRoomWithoutDeadlock: a joined copy holds its
// admission room (the bounds hold, whatever the number of reconnects), so
// a further delivery waits; the original finishes without intake, and its
// settlement frees the room of both.
func TestJoinedCopyHoldsRoomWithoutDeadlock(t *testing.T) {
	g := newGatedJoin(t, newFakeSink(nil), func(c *PipelineConfig) { c.MaxInFlight = 2 })
	next := NewDelivery(Message{Topic: userTopic(3), MessageID: "m-3"}, g.rec, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.p.Handle(ctx, next); !errors.Is(err, context.Canceled) {
		t.Fatalf("Handle with the original and its copy held (max 2) = %v, want it to wait for room", err)
	}
	took := make(chan error, 1)
	go func() { took <- g.p.Handle(context.Background(), next) }()
	close(g.sink.gate)
	if err := <-took; err != nil {
		t.Fatal(err)
	}
	drain(t, g.p)
	g.rec.check(t, Accepted, g.orig, g.copy, next)
	if st := g.p.Stats(); st.Forwarded != 2 || st.Joined != 1 {
		t.Errorf("stats %+v, want 2 forwarded, 1 joined", st)
	}
}

// TestMessagesWithoutIDAreNotJoined: two deliveries without a message id
// are two messages, both sent.
func TestMessagesWithoutIDAreNotJoined(t *testing.T) {
	sink := newFakeSink(nil)
	sink.gate = make(chan struct{})
	h := newHarness(t, sink, nil)
	rec := newPerDelivery(h)
	m := Message{Topic: userTopic(1), Body: []byte("x")}
	a, b := NewDelivery(m, rec, nil), NewDelivery(m, rec, nil)
	for _, d := range []*Delivery{a, b} {
		if err := h.p.Handle(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	close(sink.gate)
	drain(t, h.p)
	rec.check(t, Accepted, a, b)
	if n := sink.accepted[""]; n != 2 || h.p.Stats().Joined != 0 {
		t.Errorf("the sink took %d messages without id, joined %d; want 2, 0", n, h.p.Stats().Joined)
	}
}

// TestJoiningSettlesEachDeliveryOnce: copies arriving from several
// goroutines while their originals are sent, retried and accepted: every
// delivery is settled exactly once, Accepted after the sink had it, and
// nothing stays held (run with -race).
func TestJoiningSettlesEachDeliveryOnce(t *testing.T) {
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		if call%3 == 0 {
			return errors.New("503 ServiceUnavailable")
		}
		return nil
	})
	h := newHarness(t, sink, func(c *PipelineConfig) { c.Dedup = NewDedup(1000, time.Minute) })
	rec := newPerDelivery(h)
	const ids, copies = 200, 3
	var all []*Delivery
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := range copies {
		wg.Go(func() {
			for i := range ids {
				m := Message{Topic: userTopic(i), MessageID: fmt.Sprintf("m%05d", i), Body: []byte("x")}
				d := NewDelivery(m, rec, c)
				if err := h.p.Handle(context.Background(), d); err != nil {
					t.Error(err)
				}
				mu.Lock()
				all = append(all, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Every delivery settled before the stop: the drain is not what this
	// test checks (until b94b26e, a drain while the sink still failed one
	// request in three could end early between a failed request and its
	// probe, drainend.go, and release them).
	waitUntil(t, func() bool { return h.p.Stats().InFlight == 0 })
	drain(t, h.p)
	rec.check(t, Accepted, all...)
	st := h.p.Stats()
	if st.Forwarded != ids || st.Forwarded+st.Joined+st.Duplicates != ids*copies || st.InFlight != 0 || len(h.p.held.m) != 0 {
		t.Errorf("stats %+v, %d ids indexed; want %d forwarded, the other deliveries joined or suppressed, none held", st, len(h.p.held.m), ids)
	}
	for id, n := range sink.accepted {
		if n != 1 {
			t.Errorf("the sink took %s %d times, want once", id, n)
		}
	}
}

// drain drains p with a generous deadline.
func drain(t *testing.T, p *Pipeline) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// settleNothing makes a redeliverable delivery whose settling does nothing.
type settleNothing struct{}

func (settleNothing) Settle(*Delivery, Outcome) {}

// BenchmarkHeldIndex is what joining costs a message that has no copy:
// its join at intake and its leave at settlement, with a few thousand
// others held (the index of a busy pipeline).
func BenchmarkHeldIndex(b *testing.B) {
	const held = 4096
	x := heldIndex{m: make(map[string]*Delivery)}
	ds := make([]*Delivery, 2*held)
	for i := range ds {
		ds[i] = NewDelivery(Message{MessageID: fmt.Sprint(int64(1800000000000000000) + int64(i))}, settleNothing{}, nil)
	}
	for _, d := range ds[:held] {
		x.join(d)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in, out := ds[(i+held)%len(ds)], ds[i%len(ds)]
		in.index = notIndexed
		x.join(in)
		x.leave(out)
	}
}

// TestCopyWaitingForRoomItsOriginalHolds: with max_in_flight 1 the
// original holds the only room, so its copy waits in Handle (holding
// nothing: no deadlock) until the original is settled; it then is a new
// delivery, as README says: the de-dup window drops it, and with the window
// off it is sent again. Both deliveries are settled once either way.
func TestCopyWaitingForRoomItsOriginalHolds(t *testing.T) {
	for _, window := range []bool{true, false} {
		sink := newFakeSink(nil)
		sink.gate = make(chan struct{})
		h := newHarness(t, sink, func(c *PipelineConfig) {
			c.MaxInFlight = 1
			if window {
				c.Dedup = NewDedup(100, time.Minute)
			}
		})
		rec := newPerDelivery(h)
		m := Message{Topic: userTopic(1), MessageID: "m-1", Body: []byte(`{"n":1}`)}
		orig, again := NewDelivery(m, rec, "link-1 delivery 7"), NewDelivery(m, rec, "link-2 delivery 1")
		if err := h.p.Handle(context.Background(), orig); err != nil {
			t.Fatal(err)
		}
		took := make(chan error, 1)
		go func() { took <- h.p.Handle(context.Background(), again) }()
		close(sink.gate)
		if err := <-took; err != nil {
			t.Fatal(err)
		}
		drain(t, h.p)
		rec.check(t, Accepted, orig, again)
		want := map[bool]int{true: 1, false: 2}[window]
		if n, st := sink.accepted["m-1"], h.p.Stats(); n != want || st.Joined != 0 || st.Duplicates != int64(2-want) {
			t.Errorf("window %v: the sink took the message %d times (want %d); stats %+v, want none joined", window, n, want, st)
		}
	}
}
