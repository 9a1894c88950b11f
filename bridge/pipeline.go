package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Pipeline.Handle once the pipeline stopped taking
// deliveries; the source must release the delivery.
var ErrClosed = errors.New("pipeline is shutting down")

// DeadLetter is a message the bridge gives up on, with the reason.
type DeadLetter struct {
	Message  *Message
	Reason   string
	Class    DeadLetterClass // why, from a fixed set (the metric's label)
	Dest     Destination     // zero when no destination was chosen
	Attempts int
	Time     time.Time
}

// DeadLetterSink stores dead letters durably (a JSONL file, an MNS queue).
// DeadLetter returns nil only when every entry is stored; the pipeline keeps
// the deliveries unsettled and tries again while it returns an error. Safe
// for concurrent use.
type DeadLetterSink interface {
	DeadLetter(ctx context.Context, entries []DeadLetter) error
}

// RetryPolicy is the backoff for retryable send failures.
type RetryPolicy struct {
	InitialBackoff time.Duration // more than 0
	MaxBackoff     time.Duration // at least InitialBackoff
	MaxAttempts    int           // 0 = no limit
	MaxAge         time.Duration // 0 = no limit
}

// PipelineConfig wires a Pipeline. Router, Sink and DeadLetters are
// required, and so are the bounds and the retry policy: the pipeline has no
// defaults of its own (the bridge's are in config.Default()); NewPipeline
// refuses a value out of range, naming the field.
type PipelineConfig struct {
	Router      *Router
	Sink        Sink
	DeadLetters DeadLetterSink
	Envelope    string // EnvelopeRaw or EnvelopeJSON
	// Properties says which MNS message properties each message gets from
	// the platform metadata (nil: none beyond the route's own).
	Properties *PropertySpec
	// BatchSize and BatchBytes bound one batch (at least 1).
	BatchSize  int
	BatchBytes int
	// Linger is how long a partly filled batch waits (0: not at all).
	Linger time.Duration
	// MaxInFlight bounds the deliveries held at once, and MaxInFlightBytes
	// their bytes: body, topic, id and properties plus about 0.5 KB of
	// bookkeeping each. Handle blocks when either is reached.
	MaxInFlight      int
	MaxInFlightBytes int64
	// MaxRequestsPerDestination and MaxRequests bound concurrent Sink.Send
	// calls.
	MaxRequestsPerDestination int
	MaxRequests               int
	Retry                     RetryPolicy
	// Dedup, when set, suppresses messages whose id MNS already accepted.
	Dedup   *Dedup
	Metrics *Metrics // optional
	Logger  *slog.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Tuning is the part of the pipeline's configuration that can change while
// it runs (SIGHUP): routes, envelope, batching and retries.
type Tuning struct {
	Router     *Router
	Envelope   string
	BatchSize  int
	BatchBytes int
	Linger     time.Duration
	Retry      RetryPolicy
}

// Pipeline takes deliveries from sources, routes, batches and sends them,
// retries, dead-letters, and settles each delivery exactly once: Accepted
// only after the sink accepted its message (or it was dead-lettered),
// Released when the pipeline shuts down before that. A delivery that is not
// Redeliverable is never released (that would lose it): at shutdown it is
// left unsettled and handed back by Stranded, for the caller to store.
//
// Handle is the bridge.Handler given to sources; Drain shuts down. No
// goroutine is started per message: one goroutine per destination builds
// batches, and one per in-flight request sends them.
type Pipeline struct {
	cfg    PipelineConfig // fixed for the pipeline's life
	tune   atomic.Pointer[Tuning]
	log    *slog.Logger
	now    func() time.Time
	admit  *admission    // bounds the deliveries held, in count and bytes
	reqs   chan struct{} // one token per request in flight
	stats  pipelineStats
	m      *Metrics
	closed chan struct{} // closed when intake stops

	sendCtx    context.Context // cancelled when the drain deadline passes
	cancelSend context.CancelFunc

	deadLog  logLimiter
	deadFail deadFailing

	strandedMu sync.Mutex
	stranded   []*Delivery // not redeliverable, held at shutdown

	mu    sync.Mutex
	lanes map[Destination]*lane
	wg    sync.WaitGroup // lanes, senders, retry waits
	stop  sync.Once
}

type pipelineStats struct {
	received, forwarded, duplicates, deadLettered, retried, released, inFlight atomic.Int64
	strandedN                                                                  atomic.Int64
	requests, batchedMsgs                                                      atomic.Int64
	lastProgress                                                               atomic.Int64 // unix nanos of the last accepted message
}

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Received     int64 // deliveries handed to the pipeline
	Forwarded    int64 // accepted by the sink
	Duplicates   int64 // suppressed by the de-dup window
	DeadLettered int64
	Retried      int64 // message sends retried
	Released     int64 // given back upstream at shutdown (redeliverable ones only)
	Stranded     int64 // held at shutdown but not redeliverable: see Stranded
	InFlight     int64
	HeldBytes    int64 // what the deliveries held count against MaxInFlightBytes
	Requests     int64 // Sink.Send calls
	// LastProgress is when a message was last forwarded or dead-lettered.
	LastProgress time.Time
	// DeadLetterError is the last dead-letter write's error while writes
	// fail (the target is full or broken; messages are held), else "".
	DeadLetterError string
}

// item is one delivery on its way through the pipeline.
type item struct {
	d        *Delivery
	out      Outgoing
	dest     Destination
	attempts int
	first    time.Time
	lastErr  error
	class    DeadLetterClass // set with lastErr when the item is dead-lettered
	// env is the plan of the JSON envelope; its size is 0 when the
	// envelope is raw (out.Body is then the message's body).
	env jsonEnvelope
}

// outLen is the length of the body written to MNS.
func (it *item) outLen() int {
	if it.env.size > 0 {
		return it.env.size
	}
	return len(it.out.Body)
}

// NewPipeline checks cfg, fills defaults and returns a running pipeline.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	if cfg.Router == nil || cfg.Sink == nil || cfg.DeadLetters == nil {
		return nil, errors.New("pipeline: Router, Sink and DeadLetters are required")
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	p := &Pipeline{
		cfg:    cfg,
		log:    cfg.Logger,
		now:    cfg.Now,
		reqs:   make(chan struct{}, cfg.MaxRequests),
		m:      cfg.Metrics,
		closed: make(chan struct{}),
		lanes:  make(map[Destination]*lane),
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	p.admit = newAdmission(cfg.MaxInFlight, cfg.MaxInFlightBytes, p.log, p.now)
	p.tune.Store(&Tuning{Router: cfg.Router, Envelope: cfg.Envelope, BatchSize: cfg.BatchSize,
		BatchBytes: cfg.BatchBytes, Linger: cfg.Linger, Retry: cfg.Retry})
	p.sendCtx, p.cancelSend = context.WithCancel(context.Background())
	p.stats.lastProgress.Store(p.now().UnixNano())
	return p, nil
}

// Retune replaces the routes, envelope, batching and retry settings; the
// deliveries already taken keep the route they got. Zero fields keep their
// current value. Safe for concurrent use with everything else.
func (p *Pipeline) Retune(t Tuning) error {
	cur := *p.tune.Load()
	if t.Router != nil {
		cur.Router = t.Router
	}
	if t.Envelope != "" {
		if t.Envelope != EnvelopeRaw && t.Envelope != EnvelopeJSON {
			return fmt.Errorf("pipeline: envelope %q is not raw or json", t.Envelope)
		}
		cur.Envelope = t.Envelope
	}
	if t.BatchSize > 0 {
		cur.BatchSize = t.BatchSize
	}
	if t.BatchBytes > 0 {
		cur.BatchBytes = t.BatchBytes
	}
	if t.Linger > 0 {
		cur.Linger = t.Linger
	}
	if t.Retry.InitialBackoff > 0 {
		cur.Retry = t.Retry
		if cur.Retry.MaxBackoff < cur.Retry.InitialBackoff {
			cur.Retry.MaxBackoff = cur.Retry.InitialBackoff
		}
	}
	p.tune.Store(&cur)
	return nil
}

// Stats returns the counters. Safe for concurrent use.
func (p *Pipeline) Stats() Stats {
	s := &p.stats
	_, heldBytes := p.admit.held()
	return Stats{
		HeldBytes: heldBytes,
		Received:  s.received.Load(), Forwarded: s.forwarded.Load(), Duplicates: s.duplicates.Load(),
		DeadLettered: s.deadLettered.Load(), Retried: s.retried.Load(), Released: s.released.Load(),
		Stranded: s.strandedN.Load(), InFlight: s.inFlight.Load(), Requests: s.requests.Load(),
		LastProgress:    time.Unix(0, s.lastProgress.Load()),
		DeadLetterError: p.deadFail.current(),
	}
}

// Handle takes one delivery (it is the Handler given to sources). It blocks
// while MaxInFlight deliveries or MaxInFlightBytes are held, until ctx is
// done or the pipeline closes; then it returns an error and the delivery is
// still the caller's. When there is room it takes the delivery even if ctx
// is done. Once Handle returned nil, the pipeline settles the delivery.
func (p *Pipeline) Handle(ctx context.Context, d *Delivery) error {
	select {
	case <-p.closed:
		return ErrClosed
	default:
	}
	d.held = heldSize(&d.Message)
	if err := p.admit.acquire(ctx, p.closed, d.held); err != nil {
		return err
	}
	p.stats.received.Add(1)
	p.stats.inFlight.Add(1)
	p.m.received()
	now := p.now()
	m := &d.Message
	if m.Invalid != "" {
		p.deadLetterNow(&item{d: d, first: now}, m.Invalid, ClassInvalidBody)
		return nil
	}
	if p.cfg.Dedup != nil && p.cfg.Dedup.Seen(m.MessageID, now) {
		p.stats.duplicates.Add(1)
		p.m.duplicate()
		p.done(d, Accepted)
		return nil
	}
	tune := p.tune.Load()
	r := tune.Router.Route(m.Topic)
	if r.DeadLetter {
		p.deadLetterNow(&item{d: d, first: now}, r.Reason, r.Class)
		return nil
	}
	it := &item{d: d, dest: r.Dest, first: now, out: Outgoing{Tag: r.Tag, ID: m.MessageID, GroupID: r.GroupID}}
	if p.cfg.Properties.Enabled() || r.Properties != nil {
		var rp []Property
		if r.Properties != nil {
			rp = *r.Properties
		}
		it.out.Properties, it.out.SystemProperties = p.cfg.Properties.Build(m, rp)
	}
	if tune.Envelope == EnvelopeJSON {
		// The envelope is written for each request (see send), not held.
		it.env = planEnvelope(m)
	} else {
		it.out.Body = m.Body
	}
	l := p.lane(r.Dest)
	select {
	case l.in <- it:
		return nil
	case <-p.sendCtx.Done():
		// The drain deadline passed while we waited: give it back.
		p.done(d, Released)
		return nil
	}
}

// done settles d, frees its slot and counts. A release of a delivery that
// is not redeliverable does not settle it: it is kept for Stranded.
func (p *Pipeline) done(d *Delivery, o Outcome) {
	if o == Released && !d.Redeliverable() {
		// Nothing upstream to tell: marking it settled only makes this
		// happen once.
		if !d.settled.CompareAndSwap(false, true) {
			return
		}
		p.strandedMu.Lock()
		p.stranded = append(p.stranded, d)
		p.strandedMu.Unlock()
		p.stats.strandedN.Add(1)
	} else if !d.settle(o) {
		return
	} else if o == Released {
		p.stats.released.Add(1)
	} else {
		p.stats.lastProgress.Store(p.now().UnixNano())
	}
	p.stats.inFlight.Add(-1)
	p.admit.release(d.held)
}

func (p *Pipeline) lane(dest Destination) *lane {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.lanes[dest]
	if l == nil {
		l = &lane{p: p, dest: dest, in: make(chan *item, p.cfg.BatchSize*2), sem: make(chan struct{}, p.cfg.MaxRequestsPerDestination)}
		p.lanes[dest] = l
		p.wg.Add(1)
		go l.run()
	}
	return l
}

// lane batches the messages of one destination.
type lane struct {
	p    *Pipeline
	dest Destination
	in   chan *item
	sem  chan struct{}

	mu      sync.Mutex
	failing bool          // the last request failed whole
	wake    chan struct{} // closed when a send succeeds again, to end retry waits early
	// Logging of the failing/recovered state, at most once a stateLogEvery
	// per destination: under throttling, requests fail and succeed in turn.
	logged  bool      // "failing" was logged and "recovered" not yet
	lastLog time.Time // when "failing" was last logged
	since   time.Time // when the logged failing period began
	retries int64     // message retries since then
	lastErr string    // the error of the last failed request, while failing
}

// stateLogEvery bounds how often a destination's failing state is logged.
const stateLogEvery = time.Minute

// sendFailed records a request that failed whole (retryable); it logs that
// the destination is failing (not per retry, and at most once a minute) and
// returns the channel that the next success closes.
func (l *lane) sendFailed(n int, err error, now time.Time) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing {
		l.failing = true
		l.wake = make(chan struct{})
		if !l.logged && now.Sub(l.lastLog) >= stateLogEvery {
			l.logged, l.lastLog, l.since, l.retries = true, now, now, 0
			l.p.log.Warn("MNS sends failing; holding the messages and retrying with backoff", "dest", l.dest.String(), "err", err)
		}
	}
	l.retries += int64(n)
	l.lastErr = err.Error()
	return l.wake
}

// sendOK records a request with at least one message accepted: it wakes the
// retries waiting on this destination, so a backlog drains as soon as MNS is
// back rather than after each backoff, and logs the recovery when the
// failure was logged.
func (l *lane) sendOK(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing {
		return
	}
	l.failing = false
	close(l.wake)
	if l.logged && now.Sub(l.lastLog) >= time.Second {
		l.logged = false
		l.p.log.Info("MNS sends recovered", "dest", l.dest.String(), "after", now.Sub(l.since).Round(time.Millisecond), "retries", l.retries)
	}
}

func (l *lane) run() {
	p := l.p
	defer p.wg.Done()
	batch := make([]*item, 0, p.tune.Load().BatchSize)
	size := 0
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		linger.Stop()
		// Acquire request slots; while we wait, the lane reads nothing more,
		// its channel fills and Handle blocks: backpressure.
		select {
		case l.sem <- struct{}{}:
		case <-p.sendCtx.Done():
			p.releaseAll(batch)
			batch, size = batch[:0], 0
			return
		}
		select {
		case p.reqs <- struct{}{}:
		case <-p.sendCtx.Done():
			<-l.sem
			p.releaseAll(batch)
			batch, size = batch[:0], 0
			return
		}
		b := batch
		batch = make([]*item, 0, p.tune.Load().BatchSize)
		size = 0
		p.wg.Add(1)
		go l.send(b)
	}
	for {
		select {
		case it := <-l.in:
			tune := p.tune.Load()
			if len(batch) > 0 && size+it.outLen() > tune.BatchBytes {
				flush()
			}
			if len(batch) == 0 {
				linger.Reset(tune.Linger)
			}
			batch = append(batch, it)
			size += it.outLen()
			if len(batch) >= tune.BatchSize || size >= tune.BatchBytes {
				flush()
			}
		case <-linger.C:
			flush()
		case <-p.sendCtx.Done():
			p.releaseAll(batch)
			for {
				select {
				case it := <-l.in:
					p.done(it.d, Released)
				default:
					return
				}
			}
		}
	}
}

func (p *Pipeline) releaseAll(items []*item) {
	for _, it := range items {
		p.done(it.d, Released)
	}
}

// send performs one request for batch and handles each message's outcome.
// It holds one lane slot and one global request slot, released before any
// retry wait.
func (l *lane) send(batch []*item) {
	p := l.p
	defer p.wg.Done()
	outs := make([]Outgoing, len(batch))
	envSize := 0
	for _, it := range batch {
		envSize += it.env.size
	}
	// One buffer for the batch's JSON envelopes, dropped after the request.
	envs := make([]byte, 0, envSize)
	for i, it := range batch {
		outs[i] = it.out
		if it.env.size > 0 {
			start := len(envs)
			envs = it.env.append(envs, &it.d.Message)
			outs[i].Body = envs[start:len(envs):len(envs)]
		}
		it.attempts++
	}
	start := p.now()
	errs := p.cfg.Sink.Send(p.sendCtx, l.dest, outs)
	p.m.request(l.dest, errs, p.now().Sub(start))
	<-p.reqs
	<-l.sem
	p.stats.requests.Add(1)

	var retry, dead []*item
	ok := 0
	for i, it := range batch {
		var err error
		if i < len(errs) {
			err = errs[i]
		} else {
			err = errors.New("sink returned fewer outcomes than messages")
		}
		switch {
		case err == nil:
			ok++
			p.stats.forwarded.Add(1)
			p.m.forwarded()
			if p.cfg.Dedup != nil {
				p.cfg.Dedup.Add(it.d.MessageID, p.now())
			}
			p.done(it.d, Accepted)
		case p.sendCtx.Err() != nil:
			p.done(it.d, Released)
		case !Retryable(err):
			it.lastErr, it.class = err, ClassOf(err, ClassRejected)
			dead = append(dead, it)
		default:
			it.lastErr = err
			if reason := p.exhausted(it); reason != "" {
				it.lastErr, it.class = fmt.Errorf("%s: %w", reason, err), ClassRetriesExhausted
				dead = append(dead, it)
			} else {
				retry = append(retry, it)
			}
		}
	}
	if len(dead) > 0 {
		p.deadLetter(dead)
	}
	if ok > 0 || len(retry) == 0 {
		l.sendOK(p.now())
	}
	if len(retry) > 0 {
		// A whole request failing is an outage of the destination; some
		// messages of a batch failing is not (their retries wait their
		// backoff).
		var wake <-chan struct{}
		if ok == 0 {
			wake = l.sendFailed(len(retry), retry[0].lastErr, p.now())
		}
		// Counted once the wake-up is taken: a success seen after the count
		// moved wakes these retries.
		p.stats.retried.Add(int64(len(retry)))
		p.m.retried(len(retry))
		p.retryLater(l, retry, wake)
	}
}

// exhausted says why it must not be retried again, or "".
func (p *Pipeline) exhausted(it *item) string {
	r := p.tune.Load().Retry
	if r.MaxAttempts > 0 && it.attempts >= r.MaxAttempts {
		return fmt.Sprintf("gave up after %d attempts", it.attempts)
	}
	if r.MaxAge > 0 && p.now().Sub(it.first) >= r.MaxAge {
		return fmt.Sprintf("gave up after %s of retries (%d attempts)", p.now().Sub(it.first).Round(time.Millisecond), it.attempts)
	}
	return ""
}

// retryLater waits the backoff of the batch's most-tried message, then puts
// the items back into the lane. The deliveries stay held meanwhile.
// A send to the destination that succeeds meanwhile (wake closes) ends the
// wait early.
func (p *Pipeline) retryLater(l *lane, items []*item, wake <-chan struct{}) {
	attempts := 0
	for _, it := range items {
		attempts = max(attempts, it.attempts)
	}
	retry := p.tune.Load().Retry
	b := Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff, attempt: attempts - 1}
	wait := b.Next()
	p.log.Debug("MNS send failed; retrying", "dest", l.dest.String(), "messages", len(items), "attempt", attempts, "backoff", wait, "err", items[0].lastErr)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTimer(wait)
		defer t.Stop()
		start := time.Now()
		select {
		case <-t.C:
		case <-wake:
			// Never sooner than the initial backoff: no hot loop.
			if rest := retry.InitialBackoff - time.Since(start); rest > 0 {
				t.Reset(rest)
				select {
				case <-t.C:
				case <-p.sendCtx.Done():
					p.releaseAll(items)
					return
				}
			}
		case <-p.sendCtx.Done():
			p.releaseAll(items)
			return
		}
		for i, it := range items {
			select {
			case l.in <- it:
			case <-p.sendCtx.Done():
				p.releaseAll(items[i:])
				return
			}
		}
	}()
}

// deadLetterNow dead-letters one item from Handle (invalid or unroutable).
func (p *Pipeline) deadLetterNow(it *item, reason string, class DeadLetterClass) {
	it.lastErr, it.class = errors.New(reason), class
	p.deadLetter([]*item{it})
}

// deadLetter stores items in the dead-letter sink, then accepts them
// upstream. While the dead-letter sink fails, the deliveries stay held and
// the write is retried with backoff; at shutdown they are released.
func (p *Pipeline) deadLetter(items []*item) {
	entries := make([]DeadLetter, len(items))
	now := p.now()
	for i, it := range items {
		reason := "unknown"
		if it.lastErr != nil {
			reason = it.lastErr.Error()
		}
		entries[i] = DeadLetter{Message: &it.d.Message, Reason: reason, Class: it.class, Dest: it.dest, Attempts: it.attempts, Time: now}
	}
	retry := p.tune.Load().Retry
	b := Backoff{Min: retry.InitialBackoff, Max: retry.MaxBackoff}
	failing := false
	for {
		err := p.cfg.DeadLetters.DeadLetter(p.sendCtx, entries)
		if err == nil {
			break
		}
		if p.sendCtx.Err() != nil {
			p.releaseAll(items)
			return
		}
		if !failing {
			p.deadFail.failed(p.log, err, p.now())
			failing = true
		}
		t := time.NewTimer(b.Next())
		select {
		case <-t.C:
		case <-p.sendCtx.Done():
			t.Stop()
			p.releaseAll(items)
			return
		}
	}
	p.deadFail.ok(p.log, p.now())
	for _, e := range entries {
		if p.deadLog.allow(p.now()) {
			p.log.Warn("message dead-lettered", "messageId", e.Message.MessageID, "topic", e.Message.Topic, "dest", destString(e.Dest), "reason", e.Reason)
		}
	}
	if n := p.deadLog.takeSuppressed(p.now()); n > 0 {
		p.log.Warn("more messages dead-lettered; not logged one by one (see the dead-letter target and the dead_lettered_total metric)", "count", n, "window", deadLogWindow)
	}
	p.stats.deadLettered.Add(int64(len(items)))
	p.m.deadLettered(entries)
	for _, it := range items {
		p.done(it.d, Accepted)
	}
}

// deadFailing is the state of the dead-letter writes across all the
// pipeline's writers: the first failure is logged once (at most once a
// stateLogEvery), and the recovery once; meanwhile the messages are held,
// which stops intake once the pipeline is full.
type deadFailing struct {
	mu      sync.Mutex
	err     string // "" while writes succeed
	logged  bool
	lastLog time.Time
	since   time.Time
}

func (d *deadFailing) failed(log *slog.Logger, err error, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == "" {
		d.since = now
	}
	d.err = err.Error()
	if !d.logged && (d.lastLog.IsZero() || now.Sub(d.lastLog) >= stateLogEvery) {
		d.logged, d.lastLog = true, now
		log.Error("dead-letter write failed; holding the messages and retrying (the source pauses once the pipeline is full)", "err", err)
	}
}

func (d *deadFailing) ok(log *slog.Logger, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err == "" {
		return
	}
	d.err = ""
	if d.logged {
		d.logged = false
		log.Info("dead-letter write recovered", "after", now.Sub(d.since).Round(time.Millisecond))
	}
}

func (d *deadFailing) current() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// deadLogWindow and deadLogBurst bound the dead-letter log lines: at most
// deadLogBurst a window, then one line with the count of the rest.
const (
	deadLogWindow = time.Minute
	deadLogBurst  = 20
)

// logLimiter lets deadLogBurst events a window through and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

func (l *logLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= deadLogWindow {
		l.start, l.n = now, 0
	}
	l.n++
	if l.n > deadLogBurst {
		l.suppressed++
		return false
	}
	return true
}

// takeSuppressed returns the count suppressed once the window has passed
// (and resets it), else 0.
func (l *logLimiter) takeSuppressed(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.suppressed == 0 || now.Sub(l.start) < deadLogWindow {
		return 0
	}
	n := l.suppressed
	l.suppressed = 0
	return n
}

func destString(d Destination) string {
	if d.Kind == 0 {
		return ""
	}
	return d.String()
}

// Failing lists the destinations whose last request failed whole (an MNS
// outage, a refused credential), each with that request's error, for
// readiness: it changes with the first failed request and the first
// success, without waiting for a periodic check.
func (p *Pipeline) Failing() []string {
	p.mu.Lock()
	lanes := make([]*lane, 0, len(p.lanes))
	for _, l := range p.lanes {
		lanes = append(lanes, l)
	}
	p.mu.Unlock()
	var out []string
	for _, l := range lanes {
		l.mu.Lock()
		if l.failing {
			out = append(out, fmt.Sprintf("MNS sends to %s failing: %s", l.dest, l.lastErr))
		}
		l.mu.Unlock()
	}
	slices.Sort(out)
	return out
}

// Stranded returns the deliveries that were still held when Drain cut the
// drain short and that are not Redeliverable (releasing them would lose
// them): they are the caller's to store (the spool, the dead-letter file).
// There is nothing upstream to settle them with. Call it after Drain; it
// hands each delivery back once.
func (p *Pipeline) Stranded() []*Delivery {
	p.strandedMu.Lock()
	defer p.strandedMu.Unlock()
	out := p.stranded
	p.stranded = nil
	return out
}

// Drain stops intake (Handle returns ErrClosed from now on) and waits until
// every delivery held is settled, or until ctx is done; then it cancels the
// sends in progress and releases what is left. It returns ctx's error when
// the deadline cut the drain short. Drain may be called once.
func (p *Pipeline) Drain(ctx context.Context) error {
	p.stop.Do(func() { close(p.closed) })
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var err error
	for p.stats.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
			continue
		}
		break
	}
	p.cancelSend()
	p.wg.Wait()
	return err
}
