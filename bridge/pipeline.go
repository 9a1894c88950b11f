package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/monotime"
)

// The pipeline, in the order a delivery goes through it:
//
//   - admission.go: the bound on what is held (MaxInFlight, MaxInFlightBytes).
//   - intake.go: Handle admits a delivery, joins a redelivered copy to its
//     held original (join.go), drops a duplicate, dead-letters what cannot be sent, routes it and renders its body, and
//     queues it on its destination's lane; done settles it and frees its slot.
//   - lane.go: one lane per destination batches once, within the batch
//     settings and the sink's own limits (LimitedSink), so one batch is one
//     request; it holds the messages waiting for a retry and is removed when
//     idle.
//   - sender.go: a lane's senders send the ready batches (at most
//     MaxRequestsPerDestination at once, MaxRequests in all), settle what the
//     sink accepted and put what failed back on the lane for a retry after a
//     backoff, or dead-letter it.
//   - deadletters.go: dead-letter writing, held and retried while the
//     dead-letter target fails, with bounded logging.

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
	// Redeliverable says the message's upstream (the spool, the platform)
	// gives it again after a restart until it is settled
	// (Delivery.Redeliverable): a target may wait for another before
	// storing it (deadletter.Targets).
	Redeliverable bool
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
	// BatchSize and BatchBytes bound one batch (at least 1); a
	// LimitedSink's own limits bound it further. BatchBytes counts the
	// message sizes as the sink does (for MNS: after the body encoding).
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
	Dedup *Dedup
	// Metrics, when set, are the collectors the pipeline counts in; nil
	// counts in its own, registered nowhere.
	Metrics *Metrics
	Logger  *slog.Logger
	// Names is what the log lines call the Fields (the wiring: the config
	// keys); nil names them "Config.<Field>".
	Names Names
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
// goroutine is started per message, and none lives per destination: a
// lane's senders run only while it has batches ready (one goroutine per
// request in flight, and up to idleSenders kept between requests).
type Pipeline struct {
	cfg   PipelineConfig // fixed for the pipeline's life
	tune  atomic.Pointer[Tuning]
	log   *slog.Logger
	now   func() time.Time
	admit *admission    // bounds the deliveries held, in count and bytes
	reqs  chan struct{} // one token per request in flight
	stats pipelineStats
	m     *Metrics
	// limited is the sink's limits, when it declares them.
	limited LimitedSink

	closed   chan struct{} // closed when intake stops
	closing  atomic.Bool   // closed has been closed
	empty    chan struct{} // closed when nothing is held after intake stopped
	emptyOne sync.Once

	sendCtx    context.Context // cancelled when the drain deadline passes
	cancelSend context.CancelFunc

	deadLog    logLimiter
	failLog    logLimiter // the destinations' 'failing' lines (lane.logFailing)
	deadFail   deadFailing
	intakeDead intakeDeadLetters // intake dead letters waiting for a failing target
	deadWaits  deadWaiting       // every dead-letter write waiting for a failing target

	stranded Keeper // not redeliverable, held at shutdown

	held heldIndex // the deliveries held, by message id, for joining copies (join.go)

	mu        sync.Mutex
	lanes     map[Destination]*lane
	lastSweep time.Time      // when idle lanes were last looked for
	wg        sync.WaitGroup // senders
	senders   senderPool     // the goroutines that run them (senders.go)
	stop      sync.Once
}

type pipelineStats struct {
	received, forwarded, duplicates, joined, deadLettered, retried, released, inFlight atomic.Int64
	strandedN                                                                          atomic.Int64
	requests                                                                           atomic.Int64
	// When a message was last settled forwarded or dead-lettered, and when a
	// request last returned (liveness.go); on the monotonic clock, so a
	// step of the wall clock is no stall.
	lastProgress, lastAnswer monotime.Stamp

	// moving is held shared by each move of a delivery between counters
	// (enter, leave), which run side by side, and whole by Stats, so that
	// Stats sees none of them half done.
	moving sync.RWMutex
}

// enter counts a delivery taken: in Received and in InFlight at once.
func (s *pipelineStats) enter() {
	s.moving.RLock()
	s.received.Add(1)
	s.inFlight.Add(1)
	s.moving.RUnlock()
}

// leave counts a delivery settled: out of InFlight and, at once, into
// outcome (nil: none). It returns what InFlight is now.
func (s *pipelineStats) leave(outcome *atomic.Int64) int64 {
	s.moving.RLock()
	defer s.moving.RUnlock()
	if outcome != nil {
		outcome.Add(1)
	}
	return s.inFlight.Add(-1)
}

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	Received     int64 // deliveries handed to the pipeline
	Forwarded    int64 // accepted by the sink
	Duplicates   int64 // suppressed by the de-dup window
	Joined       int64 // redelivered copies settled with their held original (join.go), not released
	DeadLettered int64
	Retried      int64 // message sends retried
	Released     int64 // given back upstream at shutdown (redeliverable ones only)
	Stranded     int64 // held at shutdown but not redeliverable: see Stranded
	InFlight     int64
	HeldBytes    int64 // what the deliveries held count against MaxInFlightBytes
	Requests     int64 // Sink.Send calls
	// LastProgress is when a message was last forwarded or dead-lettered.
	LastProgress time.Time
	// LastAnswer is when a request to the sink, or a dead-letter write,
	// last returned, whatever its outcome: accepted, an error answer, a
	// transport error or a time-out (see Stalled).
	LastAnswer time.Time
	// DeadLetterError is the last dead-letter write's error while writes
	// fail (the target is full or broken; messages are held), else "".
	DeadLetterError string
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
		empty:  make(chan struct{}),
		lanes:  make(map[Destination]*lane),
		held:   heldIndex{m: make(map[string]*Delivery)},
	}
	p.limited, _ = cfg.Sink.(LimitedSink)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.m == nil {
		p.m = NewMetrics(nil)
	}
	p.admit = newAdmission(cfg.MaxInFlight, cfg.MaxInFlightBytes, cfg.Names, p.log, p.now)
	p.tune.Store(&Tuning{Router: cfg.Router, Envelope: cfg.Envelope, BatchSize: cfg.BatchSize,
		BatchBytes: cfg.BatchBytes, Linger: cfg.Linger, Retry: cfg.Retry})
	p.sendCtx, p.cancelSend = context.WithCancel(context.Background())
	start := p.now()
	p.stats.lastProgress.Store(start)
	p.stats.lastAnswer.Store(start)
	p.lastSweep = p.now()
	return p, nil
}

// Replace puts the whole of t in place of the routes, envelope, batching
// and retry settings (a config reload): every field is taken as it is, a
// linger of 0 included, after the same checks as NewPipeline's. The
// deliveries already taken keep the route they got. Safe for concurrent use
// with everything else.
func (p *Pipeline) Replace(t Tuning) error {
	if err := t.check(); err != nil {
		return err
	}
	p.tune.Store(&t)
	return nil
}

// Retune changes some of the routes, envelope, batching and retry
// settings: zero fields keep their current value (use Replace to set a
// whole tuning). Safe for concurrent use with everything else.
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

// Stats returns the counters. Safe for concurrent use. The message counts
// are of one moment: a delivery taken is in Received and in InFlight at
// once, and when it is settled it leaves InFlight in the same moment as it
// enters its outcome's count (Forwarded, DeadLettered, Duplicates,
// Joined, Released or Stranded), so that the counts the status, the
// summary and the stop line print side by side add up whenever they are
// read: Received = InFlight + Forwarded + DeadLettered + Duplicates +
// Joined + Released + Stranded. A joined copy is in InFlight until its
// original is settled, then in Joined, or in Released when it is released
// (intake.go's done).
func (p *Pipeline) Stats() Stats {
	s := &p.stats
	_, heldBytes := p.admit.held()
	st := Stats{HeldBytes: heldBytes, DeadLetterError: p.deadFail.current()}
	s.moving.Lock()
	st.Received, st.Forwarded, st.Duplicates, st.Joined = s.received.Load(), s.forwarded.Load(), s.duplicates.Load(), s.joined.Load()
	st.DeadLettered, st.Released, st.Stranded, st.InFlight = s.deadLettered.Load(), s.released.Load(), s.strandedN.Load(), s.inFlight.Load()
	s.moving.Unlock()
	st.Retried, st.Requests = s.retried.Load(), s.requests.Load()
	st.LastProgress, st.LastAnswer = s.lastProgress.Load(), s.lastAnswer.Load()
	return st
}

// Stranded returns the deliveries that were still held when Drain cut the
// drain short and that are not Redeliverable (releasing them would lose
// them): they are the caller's to store (the spool, the dead-letter file).
// It holds a message once: a joined copy of one it holds is settled with it
// (join.go).
// There is nothing upstream to settle them with. Call it after Drain; it
// hands each delivery back once.
func (p *Pipeline) Stranded() []*Delivery { return p.stranded.Take() }

// Drain stops intake (Handle returns ErrClosed from now on) and waits until
// every delivery held is settled, until ctx is done, or until it cannot
// progress (drainend.go: MNS fails for everything held, and all of it
// would be redelivered); then it cancels the sends in progress and
// releases what is left (or keeps it for Stranded), and returns once
// nothing is held. It returns ctx's error when the deadline cut the drain
// short, ErrCannotProgress when it ended early. Drain may be called once.
func (p *Pipeline) Drain(ctx context.Context) error {
	start := time.Now()
	p.stop.Do(func() {
		close(p.closed)
		p.closing.Store(true)
		p.probeAtStop()
	})
	if p.stats.inFlight.Load() == 0 {
		p.emptyOne.Do(func() { close(p.empty) })
	}
	check := time.NewTicker(drainCheckEvery)
	defer check.Stop()
	var err error
wait:
	for {
		select {
		case <-p.empty:
			break wait
		case <-ctx.Done():
			err = ctx.Err()
			break wait
		case <-check.C:
			if p.cannotProgress(start) {
				err = ErrCannotProgress
				break wait
			}
		}
	}
	p.cancelSend()
	p.stopLanes()
	p.wg.Wait()
	p.senders.close()
	// What is still held is being released now (a Handle waiting for room
	// in its lane, a dead-letter write giving up): wait for it, so that
	// Stranded is complete when Drain returns.
	<-p.empty
	return err
}
