// Package amqpsrc is the AMQP 1.0 source: it consumes the IoT Platform's
// server-side subscription over amqps (github.com/Azure/go-amqp) and hands
// every message to the pipeline as a bridge.Delivery.
//
// Each connection slot dials with a freshly signed SASL PLAIN login, attaches
// one receiver with a fixed credit (the backpressure), receives, and settles
// each delivery only when the pipeline says so: Accepted → accept, Released →
// release. A dead connection is noticed as soon as go-amqp closes it (not
// only at the next Receive) and is redialled by a source.Supervisor with
// jittered backoff under a shared attempt limiter. Deliveries of a dead link
// cannot be settled any more: settling them is dropped quietly and counted
// (the platform redelivers them). A settlement that fails on a live link
// drops the connection: the broker redelivers an unsettled delivery only
// when its link ends, so keeping the link would strand the message. A
// connection given up after a failure is dropped at the socket, without the
// AMQP close handshake, so that the broker sees the transport end and takes
// back everything unsettled, whatever state its end of the link is in.
//
// The package knows nothing of MNS or routing.
package amqpsrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/Azure/go-amqp"
	"golang.org/x/sync/errgroup"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// connection is one live AMQP connection with its one receiver, as the
// receive and settle loop needs it. The real one is amqpConn; tests use a
// fake.
type connection interface {
	// Receive blocks for the next message, until ctx is done or the link
	// dies.
	Receive(ctx context.Context) (*amqp.Message, error)
	Accept(ctx context.Context, m *amqp.Message) error
	Release(ctx context.Context, m *amqp.Message) error
	// IssueCredit lets the peer send n more messages (the link uses
	// manual credit).
	IssueCredit(n uint32) error
	// Done is closed when the connection has ended, by either side.
	Done() <-chan struct{}
	// Err says why Done was closed (nil for a clean local close).
	Err() error
	// Close closes receiver, session and connection within ctx's deadline,
	// forcing the socket shut when the peer does not answer.
	Close(ctx context.Context) error
	// Abort closes the socket at once, without the AMQP close handshake:
	// the peer sees the transport end (as after a crash) and requeues
	// every unsettled delivery of the connection.
	Abort()
}

// dialFunc opens a connection for a client id; slot is the slot index.
type dialFunc func(ctx context.Context, slot int, clientID string) (connection, error)

// Stats counts settlements. All counters only grow.
type Stats struct {
	// Received counts deliveries handed to the handler.
	Received int64
	// Accepted and Released count settlements the broker took.
	Accepted int64
	Released int64
	// DroppedDeadLink counts settlements dropped because the delivery's
	// link had died; the platform redelivers those messages.
	DroppedDeadLink int64
	// SettleFailed counts settlements that failed on a live link (timeout);
	// each drops the connection, so that the broker redelivers the message.
	SettleFailed int64
}

// Source is the AMQP 1.0 source. It implements bridge.Source,
// bridge.Settler and bridge.StateReporter. Its methods are safe for
// concurrent use; Run may be called once.
type Source struct {
	cfg   Config
	log   *slog.Logger
	dial  dialFunc
	slots []*slot

	received, accepted, released, dropped, settleFailed atomic.Int64

	mu        sync.Mutex
	started   bool
	closed    bool
	cancelRun context.CancelFunc
	runDone   chan struct{}
}

// slot is one connection slot: a supervisor and the link it currently holds.
type slot struct {
	index int
	id    string
	sup   *source.Supervisor

	mu  sync.Mutex
	cur *link // live, or parked after Run returned; nil between connections
}

func (sl *slot) set(l *link) {
	sl.mu.Lock()
	sl.cur = l
	sl.mu.Unlock()
}

// take removes and returns the slot's link if it is still l (or any link
// when l is nil).
func (sl *slot) take(l *link) *link {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	cur := sl.cur
	if cur == nil || (l != nil && cur != l) {
		return nil
	}
	sl.cur = nil
	return cur
}

// link is one connection's life. Its deliveries carry it in their token, so
// settling a delivery reaches the link it came from, dead or alive.
type link struct {
	conn connection
	dead atomic.Bool // no more settling: the connection ended or is closing

	failed   chan struct{} // closed by fail: the connection must be dropped
	failOnce sync.Once
	failErr  error // why; set before failed is closed

	settled chan struct{} // signalled (non-blocking) on every untrack

	mu        sync.Mutex
	unsettled map[*bridge.Delivery]struct{}
}

func newLink(c connection) *link {
	return &link{conn: c, unsettled: make(map[*bridge.Delivery]struct{}), settled: make(chan struct{}, 1),
		failed: make(chan struct{})}
}

// fail marks the link unusable (later settlements are dropped) and tells
// its session to drop the connection, so that the broker redelivers what is
// unsettled. Only the first call counts; it never blocks.
func (l *link) fail(err error) {
	l.failOnce.Do(func() {
		l.dead.Store(true)
		l.failErr = err
		close(l.failed)
	})
}

// failure returns the error the link failed with, or nil.
func (l *link) failure() error {
	select {
	case <-l.failed:
		return l.failErr
	default:
		return nil
	}
}

func (l *link) track(d *bridge.Delivery) {
	l.mu.Lock()
	l.unsettled[d] = struct{}{}
	l.mu.Unlock()
}

func (l *link) untrack(d *bridge.Delivery) {
	l.mu.Lock()
	delete(l.unsettled, d)
	l.mu.Unlock()
	select {
	case l.settled <- struct{}{}:
	default:
	}
}

func (l *link) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.unsettled)
}

func (l *link) pending() []*bridge.Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	ds := make([]*bridge.Delivery, 0, len(l.unsettled))
	for d := range l.unsettled {
		ds = append(ds, d)
	}
	return ds
}

// token is what a delivery carries to be settled.
type token struct {
	link *link
	msg  *amqp.Message
}

// New checks cfg, fills in defaults and returns a Source. It reads the CA
// file and calls cfg.Params once to check the signing inputs, but opens no
// connection. Errors name the config key (source.amqp.idle_timeout, ...).
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	tlsConf, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	p, err := cfg.Params()
	if err != nil {
		return nil, fmt.Errorf("source.credentials: %w", err)
	}
	s := &Source{cfg: cfg, log: cfg.Logger.With("source", "amqp", "endpoint", cfg.Endpoint)}
	var errs []error
	for i := range cfg.Connections {
		id := clientID(p.ClientID, i, cfg.Connections)
		q := p
		q.ClientID = id
		if err := q.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("source: %w", err))
		}
		s.slots = append(s.slots, &slot{
			index: i,
			id:    id,
			sup: &source.Supervisor{
				Name:    id,
				Backoff: bridge.Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff},
				Limiter: cfg.Limiter,
				Logger:  s.log,
			},
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	d := &dialer{cfg: cfg, tls: tlsConf}
	s.dial = d.dial
	return s, nil
}

// Run keeps every connection slot connected and passes each delivery to h,
// until ctx is done or Close is called; then it returns nil. It returns an
// error only for a problem that reconnecting cannot fix (a signing input
// the platform can never accept). It blocks.
//
// When Run returns, the connections stay open so that deliveries still in
// the pipeline can be settled; Close releases what is left and closes them.
//
// h is called from one goroutine per connection and may block: while it
// does, and while Credit deliveries of that connection are unsettled, no
// more are read. If the connection dies meanwhile, h's ctx is cancelled. A
// delivery for which h returns an error is released; if ctx is not done
// then, the connection is closed and redialled.
func (s *Source) Run(ctx context.Context, h bridge.Handler) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("amqp source: Run after Close")
	}
	if s.started {
		s.mu.Unlock()
		return errors.New("amqp source: Run called twice")
	}
	s.started = true
	ctx, cancel := context.WithCancel(ctx)
	s.cancelRun = cancel
	s.runDone = make(chan struct{})
	s.mu.Unlock()
	defer close(s.runDone)
	defer cancel()

	g, gctx := errgroup.WithContext(ctx)
	for _, sl := range s.slots {
		g.Go(func() error {
			return sl.sup.Run(gctx, func(ctx context.Context, connected func()) error {
				return s.session(ctx, sl, h, connected)
			})
		})
	}
	return g.Wait()
}

// session is one connection's life: dial, receive until the connection
// ends or ctx is done. On ctx done with the connection alive, the link is
// parked in the slot for Close; otherwise it is closed before returning, so
// a slot never holds two connections.
func (s *Source) session(ctx context.Context, sl *slot, h bridge.Handler, connected func()) error {
	c, err := s.dial(ctx, sl.index, sl.id)
	if err != nil {
		return err
	}
	l := newLink(c)
	sl.set(l)
	connected()

	// connCtx ends when the connection does, or when the link fails, so
	// that a handler blocked on backpressure notices the loss at once.
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.Done():
			l.dead.Store(true)
			cancel()
		case <-l.failed:
			cancel()
		case <-connCtx.Done():
		}
	}()

	var cause error
	var granted, got int // credit issued and messages received on this link
	for {
		if got >= granted {
			n, err := s.awaitCredit(connCtx, l)
			if err != nil {
				cause = err
				break
			}
			if err := c.IssueCredit(uint32(n)); err != nil {
				cause = err
				break
			}
			granted += n
		}
		m, err := c.Receive(connCtx)
		if err != nil {
			cause = err
			break
		}
		if isDone(c.Done()) {
			// A message prefetched before the connection died: it can
			// no longer be settled, and the platform redelivers it.
			break
		}
		got++
		d := bridge.NewDelivery(toMessage(m), s, &token{link: l, msg: m})
		l.track(d)
		s.received.Add(1)
		if err := h(connCtx, d); err != nil {
			// Not the pipeline's: give it back (or drop it, link dead).
			d.Release()
			cause = err
			break
		}
	}

	if err := l.failure(); err != nil {
		cause = err
	}
	select {
	case <-c.Done():
		l.dead.Store(true)
		if err := c.Err(); err != nil {
			cause = err
		}
	default:
		if ctx.Err() != nil && l.failure() == nil {
			return nil // parked: Close releases and closes it
		}
	}
	// The link failed (or the connection ended): drop the connection now.
	// Not with the close handshake: the broker must see the transport end,
	// which makes it requeue every unsettled delivery whatever state its
	// end of the link is in (RabbitMQ 3.x never even answers the detach).
	l.dead.Store(true)
	sl.take(l)
	c.Abort()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("amqp connection lost: %w", explainLoss(cause))
}

// awaitCredit waits until the link has room for at least half the credit
// window beyond its unsettled deliveries, and returns that room.
//
// Credit is managed here rather than by go-amqp's automatic flow because it
// is only ever issued once all earlier credit has been used: no transfer is
// then in flight, so the delivery-count in the flow frame is exact. go-amqp's
// automatic flow tops credit up while transfers are still in flight, and
// RabbitMQ 3.x then sends beyond the credit, go-amqp's credit counter wraps
// around and the link stalls for good (seen with 1,500 queued messages).
// The cost is one round trip per refill.
func (s *Source) awaitCredit(ctx context.Context, l *link) (int, error) {
	window := s.cfg.Credit
	for {
		room := window - l.inFlight()
		if room > 0 && room >= (window+1)/2 {
			return room, nil
		}
		select {
		case <-l.settled:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Settle settles d upstream: Accepted → AMQP accept, Released → AMQP
// release, each bounded by the settle timeout. A delivery whose link has
// died is dropped and counted (the platform redelivers it). A settlement
// that fails on a live link (a timeout: go-amqp then never sends the
// disposition) fails the link, and its connection is dropped so that the
// broker redelivers the message. Settle is called
// by bridge.Delivery exactly once per delivery, from any goroutine; it blocks
// for at most the settle timeout.
func (s *Source) Settle(d *bridge.Delivery, o bridge.Outcome) {
	t, ok := d.Token.(*token)
	if !ok || t == nil {
		return
	}
	l := t.link
	l.untrack(d)
	if l.dead.Load() {
		s.dropped.Add(1)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SettleTimeout)
	defer cancel()
	var err error
	switch o {
	case bridge.Accepted:
		err = l.conn.Accept(ctx, t.msg)
	default:
		err = l.conn.Release(ctx, t.msg)
	}
	switch {
	case err == nil && o == bridge.Accepted:
		s.accepted.Add(1)
	case err == nil:
		s.released.Add(1)
	case l.dead.Load() || linkGone(err):
		s.dropped.Add(1)
	default:
		s.settleFailed.Add(1)
		s.log.Warn("amqp settle failed on a live link; dropping the connection so that the platform redelivers the message",
			"outcome", o.String(), "message_id", d.MessageID, "err", err)
		l.fail(fmt.Errorf("settling message %q (%s) failed on a live link: %w", d.MessageID, o, err))
	}
}

// linkGone reports whether err means the link, session or connection has
// ended, so the delivery can no longer be settled.
func linkGone(err error) bool {
	var le *amqp.LinkError
	var se *amqp.SessionError
	var ce *amqp.ConnError
	return errors.As(err, &le) || errors.As(err, &se) || errors.As(err, &ce)
}

// Close stops Run if it is still running and waits for it, releases every
// delivery still unsettled, and closes all connections within ctx's
// deadline (forcing sockets shut after it). It returns ctx's error if the
// deadline was too short for a clean close. Safe to call more than once.
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancelRun, s.runDone
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case <-done:
		case <-ctx.Done():
			return fmt.Errorf("amqp source close: waiting for Run: %w", ctx.Err())
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(s.slots))
	for i, sl := range s.slots {
		l := sl.take(nil)
		if l == nil {
			continue
		}
		wg.Go(func() {
			for _, d := range l.pending() {
				d.Release()
			}
			l.dead.Store(true)
			if err := l.conn.Close(ctx); err != nil && ctx.Err() != nil {
				errs[i] = fmt.Errorf("amqp source close %s: %w", sl.id, ctx.Err())
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ConnStates returns the state of every connection slot, in slot order.
func (s *Source) ConnStates() []bridge.ConnState {
	out := make([]bridge.ConnState, len(s.slots))
	for i, sl := range s.slots {
		out[i] = sl.sup.State()
	}
	return out
}

// Stats returns the settlement counters.
func (s *Source) Stats() Stats {
	return Stats{
		Received:        s.received.Load(),
		Accepted:        s.accepted.Load(),
		Released:        s.released.Load(),
		DroppedDeadLink: s.dropped.Load(),
		SettleFailed:    s.settleFailed.Load(),
	}
}

var (
	_ bridge.Source        = (*Source)(nil)
	_ bridge.Settler       = (*Source)(nil)
	_ bridge.StateReporter = (*Source)(nil)
)
