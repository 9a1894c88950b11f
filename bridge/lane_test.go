package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// limitedSink is a fakeSink that declares request limits and records every
// request's message count and size.
type limitedSink struct {
	*fakeSink
	lim  SinkLimits
	mu   sync.Mutex
	reqs [][2]int // messages, bytes
}

func (s *limitedSink) Limits(Destination) SinkLimits { return s.lim }

func (s *limitedSink) Send(ctx context.Context, dest Destination, msgs []Outgoing) []error {
	size := 0
	for i := range msgs {
		size += s.lim.Size(&msgs[i], len(msgs[i].Body))
	}
	s.mu.Lock()
	s.reqs = append(s.reqs, [2]int{len(msgs), size})
	s.mu.Unlock()
	return s.fakeSink.Send(ctx, dest, msgs)
}

// TestPipelineBatchesWithinSinkLimits: the lane batches once, within the
// sink's declared limits (counted as the sink counts sizes), so every Send
// is one request the sink does not have to split, and the request count
// is the batch count.
func TestPipelineBatchesWithinSinkLimits(t *testing.T) {
	// Sizes are counted doubled (like an encoding that grows the body).
	sink := &limitedSink{fakeSink: newFakeSink(nil),
		lim: SinkLimits{Messages: 5, Bytes: 100, Size: func(_ *Outgoing, n int) int { return 2 * n }}}
	h := newHarness(t, sink.fakeSink, func(c *PipelineConfig) { c.Sink = sink; c.BatchSize = 16; c.BatchBytes = 1 << 20 })
	h.rec.sink = sink.fakeSink
	h.feed(t, 300, func(int) string { return "/pk0/dev/user/telemetry" }) // one destination
	h.settleAll(t, 300, Accepted)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	full := 0
	for _, r := range sink.reqs {
		if r[0] > 5 || r[1] > 100 {
			t.Fatalf("a request of %d messages, %d bytes: over the sink's limits 5 and 100", r[0], r[1])
		}
		if r[0] >= 4 {
			full++
		}
	}
	if full == 0 {
		t.Errorf("no request near the limits in %d requests: not batching", len(sink.reqs))
	}
	if got := h.p.Stats().Requests; got != int64(len(sink.reqs)) {
		t.Errorf("Stats.Requests = %d, the sink saw %d requests", got, len(sink.reqs))
	}
}

// TestIdleLanesAreRemoved: a lane that holds nothing for idleLaneAfter is
// dropped when another destination first shows up, so templated names do
// not pile up lanes.
func TestIdleLanesAreRemoved(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Unix(1000, 0).UnixNano())
	h := newHarness(t, newFakeSink(nil), func(c *PipelineConfig) {
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	h.feed(t, 30, userTopic) // 3 destinations: telemetry-pk0..2
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 30 })
	if n := h.p.laneCount(); n != 3 {
		t.Fatalf("%d lanes, want 3", n)
	}
	clock.Add(int64(2 * idleLaneAfter))
	m := Message{Topic: "/pk9/dev/user/telemetry", MessageID: "new", Body: []byte("x")}
	if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
		t.Fatal(err)
	}
	if n := h.p.laneCount(); n != 1 {
		t.Fatalf("%d lanes after 2 idle minutes and a new destination, want 1", n)
	}
	// A removed destination gets a new lane and still works.
	m = Message{Topic: userTopic(0), MessageID: "again", Body: []byte("x")}
	if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
		t.Fatal(err)
	}
	h.settleAll(t, 32, Accepted)
}

// TestRetriesWaitInTheLane: messages waiting for a retry are held by their
// lane, not by a goroutine each: during an outage the goroutine count stays
// flat however many batches wait.
func TestRetriesWaitInTheLane(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		if failing.Load() {
			return errors.New("503 ServiceUnavailable")
		}
		return nil
	})
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.Retry = RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	})
	base := runtime.NumGoroutine()
	h.feed(t, 640, func(i int) string { return fmt.Sprintf("/pk%d/dev/user/telemetry", i%4) })
	// The first requests failed; the rest wait in the lanes for a probe.
	// No sender runs and no linger is left to fire.
	waitUntil(t, func() bool {
		quiet := h.p.sumLanes(func(l *lane) int {
			if l.senders > 0 || len(l.pending) > 0 && !l.lingered {
				return 1
			}
			return 0
		})
		return h.p.heldForRetry()+h.p.pendingCount() == 640 && quiet == 0
	})
	if n := runtime.NumGoroutine() - base; n > 2 {
		t.Fatalf("%d more goroutines while 640 messages (40 batches) wait for their retry, want none per batch", n)
	}
	failing.Store(false)
	// Nothing wakes them before their hour; Drain's deadline releases them.
	if n := h.drainCutShort(t); n != 640 {
		t.Fatalf("%d released, want all 640", n)
	}
}

// TestPipelinePassesBase64Through: with the raw envelope a body the
// platform sent as checked base64 reaches the sink as that text, marked;
// the JSON envelope and the dead-letter target get the payload.
func TestPipelinePassesBase64Through(t *testing.T) {
	var mu sync.Mutex
	var seen []Outgoing
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		mu.Lock()
		seen = append(seen, o)
		mu.Unlock()
		if o.ID == "dead" {
			return Permanent(errors.New("InvalidArgument"))
		}
		return nil
	})
	h := newHarness(t, sink, nil)
	for _, id := range []string{"pass", "dead"} {
		m := Message{Topic: userTopic(0), MessageID: id, Body: []byte("aGk="), Base64: true}
		if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, func() bool { st := h.p.Stats(); return st.Forwarded == 1 && st.DeadLettered == 1 })
	h.p.Retune(Tuning{Envelope: EnvelopeJSON})
	m := Message{Topic: userTopic(0), MessageID: "json", Body: []byte("eyJ0IjoxfQ=="), Base64: true} // {"t":1}
	if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
		t.Fatal(err)
	}
	h.settleAll(t, 3, Accepted)
	mu.Lock()
	defer mu.Unlock()
	for _, o := range seen {
		switch o.ID {
		case "pass":
			if !o.Base64 || string(o.Body) != "aGk=" {
				t.Errorf("raw envelope: the sink got %q (base64 %v), want the text as it came, marked", o.Body, o.Base64)
			}
		case "json":
			if o.Base64 || !bytes.Contains(o.Body, []byte(`"payload":{"t":1}`)) {
				t.Errorf("json envelope: %s (base64 %v), want the decoded payload inlined", o.Body, o.Base64)
			}
		}
	}
}

// TestSlowDestinationHoldsFewBatches: when every request slot of a
// destination is busy, its lane takes two more batches and then Handle
// waits (the source stops reading), far below MaxInFlight. No linger ends
// a batch early: only full batches are sent (with the harness's 1 ms, a
// loaded machine let the first batch go with fewer than 4, and the count
// below never came).
func TestSlowDestinationHoldsFewBatches(t *testing.T) {
	sink := newFakeSink(nil)
	sink.hang = true
	h := newHarness(t, sink, func(c *PipelineConfig) { c.BatchSize = 4; c.MaxRequestsPerDestination = 1; c.Linger = time.Hour })
	var returned atomic.Int64
	go func() {
		for i := 0; i < 100; i++ {
			m := Message{Topic: userTopic(0), MessageID: fmt.Sprintf("m%05d", i), Body: []byte("x")}
			if h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)) != nil {
				return
			}
			returned.Add(1)
		}
	}()
	// One batch of 4 hangs in Send, two batches wait, the 13th Handle waits.
	waitUntil(t, func() bool { return h.p.Stats().Received == 13 && h.p.pendingCount() == 8 })
	if n := returned.Load(); n != 12 {
		t.Fatalf("%d Handle calls returned with the destination's one request hanging, want 12 (4 in the request, 8 waiting)", n)
	}
	// The one waiting in Handle is released too before Drain returns.
	if n := h.drainCutShort(t); n != 13 {
		t.Fatalf("%d released at Drain with a hanging sink, want the 13 held", n)
	}
}

// TestStoppedIntakeDoesNotWaitForRoomInTheLane: a Handle waiting for room
// in a slow destination's lane returns once its context is done (the intake
// stops at a SIGTERM), with the delivery taken: the stop went on to the
// drain, whose shutdown_timeout starts then, only when MNS answered or
// mns.request_timeout passed (a stop took 8 s with shutdown_timeout 3s and
// MNS answering in 40 s). The drain still settles every delivery held.
func TestStoppedIntakeDoesNotWaitForRoomInTheLane(t *testing.T) {
	sink := newFakeSink(nil)
	sink.hang = true
	h := newHarness(t, sink, func(c *PipelineConfig) { c.BatchSize = 4; c.MaxRequestsPerDestination = 1; c.Linger = time.Hour })
	msg := func(i int) *Delivery {
		return NewDelivery(Message{Topic: userTopic(0), MessageID: fmt.Sprintf("m%05d", i), Body: []byte("x")}, h.rec, nil)
	}
	// One batch of 4 hangs in Send, two batches wait in the lane.
	for i := 0; i < 12; i++ {
		if err := h.p.Handle(context.Background(), msg(i)); err != nil {
			t.Fatalf("Handle %d: %v", i, err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	returned := h.handleAsync(ctx, msg(12))
	waitUntil(t, func() bool { return h.p.Stats().Received == 13 })
	stop()
	if err := returned(t, "Handle still waits for room in the lane 30 s after its context ended, while MNS has not answered"); err != nil {
		t.Fatalf("Handle after its context ended: %v, want nil (taken: it had room in the pipeline)", err)
	}
	if n := h.drainCutShort(t); n != 13 {
		t.Fatalf("%d released at Drain with a hanging sink, want the 13 held", n)
	}
}

// gatedOutage is a harness whose sink answers 503 while down is set, and
// whose Send calls each wait at the sink's gate for the test to let them
// answer; waiting counts those calls, senders the lanes' senders.
type gatedOutage struct {
	*harness
	down atomic.Bool
}

func newGatedOutage(t *testing.T, mod func(*PipelineConfig)) *gatedOutage {
	g := &gatedOutage{}
	g.down.Store(true)
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		if g.down.Load() {
			return errors.New("503 ServiceUnavailable")
		}
		return nil
	})
	sink.gate = make(chan struct{})
	g.harness = newHarness(t, sink, mod)
	return g
}

func (g *gatedOutage) waiting() int {
	g.sink.mu.Lock()
	defer g.sink.mu.Unlock()
	return g.sink.waiting
}

func (g *gatedOutage) senders() int {
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	k := 0
	for _, l := range g.p.lanes {
		l.mu.Lock()
		k += l.senders
		l.mu.Unlock()
	}
	return k
}

// handle hands messages from..to-1 to the pipeline and closes the channel
// it returns when Handle has taken them all.
func (g *gatedOutage) handle(t *testing.T, from, to int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := from; i < to; i++ {
			m := Message{Topic: userTopic(0), MessageID: fmt.Sprintf("m%05d", i), Body: []byte("x")}
			if err := g.p.Handle(context.Background(), NewDelivery(m, g.rec, nil)); err != nil {
				t.Errorf("Handle: %v", err)
				return
			}
		}
	}()
	return done
}

func (g *gatedOutage) acceptedOnce(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		id := fmt.Sprintf("m%05d", i)
		if got := g.rec.outcomes[id]; len(got) != 1 || got[0] != Accepted || g.sink.accepted[id] != 1 {
			t.Errorf("%s: outcomes %v, accepted %d times, want accepted once", id, got, g.sink.accepted[id])
		}
	}
}

// TestFailingDestinationKeepsOneRequestInFlight: once a destination's
// requests fail whole (an MNS outage), one request at a time probes it, not
// MaxRequestsPerDestination of them (each holds an encoded request), and
// the lane takes the new messages meanwhile instead of trying each; the
// first success fans out to every slot again, and nothing is lost.
func TestFailingDestinationKeepsOneRequestInFlight(t *testing.T) {
	const slots, n = 8, 40
	g := newGatedOutage(t, func(c *PipelineConfig) { c.BatchSize = 1; c.MaxRequestsPerDestination = slots })
	fed := g.handle(t, 0, n)
	// Before any answer the destination is not known to fail: every slot
	// is used. They all fail.
	waitUntil(t, func() bool { return g.waiting() == slots })
	for range slots {
		g.sink.gate <- struct{}{}
	}
	// The lane takes the rest (far more than the two batches it holds for
	// a destination that is merely slow) while one probe at a time is sent.
	waitUntil(t, func() bool {
		select {
		case <-fed:
			return true
		default:
			return false
		}
	})
	for round := 0; round < 3*slots; round++ {
		waitUntil(t, func() bool { return g.waiting() == 1 && g.senders() == 1 })
		g.sink.gate <- struct{}{}
	}
	// MNS is back: the probe succeeds and the senders fan out again.
	waitUntil(t, func() bool { return g.waiting() == 1 })
	g.down.Store(false)
	g.sink.gate <- struct{}{}
	waitUntil(t, func() bool { return g.waiting() == slots })
	close(g.sink.gate)
	if err := g.p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.acceptedOnce(t, 0, n)
}

// TestRecoveryFansOutWithOnlyNewMessagesReady: when the probe's request
// succeeds, the destination uses every request slot again, also when only
// the messages that waited in the lane are ready (the retries wait an hour)
// and no new one arrives.
func TestRecoveryFansOutWithOnlyNewMessagesReady(t *testing.T) {
	const slots, n = 8, 40
	// The first requests' messages wait an hour: only the new messages
	// are ready when MNS is back.
	g := holdingGroups(t, slots, slots, nil)
	// New messages: the first is the probe (its backoff played out), the
	// rest wait in the lane.
	<-g.handle(t, slots, n)
	g.p.probeNow()
	waitUntil(t, func() bool { return g.waiting() == 1 })
	g.down.Store(false)
	g.sink.gate <- struct{}{}
	waitUntil(t, func() bool { return g.waiting() == slots })
	close(g.sink.gate)
	waitUntil(t, func() bool { return g.p.Stats().Forwarded == n-slots })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.p.Drain(ctx); err == nil {
		t.Fatal("Drain with retries due in an hour returned nil")
	}
	g.acceptedOnce(t, slots, n)
}

// holdingGroups is a gatedOutage with one-message batches, slots requests
// per destination and waits of an hour, whose first groups requests (one
// message each, m00000 on) failed: their messages wait in retry groups, and
// no sender runs. mod changes the config further.
func holdingGroups(t *testing.T, slots, groups int, mod func(*PipelineConfig)) *gatedOutage {
	t.Helper()
	g := newGatedOutage(t, func(c *PipelineConfig) {
		c.BatchSize = 1
		c.MaxRequestsPerDestination = slots
		c.Retry = RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		if mod != nil {
			mod(c)
		}
	})
	<-g.handle(t, 0, groups)
	waitUntil(t, func() bool { return g.waiting() == groups })
	for range groups {
		g.sink.gate <- struct{}{}
	}
	waitUntil(t, func() bool { return g.p.heldForRetry() == groups && g.senders() == 0 })
	return g
}

// elapse plays the passing of every wait in the lanes: each retry group is
// due, and so is the next probe of a failing destination.
func (g *gatedOutage) elapse() { g.p.playWaits(true) }

// probeNow plays the end of each failing destination's probe backoff only.
func (p *Pipeline) probeNow() { p.playWaits(false) }

func (p *Pipeline) playWaits(retries bool) {
	now := time.Now()
	for _, l := range p.laneList() {
		l.mu.Lock()
		if retries {
			for i := range l.retries {
				l.retries[i].due, l.retries[i].soonest = now, now
			}
		}
		if l.failing {
			l.probeAt = now
		}
		l.retryAt = time.Time{}
		l.armRetry()
		l.mu.Unlock()
	}
}

// calls is how many requests the sink has seen, and the most at once.
func (g *gatedOutage) calls() (n, most int) {
	g.sink.mu.Lock()
	defer g.sink.mu.Unlock()
	return g.sink.calls, g.sink.maxWait
}

// TestFailingDestinationProbesOncePerBackoff: while a destination fails,
// one backoff interval costs one request (the probe), however many retry
// groups and new messages wait: over K intervals with N groups held the
// sink sees K requests, not N*K, one at a time, each after the last one
// failed, and the new messages are not each tried. When the probe succeeds
// everything held becomes due, the senders fan out again, and every message
// is accepted once.
func TestFailingDestinationProbesOncePerBackoff(t *testing.T) {
	const slots, groups, n, rounds = 8, 8, 40, 5
	// No wait ends on its own: the test plays each interval (elapse).
	g := holdingGroups(t, slots, groups, nil)
	// New messages wait in the lane; none is sent before the next probe.
	<-g.handle(t, groups, n)
	g.sink.mu.Lock()
	g.sink.maxWait = 0
	g.sink.mu.Unlock()
	for round := 1; round <= rounds; round++ {
		g.elapse()
		waitUntil(t, func() bool { return g.waiting() == 1 })
		g.sink.gate <- struct{}{}
		// The probe failed: its sender stops, nothing else is ready.
		waitUntil(t, func() bool {
			return g.waiting() == 0 && g.senders() == 0 && g.p.heldForRetry() == groups
		})
		if calls, most := g.calls(); calls != groups+round || most != 1 {
			t.Fatalf("after %d probe intervals with %d retry groups held: %d requests (%d at most at once), want %d, one at a time",
				round, groups, calls-groups, most, round)
		}
	}
	if got := g.p.pendingCount(); got != n-groups {
		t.Fatalf("%d new messages waiting in the lane, want %d (the probes carry the due retries first)", got, n-groups)
	}
	// MNS is back: the next probe succeeds; everything held is due.
	g.elapse()
	waitUntil(t, func() bool { return g.waiting() == 1 })
	g.down.Store(false)
	g.sink.gate <- struct{}{}
	waitUntil(t, func() bool { return g.waiting() == slots })
	close(g.sink.gate)
	waitUntil(t, func() bool { return g.p.Stats().Forwarded == n })
	if err := g.p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.acceptedOnce(t, 0, n)
	if _, most := g.calls(); most != slots {
		t.Fatalf("at most %d requests at once after the recovery, want %d", most, slots)
	}
}

// TestFailingDestinationDeadLettersWhatOutlivedMaxAge: while the probes
// carry some held messages, the others still reach delivery.retry.max_age
// as their own retries would have: the first probe that fails after it
// dead-letters every held message past it, retry groups and new messages
// alike, each once, without a request of its own.
func TestFailingDestinationDeadLettersWhatOutlivedMaxAge(t *testing.T) {
	const groups, n = 4, 10
	var clock atomic.Int64
	clock.Store(time.Unix(1000, 0).UnixNano())
	g := holdingGroups(t, groups, groups, func(c *PipelineConfig) {
		c.Retry.MaxAge = time.Minute
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	<-g.handle(t, groups, n)
	clock.Add(int64(2 * time.Minute))
	g.p.probeNow()
	waitUntil(t, func() bool { return g.waiting() == 1 })
	g.sink.gate <- struct{}{}
	waitUntil(t, func() bool { return g.p.Stats().DeadLettered == n })
	if calls, _ := g.calls(); calls != groups+1 {
		t.Fatalf("%d requests, want %d (the probe the only one after the first)", calls, groups+1)
	}
	for i := range n {
		id := fmt.Sprintf("m%05d", i)
		e, ok := g.dead.has(id)
		if !ok || e.Class != ClassRetriesExhausted || !strings.Contains(e.Reason, "503 ServiceUnavailable") {
			t.Errorf("%s: dead-lettered %v as %+v, want retries exhausted with the 503", id, ok, e)
		}
	}
	close(g.sink.gate)
	if err := g.p.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got := g.rec.outcomes[fmt.Sprintf("m%05d", i)]; len(got) != 1 || got[0] != Accepted {
			t.Errorf("m%05d: outcomes %v, want accepted once (dead-lettered)", i, got)
		}
	}
}

// A failing destination's probe interval grows from the retry policy's
// InitialBackoff but stops at maxProbeInterval, however long MaxBackoff is:
// after an outage the bridge sees MNS back within that interval.
func TestProbeIntervalStopsGrowingAtItsCap(t *testing.T) {
	h := newHarness(t, newFakeSink(nil), func(c *PipelineConfig) {
		c.Retry = RetryPolicy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second}
	})
	l := &lane{p: h.p}
	var longest time.Duration
	for probe := range 20 {
		l.mu.Lock()
		l.probeAt = time.Time{} // the previous interval has passed: this is the next probe's failure
		l.mu.Unlock()
		before := time.Now()
		l.sendFailed(1, errors.New("503 ServiceUnavailable"), before, true)
		l.mu.Lock()
		wait := l.probeAt.Sub(before)
		l.mu.Unlock()
		if wait > maxProbeInterval {
			t.Fatalf("probe %d: the next probe waits %s, want at most %s", probe+1, wait, maxProbeInterval)
		}
		longest = max(longest, wait)
	}
	if longest < maxProbeInterval/2 {
		t.Fatalf("the probe interval grew to %s at most in 20 failed probes, want it to reach [%s, %s]", longest, maxProbeInterval/2, maxProbeInterval)
	}
}

// failingLanes is a pipeline (no goroutine running) with n lanes, queues
// q-0000 .. q-(n-1), whose log goes to the handler it returns.
func failingLanes(n int) (*Pipeline, []*lane, *countingHandler) {
	h := &countingHandler{n: map[string]int{}}
	p := &Pipeline{log: slog.New(h), lanes: map[Destination]*lane{}}
	p.tune.Store(&Tuning{Retry: RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Second}})
	lanes := make([]*lane, n)
	for i := range lanes {
		d := Destination{Kind: Queue, Name: fmt.Sprintf("q-%04d", i)}
		lanes[i] = &lane{p: p, dest: d}
		p.lanes[d] = lanes[i]
	}
	return p, lanes, h
}

// TestAccountThrottleLogsAFewDestinations: MNS throttles the account, not a
// queue, so with a queue per device every lane fails at once; the log
// names a few destinations a minute and says that more fail, rather than
// one 'failing' and one 'recovered' line per destination (walk13: 1,000
// templated queues throttled for 30 s wrote 999 of each).
func TestAccountThrottleLogsAFewDestinations(t *testing.T) {
	_, lanes, h := failingLanes(1000)
	now := time.Unix(1000, 0)
	throttled := throttleErr{status: 429}
	for _, l := range lanes {
		l.sendFailed(1, throttled, now, false)
	}
	// A throttle lets some requests through: each destination recovers
	// and fails again within the minute. Those left out are counted once
	// each, not once an episode, as the logged ones are logged once.
	for _, l := range lanes {
		l.sendOK(now.Add(time.Second))
		l.sendFailed(1, throttled, now.Add(2*time.Second), false)
	}
	p := lanes[0].p
	p.failLog.mu.Lock()
	left := p.failLog.suppressed
	p.failLog.mu.Unlock()
	if left != len(lanes)-failLogBurst {
		t.Errorf("%d failures counted as not logged, want %d: one a destination", left, len(lanes)-failLogBurst)
	}
	for _, l := range lanes {
		l.sendOK(now.Add(30 * time.Second))
	}
	if n := h.count("MNS sends failing; holding the messages and retrying with backoff"); n != failLogBurst {
		t.Errorf("failing logged for %d destinations, want %d", n, failLogBurst)
	}
	if n := h.count(moreFailingLine); n != 1 {
		t.Errorf("%q logged %d times, want 1", moreFailingLine, n)
	}
	if n := h.count("MNS sends recovered"); n != failLogBurst {
		t.Errorf("recovered logged for %d destinations, want %d (those whose failure was logged)", n, failLogBurst)
	}
	// A minute later the count of those not logged comes with the next
	// failure, and that failure is logged again.
	lanes[0].sendFailed(1, throttled, now.Add(2*time.Minute), false)
	if n := h.count(moreFailedLine); n != 1 {
		t.Errorf("%q logged %d times, want 1", moreFailedLine, n)
	}
	if n := h.count("MNS sends failing; holding the messages and retrying with backoff"); n != failLogBurst+1 {
		t.Errorf("failing logged %d times after the minute, want %d", n, failLogBurst+1)
	}
}

// TestFailingListsAFewDestinations: /readyz and status list the failing
// destinations one line each; with a queue per device an account-wide
// throttle made that 1,000 lines (walk13: /readyz 221 KB, status printed
// 650 'not ready' lines). The list stops after failingListed and says how
// many more fail; FailingCount counts them all.
func TestFailingListsAFewDestinations(t *testing.T) {
	p, lanes, _ := failingLanes(1000)
	now := time.Unix(1000, 0)
	for _, l := range lanes[:700] {
		l.sendFailed(1, errors.New("TooManyRequests (HTTP 429)"), now, false)
	}
	got := p.Failing()
	if len(got) != failingListed+1 {
		t.Fatalf("Failing() has %d lines, want %d:\n%s", len(got), failingListed+1, strings.Join(got, "\n"))
	}
	if want := "MNS sends to queue q-0000 failing: TooManyRequests (HTTP 429)"; got[0] != want {
		t.Errorf("first line %q, want %q", got[0], want)
	}
	if last := got[len(got)-1]; !strings.Contains(last, fmt.Sprintf("%d more destinations", 700-failingListed)) {
		t.Errorf("last line %q does not say how many more fail", last)
	}
	if n := p.FailingCount(); n != 700 {
		t.Errorf("FailingCount() = %d, want 700", n)
	}
	_, few, _ := failingLanes(3)
	for _, l := range few {
		l.sendFailed(1, errors.New("x"), now, false)
	}
	if got := few[0].p.Failing(); len(got) != 3 {
		t.Errorf("3 failing destinations listed as %d lines, want 3", len(got))
	}
}

// TestDeadLettersBeyondTheBurstAreAnnounced: past deadLogBurst dead
// letters in a minute the log says at once that more are not logged one by
// one; their count came only with a dead letter after the minute, so a
// burst that ended within it left 20 lines and nothing else (walk13: 100
// queues of 1,000 templated ones missing, 2,000 dead letters in 40 s, the
// log named 20 of them).
func TestDeadLettersBeyondTheBurstAreAnnounced(t *testing.T) {
	logs := &countingHandler{n: map[string]int{}}
	h := newHarness(t, newFakeSink(nil), func(c *PipelineConfig) {
		c.Logger = slog.New(logs)
		c.Now = func() time.Time { return time.Unix(1000, 0) }
	})
	h.feed(t, 100, func(int) string { return "/unrouted" })
	waitUntil(t, func() bool { return h.p.Stats().DeadLettered == 100 })
	if n := logs.count("message dead-lettered"); n != deadLogBurst {
		t.Errorf("%d dead letters logged one by one, want %d", n, deadLogBurst)
	}
	if n := logs.count(moreDeadLine); n != 1 {
		t.Errorf("%q logged %d times, want 1", moreDeadLine, n)
	}
}
