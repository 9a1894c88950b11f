package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// errUnavailable is a retryable send failure, as MNS answering 503.
var errUnavailable = errors.New("503 Service Unavailable")

// bigMessage is a message with a body of n bytes of JSON-free text.
func bigMessage(i, n int) Message {
	body := make([]byte, n)
	for j := range body {
		body[j] = 'a' + byte((i+j)%26)
	}
	return Message{Topic: userTopic(i), MessageID: fmt.Sprintf("m%05d", i), Body: body}
}

// TestPipelineHoldsAtMostMaxInFlightBytes: with 45 KB bodies and MNS
// failing, the pipeline takes deliveries only up to its byte bound (far
// below the count bound), Handle then blocks, reaching and clearing the
// bound are logged once each, and nothing is lost when MNS is back.
func TestPipelineHoldsAtMostMaxInFlightBytes(t *testing.T) {
	const (
		bound = 1 << 20
		size  = 45 << 10
		total = 100
	)
	var down atomic.Bool
	down.Store(true)
	sink := newFakeSink(func(_, _ int, _ Outgoing) error {
		if down.Load() {
			return errUnavailable
		}
		return nil
	})
	logs := &countingHandler{n: map[string]int{}}
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.MaxInFlightBytes = bound
		c.Logger = slog.New(logs)
	})
	fed := make(chan error, 1)
	go func() {
		for i := range total {
			if err := h.p.Handle(context.Background(), NewDelivery(bigMessage(i, size), h.rec, nil)); err != nil {
				fed <- err
				return
			}
		}
		fed <- nil
	}()
	one := heldSize(&Message{Topic: userTopic(0), MessageID: "m00000", Body: make([]byte, size)})
	waitUntil(t, func() bool { return h.p.Stats().HeldBytes+one > bound })
	st := h.p.Stats()
	if st.HeldBytes > bound {
		t.Fatalf("held %d bytes, more than the bound %d", st.HeldBytes, bound)
	}
	if want := int64(bound / one); st.Received != want {
		t.Fatalf("took %d deliveries of %d bytes, want %d (bound %d)", st.Received, one, want, bound)
	}
	// The next Handle blocks: a Handle with a done context now fails.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.p.Handle(ctx, NewDelivery(bigMessage(total, size), h.rec, nil)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Handle at the byte bound = %v, want the context's error", err)
	}
	if n := logs.count("the pipeline holds as much as it may; nothing more enters it until MNS takes messages (the source stops reading; with the spool on, the source goes on into the spool)"); n != 1 {
		t.Fatalf("bound reached logged %d times, want 1", n)
	}

	down.Store(false)
	if err := <-fed; err != nil {
		t.Fatalf("Handle: %v", err)
	}
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == total })
	if n := logs.count("the pipeline has room again; messages enter it again"); n != 1 {
		t.Fatalf("bound cleared logged %d times, want 1", n)
	}
	h.settleAll(t, total, Accepted)
	if st := h.p.Stats(); st.HeldBytes != 0 || st.InFlight != 0 {
		t.Fatalf("after the drain: %d held, %d bytes, want none", st.InFlight, st.HeldBytes)
	}
}

// TestPipelineAdmitsOneMessageLargerThanTheBound: a message larger than the
// byte bound is taken when nothing else is held, so it cannot stall intake.
func TestPipelineAdmitsOneMessageLargerThanTheBound(t *testing.T) {
	sink := newFakeSink(nil)
	h := newHarness(t, sink, func(c *PipelineConfig) { c.MaxInFlightBytes = 64 << 10 })
	for i := range 3 {
		if err := h.p.Handle(context.Background(), NewDelivery(bigMessage(i, 100<<10), h.rec, nil)); err != nil {
			t.Fatal(err)
		}
	}
	h.settleAll(t, 3, Accepted)
}

// TestHeldMessageCostsLittleMoreThanItsPayload measures the heap a held
// message costs while MNS fails and its retry waits: at most 1.5 times its
// 45 KB payload, whatever the envelope (the JSON envelope is written for
// each request, not held).
func TestHeldMessageCostsLittleMoreThanItsPayload(t *testing.T) {
	for _, env := range []string{EnvelopeRaw, EnvelopeJSON} {
		t.Run(env, func(t *testing.T) {
			const (
				size = 45 << 10
				n    = 200
			)
			h, before := holding(t, func(c *PipelineConfig) { c.Envelope = env })
			for i := range n {
				if err := h.p.Handle(context.Background(), NewDelivery(bigMessage(i, size), h.rec, nil)); err != nil {
					t.Fatal(err)
				}
			}
			// Every message has been tried once and waits for its retry
			// (each probe interval played out at once).
			waitUntil(t, func() bool { h.p.probeNow(); return h.p.Stats().Retried == n })
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
			t.Logf("envelope %s: %.0f bytes of heap per held message of %d bytes (%.2f×)", env, per, size, per/size)
			if per > 1.5*size {
				t.Errorf("a held message costs %.0f bytes of heap, more than 1.5 × its %d byte payload", per, size)
			}
			// Shutting down releases them all: none is lost.
			h.drainCutShort(t)
			h.settled(t, n, Released)
		})
	}
}

// TestHeldBytesAreTheHeapTheMessagesTake: the byte bound counts a body as
// the heap holds it: the 61,440 bytes of a 45 KiB payload's base64 text
// take 8 pages (65,536 bytes). With the body counted by its length the
// pipeline held about 6% more than its bound.
func TestHeldBytesAreTheHeapTheMessagesTake(t *testing.T) {
	const (
		bound = 8 << 20
		size  = 61440
	)
	h, before := holding(t, func(c *PipelineConfig) { c.MaxInFlightBytes = bound })
	feedCtx, stop := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for i := 0; h.p.Handle(feedCtx, NewDelivery(bigMessage(i, size), h.rec, nil)) == nil; i++ {
		}
	}()
	one := heldSize(&Message{Topic: userTopic(0), MessageID: "m00000", Body: make([]byte, size)})
	waitUntil(t, func() bool { return h.p.Stats().HeldBytes+one > bound })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := h.p.Stats().HeldBytes
	// The message waiting in Handle is on the heap too.
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc) - int64(heapSize(size))
	t.Logf("%d held bytes (bound %d) take %d bytes of heap (%.3f×)", held, bound, heap, float64(heap)/float64(held))
	if heap > held*102/100 {
		t.Errorf("%d held bytes take %d bytes of heap: the bound undercounts what a held message costs", held, heap)
	}
	stop()
	<-fed
	h.drainCutShort(t)
}

// holding is a harness whose sink fails every request and whose retries
// wait an hour: it holds what it takes. before is the heap after a GC, as
// it starts.
func holding(t *testing.T, mod func(*PipelineConfig)) (h *harness, before runtime.MemStats) {
	t.Helper()
	sink := newFakeSink(func(_, _ int, _ Outgoing) error { return errUnavailable })
	h = newHarness(t, sink, func(c *PipelineConfig) {
		c.Retry = RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		mod(c)
	})
	runtime.GC()
	runtime.ReadMemStats(&before)
	return h, before
}

func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// notExist is the error MNS gives for a queue or topic that does not exist.
type notExist struct{}

func (notExist) Error() string            { return "QueueNotExist (HTTP 404): the queue does not exist" }
func (notExist) Retryable() bool          { return false }
func (notExist) MissingDestination() bool { return true }

// TestMissingDestinationOfAFixedRouteIsHeld: MNS says the destination does
// not exist. For a route whose name is literal (the status topic) the
// messages are held and retried until it exists; for a templated name
// (telemetry-{productKey}) they are dead-lettered with the reason.
func TestMissingDestinationOfAFixedRouteIsHeld(t *testing.T) {
	var missing atomic.Bool
	missing.Store(true)
	sink := newFakeSink(func(_, _ int, _ Outgoing) error {
		if missing.Load() {
			return notExist{}
		}
		return nil
	})
	h := newHarness(t, sink, nil)
	status := func(i int) string { return fmt.Sprintf("/as/mqtt/status/pk/dev%d", i) }
	h.feed(t, 4, status)
	for i := 4; i < 8; i++ {
		m := Message{Topic: userTopic(i), MessageID: fmt.Sprintf("m%05d", i), Body: []byte("{}")}
		if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, func() bool { st := h.p.Stats(); return st.DeadLettered == 4 && st.Retried >= 8 })
	for i := range 8 {
		id := fmt.Sprintf("m%05d", i)
		e, dead := h.dead.has(id)
		if fixed := i < 4; fixed == dead {
			t.Fatalf("%s (fixed route %v) dead-lettered %v", id, fixed, dead)
		}
		if dead && !strings.Contains(e.Reason, "QueueNotExist") {
			t.Fatalf("%s dead-lettered with reason %q, want the MNS error", id, e.Reason)
		}
	}
	missing.Store(false) // the operator created the topic
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 4 })
	h.settleAll(t, 8, Accepted)
}

// TestAdmissionLogNamesTheBound: reaching a bound is logged naming the
// bound as PipelineConfig.Names calls it ("Config.<Field>" without Names);
// the wiring gives the config keys.
func TestAdmissionLogNamesTheBound(t *testing.T) {
	for _, tc := range []struct {
		names    Names
		maxCount int
		maxBytes int64
		want     string
	}{
		{nil, 1, 1 << 20, "bound=Config.MaxInFlight "},
		{Names{FieldMaxInFlight: "count key"}, 1, 1 << 20, `bound="count key" `},
		{Names{FieldMaxInFlightBytes: "bytes key"}, 10, 5, `bound="bytes key" `},
	} {
		var logs bytes.Buffer
		a := newAdmission(tc.maxCount, tc.maxBytes, tc.names, slog.New(slog.NewTextHandler(&logs, nil)), time.Now)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := a.acquire(ctx, nil, 4); err != nil {
			t.Fatalf("%s: the first delivery is always admitted: %v", tc.want, err)
		}
		if err := a.acquire(ctx, nil, 4); !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: the second acquire = %v, want it to wait (the context's error)", tc.want, err)
		}
		if !strings.Contains(logs.String(), tc.want) {
			t.Errorf("log %q lacks %q", logs.String(), tc.want)
		}
	}
}
