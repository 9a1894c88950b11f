// Package amqpsrc is the AMQP 1.0 protocol of the source: it consumes the IoT
// Platform's server-side subscription over amqps, with an AMQP 1.0 client of
// our own (internal/amqp10's Receiver). It signs, connects with a SASL PLAIN
// login, attaches one receiver with a fixed credit (the backpressure), reads
// the next message as a bridge.Delivery, settles and closes. The reconnecting,
// the slots, the backoff and what is fatal are source.Driver's, the same for
// every protocol.
//
// A delivery is settled only when the pipeline says so: Accepted → accept,
// Released → release. Settle only queues: each link's settler goroutine settles
// what is queued and writes the dispositions of one round, as ranges of
// delivery-ids, in one socket write, once they had a linger
// (Config.SettleLinger) to gather, or at once when Next waits for credit they
// make room for (the refill, in whole halves of the window, then goes in the
// same write). The client's one reader goroutine decodes each transfer and
// hands it to Next: one goroutine hand-off a message (go-amqp, used before, had
// six). A message whose sections do not decode is handed over too, as its bytes
// with the reason (Message.Invalid: dead-lettered and settled); ending the
// connection instead would have the platform push it again, for ever. A dead
// connection is noticed as soon as the client ends it (source.Link.Lost: a
// handler blocked on backpressure lets go at once), not only at the next
// Receive. Deliveries of a dead link cannot be settled any more: settling them
// is dropped quietly and counted (the platform redelivers them). A settlement
// that fails on a live link drops the connection: the broker redelivers an
// unsettled delivery only when its link ends, so keeping the link would strand
// the message. A connection given up after a failure is dropped at the socket,
// without the AMQP close handshake, so that the broker sees the transport end
// and takes back everything unsettled, whatever state its end of the link is
// in.
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
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/broadcast"
)

// connection is one live AMQP connection with its one receiver, as the
// receive and settle loop needs it. The real one is amqpConn; tests use a
// fake.
type connection interface {
	// Receive blocks for the next message, until ctx is done or the link
	// dies.
	Receive(ctx context.Context) (*amqp10.Delivery, error)
	Accept(ctx context.Context, m *amqp10.Delivery) error
	Release(ctx context.Context, m *amqp10.Delivery) error
	// IssueCredit lets the peer send n more messages (the link uses
	// manual credit).
	IssueCredit(n uint32) error
	// Hold gathers the settlements and frames written until Flush, which
	// writes them in one go (the settlements as ranges); a failed Flush
	// closes the socket.
	Hold()
	Flush() error
	// Done is closed when the connection has ended, by either side.
	Done() <-chan struct{}
	// Err says why Done was closed (nil for a clean local close).
	Err() error
	// Close closes receiver, session and connection within ctx's deadline,
	// forcing the socket shut when the peer does not answer.
	Close(ctx context.Context) error
	// ReleasedAtClose is how many messages Close released that Receive had
	// not returned (received ahead on the credit).
	ReleasedAtClose() int
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

// Source is the AMQP 1.0 source: a source.Driver over AMQP links. It
// implements bridge.Source, bridge.Settler and bridge.StateReporter. Its
// methods are safe for concurrent use; Run may be called once.
type Source struct {
	*source.Driver
	cfg  Config
	log  *slog.Logger
	dial dialFunc

	received, accepted, released, dropped, settleFailed atomic.Int64
	// creditBound is how many links were credit-bound in their last
	// window (creditwatch.go).
	creditBound atomic.Int64
	now         func() time.Time

	// gathering, when set (tests, before the first settlement), is called
	// whenever a settler starts to let queued settlements linger.
	gathering func()
}

// link is one connection's life. Its deliveries carry it in their token, so
// settling a delivery reaches the link it came from, dead or alive.
type link struct {
	src  *Source
	conn connection
	id   string      // the connection's client id, for the log
	dead atomic.Bool // no more settling: the connection ended or is closing

	failed   chan struct{} // closed by fail: the connection must be dropped
	failOnce sync.Once
	failErr  error         // why; set before failed is closed
	lost     chan struct{} // closed once the connection ended or the link failed
	// granted and got count the credit issued and the messages received
	// on this link (Next only).
	granted, got int
	// wantCredit is set while Next waits for the settler to issue credit
	// (see askCredit); the settler hands it over on credited.
	wantCredit atomic.Bool
	credited   chan grant
	// watch sums Next's credit waits (creditwatch.go); creditState says
	// whether the link counts in the Source's creditBound.
	watch       creditWatch
	creditState atomic.Int32

	mu        sync.Mutex
	unsettled map[*bridge.Delivery]struct{}

	// The settler's queue (see settler).
	qmu    sync.Mutex
	queue  []settlement
	busy   bool             // the settler is settling what it took from queue
	ended  bool             // the settler has ended: settlements are dropped
	wake   chan struct{}    // signalled (non-blocking) on every queued settlement
	asked  chan struct{}    // signalled (non-blocking) when Next asks for credit
	urge   chan struct{}    // signalled (non-blocking) when a settlement is awaited: no linger
	idle   broadcast.Signal // notified when the settler has emptied queue or ended
	reused []settlement     // the settler's own slice, swapped with queue
}

// settlement is a queued Settle.
type settlement struct {
	d   *bridge.Delivery
	msg *amqp10.Delivery
	o   bridge.Outcome
	err error
}

func newLink(s *Source, c connection, clientID string) *link {
	l := &link{src: s, conn: c, id: clientID, unsettled: make(map[*bridge.Delivery]struct{}), credited: make(chan grant, 1),
		failed: make(chan struct{}), lost: make(chan struct{}), wake: make(chan struct{}, 1), asked: make(chan struct{}, 1),
		urge: make(chan struct{}, 1)}
	l.watch.since = s.now()
	go func() {
		// Ends with the connection: Abort and Close both end it.
		select {
		case <-c.Done():
		case <-l.failed:
		}
		close(l.lost)
		l.creditWatchEnded()
	}()
	go l.settler()
	return l
}

// fail marks the link unusable (later settlements are dropped) and tells
// the driver to drop the connection (Lost), so that the broker redelivers
// what is unsettled. Only the first call counts; it never blocks.
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
	msg  *amqp10.Delivery
}

// New checks cfg, fills in the protocol's own defaults and returns a
// Source. It reads the CA file and calls cfg.Params once to check the
// signing inputs, but opens no connection.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.checked()
	if err != nil {
		return nil, err
	}
	tlsConf, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, log: cfg.Log("amqp"), now: cfg.Now}
	if s.now == nil {
		s.now = time.Now
	}
	s.dial = (&dialer{cfg: cfg, tls: tlsConf}).dial
	if s.Driver, err = cfg.NewDriver("amqp", s.log, s.link); err != nil {
		return nil, err
	}
	return s, nil
}

// link is the driver's source.DialFunc: a connection of s.dial as a link.
func (s *Source) link(ctx context.Context, slot int, clientID string) (source.Link, error) {
	c, err := s.dial(ctx, slot, clientID)
	if err != nil {
		return nil, err
	}
	return newLink(s, c, clientID), nil
}

// Next has credit issued when all earlier credit is used (askCredit),
// then returns the next message as a delivery settled through the Source
// (source.Link).
func (l *link) Next(ctx context.Context) (*bridge.Delivery, error) {
	c := l.conn
	if l.got >= l.granted {
		start := l.src.now()
		n, err := l.askCredit(ctx)
		if err != nil {
			return nil, err
		}
		l.granted += n
		l.creditWaited(start, l.src.now())
	}
	m, err := c.Receive(ctx)
	if err != nil {
		return nil, err
	}
	if isDone(c.Done()) {
		// A message prefetched before the connection died: it can no
		// longer be settled, and the platform redelivers it.
		return nil, errors.New("the connection ended")
	}
	l.got++
	d := bridge.NewDelivery(deliveryMessage(m), l.src, &token{link: l, msg: m})
	l.track(d)
	l.src.received.Add(1)
	return d, nil
}

// Owned is false: the platform sends an unsettled message again.
func (l *link) Owned() bool { return false }

// Lost is closed when the client has ended the connection or the link failed
// (a settlement failed on it).
func (l *link) Lost() <-chan struct{} { return l.lost }

// Stop does nothing: Receive and the credit wait honour Next's context.
func (l *link) Stop() {}

// Abort drops the failed link's connection at the socket and explains why
// it ended: the client's reason when the connection has ended, else the
// link's failure, else cause. Not with the close handshake: the broker must
// see the transport end, which makes it requeue every unsettled delivery
// whatever state its end of the link is in (RabbitMQ 3.x never even answers
// the detach).
func (l *link) Abort(cause error) error {
	c := l.conn
	if err := l.failure(); err != nil {
		cause = err
	}
	if isDone(c.Done()) {
		if err := c.Err(); err != nil {
			cause = err
		}
	}
	l.dead.Store(true)
	c.Abort()
	return fmt.Errorf("amqp connection lost: %w", explainLoss(cause))
}

// Close releases every delivery still tracked (one the pipeline settled
// that waits in the settler's queue is settled once: its Release does
// nothing), lets the settler write
// what is queued (see waitSettled) and closes the connection within ctx
// (forcing the socket shut after its deadline). A link that failed is
// dropped at the socket instead (see Abort).
func (l *link) Close(ctx context.Context) error {
	if l.failure() != nil {
		l.dead.Store(true)
		l.conn.Abort()
		return nil
	}
	for _, d := range l.pending() {
		d.Release()
	}
	l.waitSettled(ctx)
	l.dead.Store(true)
	err := l.conn.Close(ctx)
	if n := l.conn.ReleasedAtClose(); n > 0 {
		l.src.log.Info("amqp messages received ahead were released at close; the platform sends them again", "conn", l.id, "count", n)
	}
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// grant is credit the settler issued for Next, or why it could not.
type grant struct {
	n   int
	err error
}

// askCredit has the settler issue credit (see settler) and waits for it:
// as much as the link has room for beyond its unsettled deliveries, once
// that is at least half the credit window. The settler issues it in the
// socket write of the settlements that made the room.
//
// Credit is only ever issued once all earlier credit has been used: no
// transfer is then in flight, so the delivery-count in the flow frame is
// exact. (go-amqp's automatic flow, used before, topped credit up while
// transfers were still in flight, and RabbitMQ 3.x then sent beyond the
// credit, go-amqp's credit counter wrapped around and the link stalled for
// good, seen with 1,500 queued messages.)
// The cost is one round trip per refill.
func (l *link) askCredit(ctx context.Context) (int, error) {
	l.wantCredit.Store(true)
	for _, ch := range []chan struct{}{l.wake, l.asked} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	var err error
	select {
	case g := <-l.credited:
		return g.n, g.err
	case <-l.lost:
		err = errors.New("the connection ended")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if !l.wantCredit.CompareAndSwap(true, false) {
		// The settler took the request just now and is issuing the credit:
		// take its grant (it is counted), so that none is ever left on
		// credited for a later grant to block the settler behind.
		g := <-l.credited
		return g.n, g.err
	}
	return 0, err
}

// grantCredit issues the credit Next waits for (askCredit) when the link
// has room for it (see room), counting the settling ones of the settler's
// round as settled (their dispositions leave in the same write, before the
// flow).
func (l *link) grantCredit(settling int) {
	if !l.wantCredit.Load() {
		return
	}
	room := l.room(settling)
	if room == 0 || !l.wantCredit.CompareAndSwap(true, false) {
		return
	}
	l.credited <- grant{n: room, err: l.conn.IssueCredit(uint32(room))}
}

// room is the credit the link may issue, counting settling deliveries as
// settled: the window beyond its unsettled deliveries once that is at least
// half the window, in whole halves of it unless the whole window is free,
// else 0. Whole halves keep the refills the size the pipeline's batches fit
// (issue 16: a refill of 38 or 42 at credit 64 left a batch of 6 or 10 for
// the pipeline's linger at every refill, and one connection's rate fell from
// about 2,900 to 2,200 msgs/s).
func (l *link) room(settling int) int {
	window := l.src.cfg.Credit
	half := (window + 1) / 2
	room := window - (l.inFlight() - settling)
	switch {
	case room < half:
		return 0
	case room < window:
		return room - room%half
	}
	return window
}

// creditDue reports whether Next waits for credit that the link has room
// for once the queued settlements are written (see room).
func (l *link) creditDue() bool {
	if !l.wantCredit.Load() {
		return false
	}
	l.qmu.Lock()
	queued := len(l.queue)
	l.qmu.Unlock()
	return l.room(queued) > 0
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
// release. It never blocks: it queues the settlement for the link's settler
// (see settler). A delivery whose link has died is dropped and counted (the
// platform redelivers it). Settle is called by bridge.Delivery exactly once
// per delivery, from any goroutine.
func (s *Source) Settle(d *bridge.Delivery, o bridge.Outcome) {
	t, ok := d.Token.(*token)
	if !ok || t == nil {
		return
	}
	l := t.link
	if l.dead.Load() || isDone(l.conn.Done()) || !l.enqueue(settlement{d: d, msg: t.msg, o: o}) {
		l.untrack(d)
		s.dropped.Add(1)
	}
}

// enqueue queues st for the settler; false once the settler has ended.
func (l *link) enqueue(st settlement) bool {
	l.qmu.Lock()
	if l.ended {
		l.qmu.Unlock()
		return false
	}
	l.queue = append(l.queue, st)
	l.qmu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// urgeSettler makes the settler write what it holds now, without its
// linger: Close awaits the settlements (Next's wait for credit signals asked
// instead: see gather).
func (l *link) urgeSettler() {
	select {
	case l.urge <- struct{}{}:
	default:
	}
}

// settler settles what Settle queued, until the connection ends. Woken by
// a settlement, it lets more gather for Config.SettleLinger, unless one is
// awaited: by Close (urgeSettler), or by Next waiting for credit that the
// queued settlements make room for (creditDue). Then it takes everything
// queued, holds the connection's writes, settles each delivery (the client
// gathers them) and flushes them as dispositions of ranges of delivery-ids
// in one socket write, with the credit Next waits for (grantCredit) when
// the round made room for it. The linger makes the settlements of several
// MNS requests leave in one write (issue 16: a write per connection per MNS
// request was most of the settler's cost at 5,000 msgs/s over 5
// connections); it delays only the accept of what MNS has stored: a crash
// meanwhile makes the platform send those messages again (duplicates, never
// loss; at most the credit window per connection, as for any unsettled
// message). Settlements that make no room for the credit Next waits for
// linger too, so that they leave in the refill's write rather than in one
// of their own each (a write per MNS request while the link waited for the
// room). A delivery counts as accepted or released, and leaves the link's
// credit window, once its disposition was written. What is queued when the
// connection ends is dropped and counted (the platform redelivers it).
func (l *link) settler() {
	every := l.src.cfg.SettleLinger
	linger := time.NewTimer(every)
	linger.Stop()
	for {
		select {
		case <-l.wake:
			if !l.gather(linger, every) {
				continue
			}
		case <-l.lost:
			l.qmu.Lock()
			l.ended = true
			rest := l.queue
			l.queue = nil
			l.idle.Notify()
			l.qmu.Unlock()
			for _, st := range rest {
				l.untrack(st.d)
				l.src.dropped.Add(1)
			}
			return
		}
		for {
			l.qmu.Lock()
			if len(l.queue) == 0 {
				l.busy = false
				l.idle.Notify()
				l.qmu.Unlock()
				l.grantCredit(0)
				break
			}
			batch := l.queue
			l.queue, l.reused = l.reused[:0], nil // the two slices take turns
			l.busy = true
			l.qmu.Unlock()
			l.settleAll(batch)
			clear(batch)
			l.reused = batch[:0]
		}
	}
}

// gather reports whether the settler has a round to write: at once when
// Next waits for credit the link has room for (creditDue), else once the
// queued settlements lingered (see settler) until the linger has passed,
// Close urges, the connection ends, or Next waits for credit they make room
// for; false when nothing is queued (a credit request the link has no room
// for: the settlement that makes it wakes the settler). Only while Next
// waits does each settlement wake it (it may make the room); else the
// settlements of the linger cost no wake-up.
func (l *link) gather(linger *time.Timer, every time.Duration) bool {
	if l.creditDue() {
		return true
	}
	l.qmu.Lock()
	queued := len(l.queue)
	l.qmu.Unlock()
	if queued == 0 {
		return false
	}
	if f := l.src.gathering; f != nil {
		f()
	}
	linger.Reset(every)
	defer linger.Stop()
	for {
		var settled <-chan struct{}
		if l.wantCredit.Load() {
			settled = l.wake
		}
		select {
		case <-linger.C:
			return true
		case <-l.urge:
			return true
		case <-l.lost:
			return true
		case <-l.asked:
		case <-settled:
		}
		if l.creditDue() {
			return true
		}
	}
}

// settleAll settles batch in one hold of the connection's writes, the
// whole round bounded by the settle timeout (one context: the round is
// microseconds unless something is stuck). A settlement that fails on a
// live link (the round outlived the settle timeout) fails the
// link, and its connection is dropped so that the broker redelivers the
// message.
func (l *link) settleAll(batch []settlement) {
	s, c := l.src, l.conn
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.SettleTimeout)
	defer cancel()
	c.Hold()
	for i := range batch {
		st := &batch[i]
		if l.dead.Load() || isDone(c.Done()) {
			st.err = errLinkDead
			continue
		}
		switch st.o {
		case bridge.Accepted:
			st.err = c.Accept(ctx, st.msg)
		default:
			st.err = c.Release(ctx, st.msg)
		}
		if st.err != nil && !l.dead.Load() && !linkGone(st.err) {
			s.settleFailed.Add(1)
			s.log.Warn("amqp settle failed on a live link; dropping the connection so that the platform redelivers the message",
				"outcome", st.o.String(), "message_id", st.d.MessageID, "err", st.err)
			l.fail(fmt.Errorf("settling message %q (%s) failed on a live link: %w", st.d.MessageID, st.o, st.err))
			st.err = errSettleFailed
		}
	}
	l.grantCredit(len(batch))
	flushErr := c.Flush()
	for i := range batch {
		st := &batch[i]
		l.untrack(st.d)
		switch {
		case st.err == errSettleFailed:
		case st.err != nil || flushErr != nil:
			// The link died, or the write of its disposition failed
			// (which closed the connection).
			s.dropped.Add(1)
		case st.o == bridge.Accepted:
			s.accepted.Add(1)
		default:
			s.released.Add(1)
		}
	}
}

var (
	errLinkDead     = errors.New("the link has died")
	errSettleFailed = errors.New("settling failed on a live link")
)

// waitSettled waits until the settler has settled everything queued, the
// connection has ended, or ctx is done, and at most the settle timeout: a
// settlement stuck in a socket write must not hold Close up; closing the
// connection ends it.
func (l *link) waitSettled(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.src.cfg.SettleTimeout)
	defer cancel()
	for {
		l.urgeSettler()
		l.qmu.Lock()
		if l.ended || (len(l.queue) == 0 && !l.busy) {
			l.qmu.Unlock()
			return
		}
		next := l.idle.Wait()
		l.qmu.Unlock()
		select {
		case <-next:
		case <-l.lost:
			return
		case <-ctx.Done():
			return
		}
	}
}

// linkGone reports whether err means the link, session or connection has
// ended, so the delivery can no longer be settled.
func linkGone(err error) bool {
	var le *amqp10.LinkError
	var se *amqp10.SessionError
	var ce *amqp10.ConnError
	return errors.As(err, &le) || errors.As(err, &se) || errors.As(err, &ce)
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
	_ source.Link          = (*link)(nil)
)
