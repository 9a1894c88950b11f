package bridge

import (
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

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// fakeSink is a hand-written Sink: fail decides each message's outcome.
type fakeSink struct {
	mu       sync.Mutex
	accepted map[string]int // id → times accepted
	calls    int
	maxBatch int
	fail     func(call int, i int, o Outgoing) error // nil error = accept
	hang     bool
	gate     chan struct{} // when set, each Send takes a token (or sees it closed) before it answers
	waiting  int           // Send calls waiting at the gate
	maxWait  int           // the most Send calls waiting at the gate at once
}

func newFakeSink(fail func(call, i int, o Outgoing) error) *fakeSink {
	return &fakeSink{accepted: map[string]int{}, fail: fail}
}

func (s *fakeSink) Send(ctx context.Context, dest Destination, msgs []Outgoing) []error {
	s.mu.Lock()
	s.calls++
	call := s.calls
	s.maxBatch = max(s.maxBatch, len(msgs))
	hang, gate := s.hang, s.gate
	if gate != nil {
		s.waiting++
		s.maxWait = max(s.maxWait, s.waiting)
	}
	s.mu.Unlock()
	errs := make([]error, len(msgs))
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		s.mu.Lock()
		s.waiting--
		s.mu.Unlock()
	}
	if hang {
		<-ctx.Done()
		for i := range errs {
			errs[i] = ctx.Err()
		}
		return errs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range msgs {
		if s.fail != nil {
			errs[i] = s.fail(call, i, m)
		}
		if errs[i] == nil {
			s.accepted[m.ID]++
		}
	}
	return errs
}

func (s *fakeSink) wasAccepted(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[id] > 0
}

// fakeDead records dead letters; failures > 0 makes the first calls fail.
type fakeDead struct {
	mu       sync.Mutex
	entries  []DeadLetter
	failures int
	writes   int // DeadLetter calls
}

func (d *fakeDead) DeadLetter(ctx context.Context, entries []DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	if d.failures > 0 {
		d.failures--
		return errors.New("disk full")
	}
	d.entries = append(d.entries, entries...)
	return nil
}

func (d *fakeDead) has(id string) (DeadLetter, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.entries {
		if e.Message.MessageID == id {
			return e, true
		}
	}
	return DeadLetter{}, false
}

// recorder is a Settler that checks every Accept happens after the sink or
// the dead-letter target took the message.
type recorder struct {
	t        *testing.T
	sink     *fakeSink
	dead     *fakeDead
	mu       sync.Mutex
	outcomes map[string][]Outcome
	early    atomic.Int64
}

func (r *recorder) Settle(d *Delivery, o Outcome) {
	if o == Accepted {
		_, dl := r.dead.has(d.MessageID)
		if !r.sink.wasAccepted(d.MessageID) && !dl && d.Properties["dup"] == "" {
			r.early.Add(1)
		}
	}
	r.mu.Lock()
	r.outcomes[d.MessageID] = append(r.outcomes[d.MessageID], o)
	r.mu.Unlock()
}

type harness struct {
	p    *Pipeline
	sink *fakeSink
	dead *fakeDead
	rec  *recorder
}

// testPipelineConfig is a complete PipelineConfig for tests: MNS's request
// limits, bounds far above what a test holds, and a retry policy that tests
// shorten where they wait for retries.
func testPipelineConfig(router *Router, sink Sink, dead DeadLetterSink) PipelineConfig {
	return PipelineConfig{
		Router: router, Sink: sink, DeadLetters: dead, Envelope: EnvelopeRaw,
		BatchSize: 16, BatchBytes: 64 << 10, Linger: 5 * time.Millisecond,
		MaxInFlight: 8192, MaxInFlightBytes: 64 << 20, MaxRequestsPerDestination: 64, MaxRequests: 128,
		Retry: RetryPolicy{InitialBackoff: 200 * time.Millisecond, MaxBackoff: 30 * time.Second},
	}
}

// TestNewPipelineTakesItsConfigAsIs: the pipeline fills in no defaults of
// its own (a linger of 0 stays 0, it used to become 5ms) and refuses what is
// out of range, naming the field.
func TestNewPipelineTakesItsConfigAsIs(t *testing.T) {
	cfg := testPipelineConfig(&Router{}, newFakeSink(nil), &fakeDead{})
	cfg.Linger = 0
	p, err := NewPipeline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Drain(context.Background())
	if got := p.tune.Load().Linger; got != 0 {
		t.Errorf("linger 0 became %s", got)
	}
	// A reload (Replace) takes a linger of 0 too, and refuses what is out of
	// range, keeping the tuning it had.
	p.tune.Store(&Tuning{Router: cfg.Router, Envelope: EnvelopeRaw, BatchSize: 16, BatchBytes: 1, Linger: time.Second, Retry: cfg.Retry})
	whole := Tuning{Router: cfg.Router, Envelope: EnvelopeJSON, BatchSize: 3, BatchBytes: 100, Linger: 0, Retry: cfg.Retry}
	if err := p.Replace(whole); err != nil {
		t.Fatal(err)
	}
	if got := *p.tune.Load(); got != whole {
		t.Errorf("after Replace the tuning is %+v, want %+v", got, whole)
	}
	if err := p.Replace(Tuning{Router: cfg.Router, Envelope: EnvelopeRaw, Retry: cfg.Retry}); err == nil ||
		!strings.Contains(err.Error(), "BatchSize and BatchBytes must be at least 1") || *p.tune.Load() != whole {
		t.Errorf("Replace with a zero batch size: %v, tuning now %+v", err, *p.tune.Load())
	}
	cfg.BatchSize, cfg.MaxRequests, cfg.Envelope = 0, 0, ""
	_, err = NewPipeline(cfg)
	for _, want := range []string{"BatchSize must be at least 1, got 0", "MaxRequests must be at least 1", `Envelope ""`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("NewPipeline with zero fields: %v, want it to say %q", err, want)
		}
	}
}

func newHarness(t *testing.T, sink *fakeSink, mod func(*PipelineConfig)) *harness {
	t.Helper()
	router, err := NewRouter([]RouteSpec{
		{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"},
		{Match: "/as/mqtt/status/+/+", Topic: "device-status"},
	}, DefaultRouteSpec{}, NameRules{})
	if err != nil {
		t.Fatal(err)
	}
	dead := &fakeDead{}
	cfg := testPipelineConfig(router, sink, dead)
	cfg.Linger = time.Millisecond
	cfg.Retry = RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewPipeline(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{t: t, sink: sink, dead: dead, outcomes: map[string][]Outcome{}}
	return &harness{p: p, sink: sink, dead: dead, rec: rec}
}

func (h *harness) feed(t *testing.T, n int, topic func(i int) string) {
	t.Helper()
	for i := 0; i < n; i++ {
		m := Message{Topic: topic(i), MessageID: fmt.Sprintf("m%05d", i), Body: []byte(fmt.Sprintf(`{"n":%d}`, i))}
		if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
}

// settleAll drains with a generous deadline and checks every delivery was
// settled exactly once with want.
func (h *harness) settleAll(t *testing.T, n int, want Outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.p.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	h.settled(t, n, want)
}

// drainCutShort drains with a deadline too short for what the pipeline
// holds: Drain must fail and release every message held, none left in
// flight. It returns how many were released.
func (h *harness) drainCutShort(t *testing.T) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.p.Drain(ctx); err == nil {
		t.Fatal("Drain returned nil while the pipeline held messages it could not send")
	}
	st := h.p.Stats()
	if st.InFlight != 0 {
		t.Fatalf("after Drain: stats %+v, want none in flight", st)
	}
	return st.Released
}

// settled checks that n deliveries were settled, each exactly once with
// want, and none accepted before the sink or dead-letter target had it.
func (h *harness) settled(t *testing.T, n int, want Outcome) {
	t.Helper()
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.outcomes) != n {
		t.Fatalf("%d deliveries settled, want %d", len(h.rec.outcomes), n)
	}
	for id, os := range h.rec.outcomes {
		if len(os) != 1 || os[0] != want {
			t.Fatalf("%s settled %v, want once %v", id, os, want)
		}
	}
	if e := h.rec.early.Load(); e > 0 {
		t.Fatalf("%d deliveries were accepted before the sink or dead-letter target had them", e)
	}
}

func userTopic(i int) string { return fmt.Sprintf("/pk%d/dev%d/user/telemetry", i%3, i) }

func TestPipelineForwardsEverythingAndAcksAfterSink(t *testing.T) {
	h := newHarness(t, newFakeSink(nil), nil)
	h.feed(t, 1000, userTopic)
	h.settleAll(t, 1000, Accepted)
	st := h.p.Stats()
	if st.Forwarded != 1000 || st.InFlight != 0 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if h.sink.maxBatch < 2 || h.sink.maxBatch > 16 {
		t.Errorf("max batch = %d, want batching up to 16", h.sink.maxBatch)
	}
}

func TestPipelineRetriesRetryableFailures(t *testing.T) {
	// The first 3 calls fail whole (like a 503 storm), then every 4th message
	// fails once (a partial batch failure).
	failedOnce := map[string]bool{}
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		if call <= 3 {
			return errors.New("503 ServiceUnavailable")
		}
		if i%4 == 0 && !failedOnce[o.ID] {
			failedOnce[o.ID] = true
			return errors.New("InternalError in batch")
		}
		return nil
	})
	h := newHarness(t, sink, nil)
	h.feed(t, 200, userTopic)
	// Forwarded before the drain: a drain that finds MNS failing for all
	// it holds gives it back (drainend.go).
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 200 })
	h.settleAll(t, 200, Accepted)
	st := h.p.Stats()
	if st.Forwarded != 200 || st.Retried == 0 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	for id, n := range sink.accepted {
		if n != 1 {
			t.Errorf("%s accepted %d times", id, n)
		}
	}
}

// refusingSevens is a sink that refuses for good the messages whose id
// ends in 7 (one in ten of feed's) and accepts the rest.
func refusingSevens() *fakeSink {
	return newFakeSink(func(call, i int, o Outgoing) error {
		if strings.HasSuffix(o.ID, "7") {
			return Permanent(errors.New("QueueNotExist: queue telemetry-pk1"))
		}
		return nil
	})
}

func TestPipelineDeadLettersPermanentFailures(t *testing.T) {
	h := newHarness(t, refusingSevens(), nil)
	h.feed(t, 100, userTopic)
	h.settleAll(t, 100, Accepted)
	if got := h.p.Stats().DeadLettered; got != 10 {
		t.Fatalf("dead-lettered %d, want 10", got)
	}
	e, ok := h.dead.has("m00017")
	if !ok || !strings.Contains(e.Reason, "QueueNotExist") || e.Class != ClassRejected || e.Dest.Name != "telemetry-pk2" || e.Attempts != 1 {
		t.Fatalf("dead letter %+v %v", e, ok)
	}
}

func TestPipelineGivesUpAfterMaxAttempts(t *testing.T) {
	sink := newFakeSink(func(call, i int, o Outgoing) error { return errors.New("429 TooManyRequests") })
	h := newHarness(t, sink, func(c *PipelineConfig) { c.Retry.MaxAttempts = 3 })
	h.feed(t, 5, userTopic)
	// Dead-lettered before the drain: a drain that finds MNS failing for
	// all it holds gives it back (drainend.go) rather than wait out the
	// retries.
	waitUntil(t, func() bool { return h.p.Stats().DeadLettered == 5 })
	h.settleAll(t, 5, Accepted)
	e, ok := h.dead.has("m00000")
	if !ok || e.Attempts != 3 || !strings.Contains(e.Reason, "gave up after 3 attempts") || !strings.Contains(e.Reason, "429") || e.Class != ClassRetriesExhausted {
		t.Fatalf("dead letter %+v %v", e, ok)
	}
}

func TestPipelineDeadLettersInvalidAndUnrouted(t *testing.T) {
	h := newHarness(t, newFakeSink(nil), nil)
	bad := Message{Topic: "/pk/dev/user/x", MessageID: "bad", Body: []byte("!!"), Invalid: "body is not valid base64"}
	lost := Message{Topic: "/nowhere", MessageID: "lost", Body: []byte("x")}
	for _, m := range []Message{bad, lost} {
		if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
			t.Fatal(err)
		}
	}
	h.settleAll(t, 2, Accepted)
	if e, ok := h.dead.has("bad"); !ok || e.Reason != "body is not valid base64" || e.Class != ClassInvalidBody || string(e.Message.Body) != "!!" {
		t.Errorf("invalid: %+v", e)
	}
	if e, ok := h.dead.has("lost"); !ok || !strings.Contains(e.Reason, "no route") || e.Class != ClassUnrouted {
		t.Errorf("unrouted: %+v", e)
	}
}

func TestPipelineHoldsWhileDeadLetterTargetFails(t *testing.T) {
	sink := newFakeSink(func(call, i int, o Outgoing) error { return Permanent(errors.New("InvalidArgument")) })
	h := newHarness(t, sink, nil)
	h.dead.failures = 3
	h.feed(t, 1, userTopic)
	h.settleAll(t, 1, Accepted)
	if _, ok := h.dead.has("m00000"); !ok {
		t.Fatal("not dead-lettered after the target recovered")
	}
}

func TestPipelineSuppressesDuplicatesAfterAcceptance(t *testing.T) {
	h := newHarness(t, newFakeSink(nil), func(c *PipelineConfig) { c.Dedup = NewDedup(100, time.Minute) })
	h.feed(t, 10, userTopic)
	// Wait for the first copies to be forwarded, then redeliver them.
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 10 })
	for i := 0; i < 10; i++ {
		m := Message{Topic: userTopic(i), MessageID: fmt.Sprintf("m%05d", i), Properties: map[string]string{"dup": "1"}}
		if err := h.p.Handle(context.Background(), NewDelivery(m, &recorder{t: t, sink: h.sink, dead: h.dead, outcomes: map[string][]Outcome{}}, nil)); err != nil {
			t.Fatal(err)
		}
	}
	h.settleAll(t, 10, Accepted)
	if st := h.p.Stats(); st.Duplicates != 10 || st.Forwarded != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPipelineBackpressureAndReleaseOnShutdown(t *testing.T) {
	sink := newFakeSink(nil)
	sink.hang = true
	h := newHarness(t, sink, func(c *PipelineConfig) { c.MaxInFlight = 20 })
	h.feed(t, 20, userTopic)
	// The 21st blocks until its context ends: backpressure.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	m := Message{Topic: userTopic(20), MessageID: "m00020"}
	if err := h.p.Handle(ctx, NewDelivery(m, h.rec, nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Handle with a full pipeline = %v, want the context's deadline", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer dcancel()
	if err := h.p.Drain(dctx); err == nil {
		t.Fatal("Drain with a hanging sink returned nil")
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.outcomes) != 20 {
		t.Fatalf("%d settled, want 20", len(h.rec.outcomes))
	}
	for id, os := range h.rec.outcomes {
		if len(os) != 1 || os[0] != Released {
			t.Fatalf("%s: %v, want released once", id, os)
		}
	}
	if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Handle after Drain = %v", err)
	}
}

func BenchmarkPipeline(b *testing.B) {
	sink := newFakeSink(nil)
	router, _ := NewRouter([]RouteSpec{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}, DefaultRouteSpec{}, NameRules{})
	p, _ := NewPipeline(testPipelineConfig(router, sink, &fakeDead{}))
	body := []byte(strings.Repeat("x", 256))
	msgs := make([]Message, 64)
	for i := range msgs {
		msgs[i] = Message{Topic: fmt.Sprintf("/pk%d/dev%d/user/t", i%4, i), Body: body}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m := msgs[i%len(msgs)]
		m.MessageID = fmt.Sprint(i)
		p.Handle(context.Background(), NewDelivery(m, nil, nil))
	}
	p.Drain(context.Background())
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func TestDeadLetterLogLinesAreBounded(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1000, 0)
	allowed := 0
	for i := 0; i < 100; i++ {
		if ok, _ := l.allowOf(t0.Add(time.Duration(i)*time.Millisecond), deadLogBurst); ok {
			allowed++
		}
	}
	if allowed != deadLogBurst {
		t.Fatalf("allowed %d lines in one window, want %d", allowed, deadLogBurst)
	}
	if n := l.takeSuppressed(t0.Add(time.Second)); n != 0 {
		t.Fatalf("suppressed count reported inside the window: %d", n)
	}
	later := t0.Add(deadLogWindow + time.Second)
	if n := l.takeSuppressed(later); n != 100-deadLogBurst {
		t.Fatalf("suppressed = %d, want %d", n, 100-deadLogBurst)
	}
	if ok, _ := l.allowOf(later, deadLogBurst); !ok {
		t.Fatal("a new window does not allow lines again")
	}
}

// TestRecoveryWakesWaitingRetries: while a destination fails whole
// requests, retries back off (here to an hour); the first send that
// succeeds again wakes them, so a backlog drains when MNS is back instead of
// after each message's backoff.
func TestRecoveryWakesWaitingRetries(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		if failing.Load() && o.ID != "fresh" {
			return errors.New("503 ServiceUnavailable")
		}
		return nil
	})
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.Retry = RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	})
	h.feed(t, 1, userTopic)
	waitUntil(t, func() bool { return h.p.Stats().Retried >= 30 })
	// From now on the next backoff of that message is about an hour.
	h.p.Retune(Tuning{Retry: RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Hour}})
	before := h.p.Stats().Retried
	// Retried counts a retry once it waits for its backoff or the wake-up
	// of a successful send: from here on the next success must wake it.
	waitUntil(t, func() bool { return h.p.Stats().Retried > before })
	failing.Store(false)
	m := Message{Topic: userTopic(0), MessageID: "fresh", Body: []byte("x")} // same destination
	if err := h.p.Handle(context.Background(), NewDelivery(m, h.rec, nil)); err != nil {
		t.Fatal(err)
	}
	h.p.probeNow() // its probe's backoff (up to an hour now) played out
	waitUntil(t, func() bool { return h.p.Stats().Forwarded == 2 })
	h.settleAll(t, 2, Accepted)
}

// handleAsync calls Handle(ctx, d) in a goroutine of its own. The function
// it returns waits for that call's error; when the call has not returned
// after 30 s it fails the test with hang (the guard only turns a hang into
// a failure).
func (h *harness) handleAsync(ctx context.Context, d *Delivery) func(t *testing.T, hang string) error {
	returned := make(chan error, 1)
	go func() { returned <- h.p.Handle(ctx, d) }()
	return func(t *testing.T, hang string) error {
		t.Helper()
		select {
		case err := <-returned:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal(hang)
			return nil
		}
	}
}

// waitUntil polls cond; the deadline only turns a hang into a failure.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	waitfor.Until(t, "the condition", 60*time.Second, cond)
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// loggingLane is a lane of queue q alone (no pipeline running), whose
// pipeline logs to the handler it returns.
func loggingLane() (*lane, *countingHandler) {
	h := &countingHandler{n: map[string]int{}}
	p := &Pipeline{log: slog.New(h)}
	p.tune.Store(&Tuning{Retry: RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Second}})
	return &lane{p: p, dest: Destination{Kind: Queue, Name: "q"}}, h
}

// TestFlappingDestinationLogsOncePerMinute: under throttling requests fail
// and succeed in turn; the failing state is logged at most once a minute,
// while every success still wakes the waiting retries.
func TestFlappingDestinationLogsOncePerMinute(t *testing.T) {
	l, h := loggingLane()
	now := time.Unix(1000, 0)
	for i := 0; i < 200; i++ {
		now = now.Add(250 * time.Millisecond) // 50 s in all
		wake := l.sendFailed(1, errors.New("429 TooManyRequests"), now, false)
		l.sendOK(now.Add(time.Millisecond))
		select {
		case <-wake:
		default:
			t.Fatal("a success did not wake the retries")
		}
	}
	if n := h.n["MNS sends failing; holding the messages and retrying with backoff"]; n != 1 {
		t.Errorf("failing logged %d times in 50 s of flapping, want 1", n)
	}
	if n := h.n["MNS sends recovered"]; n != 1 {
		t.Errorf("recovered logged %d times, want 1", n)
	}
}

// TestFailingDestinationLogsANewReason: the "failing" line names the first
// failure only; when the failures change kind while the destination still
// fails (walked: connection refused while MNS restarted, then its 408
// TimeExpired for a clock 20 minutes off), the new kind is logged once, a
// further change at most once a minute, and a cancelled send (a shutdown)
// never.
func TestFailingDestinationLogsANewReason(t *testing.T) {
	l, h := loggingLane()
	now := time.Unix(1000, 0)
	refused, expired := errors.New("dial tcp: connection refused"), throttleErr{status: 408}
	l.sendFailed(1, refused, now, false)
	for i := 1; i <= 5; i++ {
		l.sendFailed(1, expired, now.Add(time.Duration(i)*time.Second), true)
	}
	l.sendFailed(1, refused, now.Add(10*time.Second), true)         // within the minute: not logged
	l.sendFailed(1, context.Canceled, now.Add(2*time.Minute), true) // a shutdown: not logged
	l.sendFailed(1, refused, now.Add(2*time.Minute), true)
	const changed = "MNS sends still failing, now for another reason"
	if n := h.n["MNS sends failing; holding the messages and retrying with backoff"]; n != 1 {
		t.Errorf("failing logged %d times, want 1", n)
	}
	if n := h.n[changed]; n != 2 {
		t.Errorf("%q logged %d times, want 2 (408 after the refusal; the refusal again a minute later)", changed, n)
	}
}

// TestShutdownIsNoRecovery: a send that the shutdown cuts short is no
// success: a failing destination is not logged as recovered then (the log
// said "MNS sends recovered" right before "written to the dead-letter file
// at shutdown", with nothing forwarded).
func TestShutdownIsNoRecovery(t *testing.T) {
	logs := &countingHandler{n: map[string]int{}}
	var clock atomic.Int64 // seconds since the start
	sink := newFakeSink(func(int, int, Outgoing) error { return errors.New("MNS is down") })
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.Logger = slog.New(logs)
		c.Now = func() time.Time { return time.Unix(1000+clock.Load(), 0) }
	})
	h.feed(t, 1, userTopic)
	waitUntil(t, func() bool { return h.p.Stats().Retried >= 2 })
	// From now on a send hangs until the shutdown cuts it short, a minute
	// after the failure was logged.
	sink.mu.Lock()
	sink.hang = true
	calls := sink.calls
	sink.mu.Unlock()
	clock.Store(60)
	waitUntil(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls > calls })
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the shutdown deadline has passed
	if err := h.p.Drain(ctx); err == nil {
		t.Fatal("Drain cut short returned nil")
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if n := logs.n["MNS sends failing; holding the messages and retrying with backoff"]; n != 1 {
		t.Errorf("failing logged %d times, want 1", n)
	}
	if n := logs.n["MNS sends recovered"]; n != 0 {
		t.Errorf("recovered logged %d times at a shutdown that forwarded nothing, want 0", n)
	}
}

// TestPipelineNeverReleasesWhatCannotComeBack: at a shutdown that cuts the
// drain short, a redeliverable delivery is released, but one without an
// upstream that would send it again (STOMP ack auto) is handed back by
// Stranded instead, for the caller to store.
func TestPipelineNeverReleasesWhatCannotComeBack(t *testing.T) {
	sink := newFakeSink(func(int, int, Outgoing) error { return errors.New("MNS is down") })
	h := newHarness(t, sink, nil)
	h.feed(t, 10, userTopic) // redeliverable (h.rec settles them)
	for i := 10; i < 25; i++ {
		m := Message{Topic: userTopic(i), MessageID: fmt.Sprintf("m%05d", i)}
		if err := h.p.Handle(context.Background(), NewDelivery(m, nil, nil)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the shutdown deadline has passed
	if err := h.p.Drain(ctx); err == nil {
		t.Fatal("Drain with MNS down returned nil")
	}
	st := h.p.Stats()
	stranded := h.p.Stranded()
	if st.Released != 10 || st.Stranded != 15 || len(stranded) != 15 || st.InFlight != 0 {
		t.Fatalf("released %d, stranded %d (%d handed back), in flight %d; want 10, 15 (15), 0",
			st.Released, st.Stranded, len(stranded), st.InFlight)
	}
	ids := map[string]bool{}
	for _, d := range stranded {
		ids[d.MessageID] = true
	}
	for i := 10; i < 25; i++ {
		if id := fmt.Sprintf("m%05d", i); !ids[id] {
			t.Errorf("%s was not handed back", id)
		}
	}
	if again := h.p.Stranded(); len(again) != 0 {
		t.Errorf("Stranded handed back %d deliveries a second time", len(again))
	}
}

// TestDrainEndsWhenMNSFailsForEverythingHeld: at a shutdown during an MNS
// outage, with every delivery held redeliverable (the spool, AMQP, STOMP
// client-individual), Drain ends once a request and its probe failed
// after it began, releasing them all, instead of waiting its whole
// deadline for a MNS that answers nothing (systemctl restart waited
// shutdown_timeout).
func TestDrainEndsWhenMNSFailsForEverythingHeld(t *testing.T) {
	sink := newFakeSink(func(int, int, Outgoing) error { return errors.New("MNS is down") })
	h := newHarness(t, sink, nil)
	h.feed(t, 10, userTopic) // redeliverable (h.rec settles them)
	waitUntil(t, func() bool { return h.p.Stats().Retried >= 2 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a failure-only deadline
	defer cancel()
	if err := h.p.Drain(ctx); !errors.Is(err, ErrCannotProgress) {
		t.Fatalf("Drain with MNS down = %v, want ErrCannotProgress before the deadline", err)
	}
	if st := h.p.Stats(); st.Released != 10 || st.InFlight != 0 || st.Stranded != 0 {
		t.Errorf("after Drain: released %d, in flight %d, stranded %d; want 10, 0, 0", st.Released, st.InFlight, st.Stranded)
	}
	h.settled(t, 10, Released)
}

// TestDrainEndsAfterALongOutage: a stop after a long MNS outage, when
// every message held waits out a retry backoff grown to its maximum and no
// new message comes (AMQP's credit used up, the intake stopped), asks MNS
// again at once and then at the probe's pace (maxProbeInterval), not when
// a retry comes due: the probe carried only due retries, so the drain
// waited for two of them, up to twice delivery.retry.max_backoff (30 s),
// and an AMQP bridge stopped 5 minutes into an outage took 9 s, a group of
// one connection the whole shutdown_timeout (walk11). The backoff is about
// an hour here.
func TestDrainEndsAfterALongOutage(t *testing.T) {
	sink := newFakeSink(func(int, int, Outgoing) error { return errors.New("503 ServiceUnavailable") })
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.Retry = RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	})
	h.feed(t, 10, func(int) string { return "/pk0/dev0/user/telemetry" }) // one destination, redeliverable
	waitUntil(t, func() bool { return h.p.Stats().Retried >= 300 })
	// From now on the next backoff of those messages is about an hour.
	h.p.Retune(Tuning{Retry: RetryPolicy{InitialBackoff: time.Millisecond, MaxBackoff: time.Hour}})
	before := h.p.Stats().Retried
	waitUntil(t, func() bool { return h.p.Stats().Retried > before })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a failure-only deadline
	defer cancel()
	if err := h.p.Drain(ctx); !errors.Is(err, ErrCannotProgress) {
		t.Fatalf("Drain after a long MNS outage = %v, want ErrCannotProgress before the deadline", err)
	}
	h.settled(t, 10, Released)
}

// TestDrainWaitsOutAThrottlingMNS: a stop while MNS throttles (it fails
// one request in three whole) waits for the probe after a failed request
// instead of ending at the first check in between: MNS takes everything
// within the deadline. Before, Drain ended with ErrCannotProgress at the
// first 100 ms check after the failed request (the probe waits 0.5-1 s
// here) and released the messages MNS would have taken.
func TestDrainWaitsOutAThrottlingMNS(t *testing.T) {
	sink := newFakeSink(func(call, _ int, _ Outgoing) error {
		if call%3 == 1 {
			return errors.New("429 TooManyRequests")
		}
		return nil
	})
	sink.gate = make(chan struct{})
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.MaxRequestsPerDestination = 1
		c.Retry = RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Second}
	})
	h.feed(t, 20, func(int) string { return "/pk0/dev0/user/telemetry" }) // one destination, redeliverable
	waitUntil(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.waiting == 1 })
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		drained <- h.p.Drain(ctx)
	}()
	waitUntil(t, h.p.closing.Load)
	close(sink.gate) // the first request fails whole after the drain began
	if err := <-drained; err != nil {
		t.Fatalf("Drain while MNS fails one request in three = %v, want nil (MNS takes them all)", err)
	}
	h.settled(t, 20, Accepted)
}

// TestDrainEndsAtARequestMNSLeftUnanswered: a stop while MNS answers
// nothing (a blackhole: each request runs out its mns.request_timeout)
// ends the drain once one request after the stop went unanswered, without
// waiting for its probe, which would take another whole time limit to say
// the same (a stop took two request timeouts, 20 s, the default
// shutdown_timeout). Here the probe would hang until the drain's deadline.
func TestDrainEndsAtARequestMNSLeftUnanswered(t *testing.T) {
	sink := newFakeSink(func(int, int, Outgoing) error { return unansweredErr{} })
	sink.gate = make(chan struct{})
	h := newHarness(t, sink, func(c *PipelineConfig) {
		c.MaxRequestsPerDestination = 1
		c.Retry = RetryPolicy{InitialBackoff: 2 * time.Second, MaxBackoff: 2 * time.Second}
	})
	h.feed(t, 10, func(int) string { return "/pk0/dev0/user/telemetry" }) // one destination, redeliverable
	waitUntil(t, func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.waiting == 1 })
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a failure-only deadline
		defer cancel()
		drained <- h.p.Drain(ctx)
	}()
	waitUntil(t, h.p.closing.Load)
	sink.gate <- struct{}{} // the first request goes unanswered after the drain began; its probe would hang
	if err := <-drained; !errors.Is(err, ErrCannotProgress) {
		t.Fatalf("Drain with MNS answering nothing = %v, want ErrCannotProgress before the deadline", err)
	}
	h.settled(t, 10, Released)
}

// unansweredErr is a request that got no answer within its time limit.
type unansweredErr struct{}

func (unansweredErr) Error() string    { return "no reply within 10s" }
func (unansweredErr) Unanswered() bool { return true }

// TestDrainKeepsItsDeadlineForWhatCannotComeBack: deliveries that no
// upstream would send again (STOMP ack auto without the spool) keep the
// whole deadline however often MNS fails meanwhile (at its end they go to
// the dead-letter file; MNS may come back before), and so does a drain
// where a destination still answers, or a request is in flight.
func TestDrainKeepsItsDeadlineForWhatCannotComeBack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *harness)
	}{
		{"not redeliverable", func(h *harness) {
			for i := 0; i < 5; i++ {
				if err := h.p.Handle(context.Background(), NewDelivery(Message{Topic: userTopic(i), MessageID: fmt.Sprintf("s%d", i)}, nil, nil)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"some not redeliverable", func(h *harness) {
			h.feed(t, 5, userTopic)
			if err := h.p.Handle(context.Background(), NewDelivery(Message{Topic: userTopic(0), MessageID: "s0"}, nil, nil)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := newFakeSink(func(int, int, Outgoing) error { return errors.New("MNS is down") })
			h := newHarness(t, sink, nil)
			tc.setup(h)
			waitUntil(t, func() bool { return h.p.Stats().Retried >= 2 })
			drainKeepsItsDeadline(t, h, func() int { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls })
		})
	}
}

// TestUnroutedMessageDoesNotStopIntakeWhileDeadLetterTargetFails: a message
// dead-lettered at intake (no route, invalid body) while the dead-letter
// target fails (its MNS queue refused, the disk full) is held and retried
// like any dead letter, but not in the caller's goroutine: Handle returns, the
// messages behind it are forwarded, and a Drain cut short releases it. Before,
// Handle retried in the source's goroutine: nothing else was taken, and at
// shutdown the bridge waited for that goroutine for ever (walked: SIGTERM with
// a dead-letter queue the RAM user may not send to).
func TestUnroutedMessageDoesNotStopIntakeWhileDeadLetterTargetFails(t *testing.T) {
	lost := Message{Topic: "/nowhere", MessageID: "lost", Body: []byte("x")}
	handle := func(h *harness) {
		t.Helper()
		returned := h.handleAsync(context.Background(), NewDelivery(lost, h.rec, nil))
		if err := returned(t, "Handle of an unrouted message still waits for the failing dead-letter target after 30 s"); err != nil {
			t.Fatalf("Handle: %v", err)
		}
		h.feed(t, 1, userTopic)
		waitUntil(t, func() bool { return h.sink.wasAccepted("m00000") })
	}

	// The target recovers: the message is dead-lettered, then accepted.
	h := newHarness(t, newFakeSink(nil), nil)
	h.dead.failures = 1 << 30
	handle(h)
	h.dead.mu.Lock()
	h.dead.failures = 0
	h.dead.mu.Unlock()
	h.settleAll(t, 2, Accepted)
	if e, ok := h.dead.has("lost"); !ok || e.Class != ClassUnrouted {
		t.Errorf("after the target recovered: dead letter %+v %v", e, ok)
	}

	// It does not: a drain cut short releases it.
	h = newHarness(t, newFakeSink(nil), nil)
	h.dead.failures = 1 << 30
	handle(h)
	if n := h.drainCutShort(t); n != 1 {
		t.Errorf("released %d at the drain deadline, want 1 (the unrouted message)", n)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if got := h.rec.outcomes["lost"]; len(got) != 1 || got[0] != Released {
		t.Errorf("unrouted message's outcomes %v, want released once", got)
	}
}

// refusingDead is a dead-letter target that refuses the entry of one
// message for ever (a dead-letter queue refusing an entry too large for it,
// without a file) and stores the others.
type refusingDead struct {
	*fakeDead
	id string
}

func (d refusingDead) DeadLetter(ctx context.Context, entries []DeadLetter) error {
	for _, e := range entries {
		if e.Message.MessageID == d.id {
			return errors.New("MessageTooLarge")
		}
	}
	return d.fakeDead.DeadLetter(ctx, entries)
}

// TestIntakeDeadLettersWaitBehindOneRetry: while the dead-letter target
// fails, the messages dead-lettered at intake wait behind one retrying
// goroutine: the target gets one write per backoff interval however many
// wait, not one per message, and no goroutine is started per message (with
// 8,192 held that was 8,192 goroutines, each sending its own retries to a
// dead-letter queue). A drain cut short releases every one of them; once the
// target takes them they are all stored, each once; an entry the target
// keeps refusing does not hold up the ones behind it.
func TestIntakeDeadLettersWaitBehindOneRetry(t *testing.T) {
	const n = 40 // three chunks
	unrouted := func(int) string { return "/nowhere" }
	writes := func(h *harness) int {
		h.dead.mu.Lock()
		defer h.dead.mu.Unlock()
		return h.dead.writes
	}

	// The retry waits an hour: every write the target gets is counted.
	h := newHarness(t, newFakeSink(nil), func(cfg *PipelineConfig) {
		cfg.Retry = RetryPolicy{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
	})
	h.dead.failures = 1 << 30
	before := runtime.NumGoroutine()
	h.feed(t, n, unrouted)
	// The first message's write, then the retrying goroutine's first.
	waitUntil(t, func() bool { return writes(h) >= 2 })
	if got := writes(h); got != 2 {
		t.Errorf("%d writes to the failing dead-letter target for %d messages, want 2 (the first message's, then one retry)", got, n)
	}
	// One retrying goroutine; the margin is for timers of earlier tests
	// that may fire meanwhile (one goroutine per message would be 40).
	if got := runtime.NumGoroutine() - before; got > 10 {
		t.Errorf("%d more goroutines with %d intake dead letters waiting, want one retrying them all", got, n)
	}
	if st := h.p.Stats(); st.InFlight != n {
		t.Errorf("%d held, want the %d dead letters", st.InFlight, n)
	}
	if released := h.drainCutShort(t); released != n {
		t.Errorf("released %d at the drain deadline, want all %d", released, n)
	}
	h.settled(t, n, Released)

	// The target recovers: each is stored once, then accepted.
	h = newHarness(t, newFakeSink(nil), nil)
	h.dead.failures = 1 << 30
	h.feed(t, n, unrouted)
	waitUntil(t, func() bool { return writes(h) >= 2 })
	h.dead.mu.Lock()
	h.dead.failures = 0
	h.dead.mu.Unlock()
	h.settleAll(t, n, Accepted)
	h.dead.mu.Lock()
	if len(h.dead.entries) != n {
		t.Errorf("%d dead-letter entries stored for %d messages, want each once", len(h.dead.entries), n)
	}
	h.dead.mu.Unlock()

	// The first one's entry is refused for ever: the others are stored.
	h = newHarness(t, newFakeSink(nil), func(cfg *PipelineConfig) {
		cfg.DeadLetters = refusingDead{cfg.DeadLetters.(*fakeDead), "m00000"}
	})
	h.feed(t, 5, unrouted)
	waitUntil(t, func() bool { return h.p.Stats().DeadLettered == 4 })
	if released := h.drainCutShort(t); released != 1 {
		t.Errorf("released %d at the drain deadline, want the one refused", released)
	}
}

// TestStatsAddUp: Stats, read while messages are taken, forwarded and
// dead-lettered, has each delivery in Received and in exactly one of
// InFlight and its outcome's count, whatever moment it is read at (the
// status, the summary and the stop line print these counts side by side).
// Dead-lettered ones were counted before they left InFlight and forwarded
// ones after: a read in between saw a message twice or not at all
// (TestPipelineHoldsWhenTheDeadLetterFileIsFull failed so under load:
// 'received 24, dead-lettered 20, held 10').
func TestStatsAddUp(t *testing.T) {
	h := newHarness(t, refusingSevens(), nil)
	const n = 2000
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		h.feed(t, n, userTopic)
	}()
	var reads, off int
	var first Stats
	check := func() {
		st := h.p.Stats()
		reads++
		if st.Forwarded+st.DeadLettered+st.InFlight != st.Received {
			if off == 0 {
				first = st
			}
			off++
		}
	}
	for done := false; !done; {
		select {
		case <-fed:
			done = true
		default:
		}
		check()
		runtime.Gosched()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- h.p.Drain(ctx) }()
	for done := false; !done; {
		select {
		case err := <-drained:
			if err != nil {
				t.Fatalf("Drain: %v", err)
			}
			done = true
		default:
		}
		check()
		runtime.Gosched()
	}
	if off > 0 {
		t.Fatalf("%d of %d reads of Stats do not add up, the first: received %d, forwarded %d, dead-lettered %d, in flight %d",
			off, reads, first.Received, first.Forwarded, first.DeadLettered, first.InFlight)
	}
	if st := h.p.Stats(); st.Received != n || st.DeadLettered != n/10 || st.Forwarded != n-n/10 || st.InFlight != 0 {
		t.Fatalf("after the drain: %+v, want %d received, %d dead-lettered, the rest forwarded", st, n, n/10)
	}
}
