package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("source is closed")

// HandOverTimeout bounds the hand-over of the deliveries a link that owns
// them (Link.Owned) had already received when intake stopped.
const HandOverTimeout = 10 * time.Second

// handOverHandlerTimeout bounds the handler in the hand-over: half of
// HandOverTimeout, which also bounds the link's reads (STOMP closes the
// connection then), so that a handler blocked on a full spool or pipeline
// gives up while the rest the server sent can still be read and handed
// over; at shutdown what the handler refuses is kept (bridge.Keeper), not
// lost.
const handOverHandlerTimeout = HandOverTimeout / 2

// Link is one live connection of a protocol with its one subscription, as
// the Driver uses it. The driver calls Next, Stop and Abort from the slot's
// goroutine only; Close after Run returned. Its deliveries are settled
// through the protocol (bridge.Settler), from any goroutine.
type Link interface {
	// Next blocks until the next delivery and returns it. It returns an
	// error once the link failed (the driver then calls Abort), or when ctx
	// is done. The driver hands the delivery to the pipeline and calls Next
	// again only when the handler returned: nothing is read meanwhile.
	Next(ctx context.Context) (*bridge.Delivery, error)
	// Owned reports that the deliveries are the bridge's alone once
	// received (STOMP ack auto: the platform settled them when it sent
	// them), so none may be dropped: a handler call is never cancelled
	// because the connection died, and when intake stops the driver hands
	// over what was already received (see Stop). Otherwise an unsettled
	// delivery is sent again by the platform when its link ends.
	Owned() bool
	// Lost is closed when the connection ends while a delivery may be in
	// the handler; the driver then cancels the handler's context (only for
	// a link that does not own its deliveries). nil: the link notices a
	// loss only in Next.
	Lost() <-chan struct{}
	// Stop is called once, from another goroutine, when intake stops while
	// the link lives: it makes a blocked Next return. Run returns only once
	// Stop has returned: Close never overlaps it. An owned link asks
	// the server to stop sending; its Next then returns what the server had
	// sent until the server's confirmation (then an error), within
	// HandOverTimeout.
	Stop()
	// Abort closes a failed link at once and returns the error to report
	// for cause (the Next or handler error; nil when there is none). What is
	// unsettled can no longer be settled; the platform sends it again.
	Abort(cause error) error
	// Close ends a link that outlived Run: it settles what it can (pending
	// acknowledgements are sent, unsettled deliveries released where the
	// protocol can) and closes the connection within ctx, forcing it past
	// ctx's deadline. It returns ctx's error when it had to force.
	Close(ctx context.Context) error
}

// DialFunc opens the link of slot index as clientID: it signs afresh,
// connects, logs in and subscribes. A failure that redialling cannot fix
// (the signing inputs are invalid) wraps ErrFatal; every other failure is
// redialled with backoff. Errors are explained (see ExplainDial and
// LoginRefused) and hold no secret.
type DialFunc func(ctx context.Context, slot int, clientID string) (Link, error)

// Config configures a Driver. Every field is required and taken as it is:
// the defaults live in config.Default().
type Config struct {
	// Protocol names the source in errors ("stomp", "amqp").
	Protocol string
	// ClientID is the base client id; Connections slots connect as
	// ClientIDs(ClientID, Connections).
	ClientID    string
	Connections int
	// MinBackoff and MaxBackoff bound the jittered exponential delay
	// between the connection attempts of one slot (reset after a stable
	// minute).
	MinBackoff, MaxBackoff time.Duration
	// Limiter bounds the connection attempts of every slot together; share
	// one across the sources of one consumer group.
	Limiter *AttemptLimiter
	Logger  *slog.Logger
}

// check reports the first problem of cfg, naming the field.
func (cfg Config) check() error {
	var errs []error
	if cfg.Protocol == "" {
		errs = append(errs, errors.New("Protocol is empty"))
	}
	if err := CheckConnections(cfg.Connections); err != nil {
		errs = append(errs, fmt.Errorf("Connections %w", err))
	}
	if cfg.MinBackoff <= 0 || cfg.MaxBackoff < cfg.MinBackoff {
		errs = append(errs, fmt.Errorf("MinBackoff %s and MaxBackoff %s: need 0 < MinBackoff <= MaxBackoff", cfg.MinBackoff, cfg.MaxBackoff))
	}
	if cfg.Limiter == nil {
		errs = append(errs, errors.New("Limiter is nil"))
	}
	if cfg.Logger == nil {
		errs = append(errs, errors.New("Logger is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("source driver config: %w", err)
	}
	return nil
}

// ClientIDs returns the client id of each of n slots: base itself for one
// connection, "<base>-<i>" for more.
func ClientIDs(base string, n int) []string {
	if n <= 1 {
		return []string{base}
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = base + "-" + strconv.Itoa(i)
	}
	return ids
}

// CheckSuffix is appended to the client id of a connection check (check
// -connect), so that it does not displace a running bridge's connection.
const CheckSuffix = "-check"

// CheckClientID is base with CheckSuffix, base cut so that the whole fits
// the platform's limit of iotauth.MaxClientIDLen characters.
func CheckClientID(base string) string {
	r := []rune(base)
	if n := iotauth.MaxClientIDLen - len(CheckSuffix); len(r) > n {
		r = r[:n]
	}
	return string(r) + CheckSuffix
}

// Driver keeps Config.Connections slots connected through a DialFunc and
// hands every delivery to the pipeline. It implements bridge.Source and
// bridge.StateReporter; the protocol packages wrap it. Its methods are safe
// for concurrent use; Run may be called once.
//
// The rules, the same for every protocol:
//   - A slot holds at most one connection: the next dial starts only after
//     the previous link was aborted (Supervisor).
//   - Every transient failure is redialled with backoff under the shared
//     attempt limiter: a dial, TLS or login failure, a lost or silent
//     connection, an error frame, credentials that cannot be read now.
//   - Fatal (Run returns the error, nothing is redialled): a dial error
//     wrapping ErrFatal (the signing inputs are invalid: they come from the
//     config and cannot fix themselves), and a delivery the pipeline
//     refuses while intake runs (the pipeline is gone; redialling would
//     take and give back messages in a loop). The refused delivery is
//     released first.
//   - A handler call is cancelled when the connection is lost (Link.Lost)
//     only if the platform sends its delivery again (not Link.Owned).
//   - When intake stops (Run's ctx is done) a link that owns its
//     deliveries hands over what it had received and is closed; any other
//     link stays open so that the deliveries in flight can still be
//     settled, until Close.
type Driver struct {
	cfg   Config
	dial  DialFunc
	log   *slog.Logger
	slots []*slot
	group *FailureGroup // with more than one slot; stopped when Run returns

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when Run returns
}

// slot is one connection slot: its supervisor and its current link.
type slot struct {
	index int
	id    string
	sup   *Supervisor

	mu   sync.Mutex
	link Link // live, or kept for settles after Run; nil between connections
}

func (sl *slot) set(l Link) {
	sl.mu.Lock()
	sl.link = l
	sl.mu.Unlock()
}

// take removes and returns the slot's link.
func (sl *slot) take() Link {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	l := sl.link
	sl.link = nil
	return l
}

// New returns a Driver over dial. It does no I/O.
func New(cfg Config, dial DialFunc) (*Driver, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	d := &Driver{cfg: cfg, dial: dial, log: cfg.Logger, done: make(chan struct{})}
	ids := ClientIDs(cfg.ClientID, cfg.Connections)
	// Several connections fail together (a throttled consumer group), or
	// are lost together (a platform node restarts): one line for all of
	// them.
	if len(ids) > 1 {
		d.group = NewFailureGroup(len(ids), cfg.Logger)
	}
	for i, id := range ids {
		d.slots = append(d.slots, &slot{index: i, id: id, sup: &Supervisor{
			Name:    id,
			Backoff: bridge.Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff},
			Limiter: cfg.Limiter,
			Logger:  cfg.Logger,
			Group:   d.group,
		}})
	}
	return d, nil
}

// Run keeps every slot connected and hands each delivery to h, from one
// goroutine per slot, until ctx is done or Close is called; then it returns
// nil. While h blocks, that slot reads nothing more (backpressure). It
// returns an error only for a failure that reconnecting cannot fix (see
// Driver). When Run returns, links stay open for the settles of deliveries
// in flight; Close closes them.
func (d *Driver) Run(ctx context.Context, h bridge.Handler) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("%s source: %w", d.cfg.Protocol, ErrClosed)
	}
	if d.started {
		d.mu.Unlock()
		return fmt.Errorf("%s source: Run called twice", d.cfg.Protocol)
	}
	d.started = true
	ctx, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	d.mu.Unlock()
	defer close(d.done)
	// The source stopped: a window of the group that ends later (during
	// the drain, after the shutdown lines) says nothing.
	defer d.stopGroup()
	defer cancel()
	if d.group != nil {
		d.group.Start()
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, sl := range d.slots {
		g.Go(func() error {
			return sl.sup.Run(gctx, func(ctx context.Context, connected func()) error {
				return d.session(ctx, sl, h, connected)
			})
		})
	}
	return g.Wait()
}

// session is one connection's life in slot sl.
func (d *Driver) session(ctx context.Context, sl *slot, h bridge.Handler, connected func()) error {
	l, err := d.dial(ctx, sl.index, sl.id)
	if err != nil {
		return err
	}
	sl.set(l)
	connected()

	// hctx is the handler's: it also ends when a link whose deliveries
	// come back anyway is lost, so that a handler blocked on backpressure
	// lets go at once.
	hctx := ctx
	if lost := l.Lost(); lost != nil && !l.Owned() {
		var cancel context.CancelFunc
		hctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-lost:
				cancel()
			case <-hctx.Done():
			}
		}()
	}
	// A Stop under way ends before the session does: Run returns, and the
	// driver goes on to Close the link, only after it.
	stopped := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { defer close(stopped); l.Stop() })
	defer func() {
		if !stop() {
			<-stopped
		}
	}()

	for {
		dl, err := l.Next(hctx)
		if ctx.Err() != nil {
			d.stopIntake(sl, l, h, dl, err == nil)
			return nil
		}
		if err != nil {
			sl.take()
			return l.Abort(err)
		}
		err = h(hctx, dl)
		if err == nil {
			continue
		}
		switch {
		case ctx.Err() != nil:
			d.stopIntake(sl, l, h, dl, true)
			return nil
		case hctx.Err() != nil: // the connection was lost
			dl.Release()
			sl.take()
			return l.Abort(nil)
		}
		dl.Release()
		// Kept open for the settles of what is in flight; Close closes it.
		return fmt.Errorf("%w: %s source: the pipeline refused a delivery: %w", ErrFatal, d.cfg.Protocol, err)
	}
}

// stopIntake ends a link's intake when Run's ctx is done. pending is a
// delivery the handler did not take (nil when none); more tells whether
// the link may still be read. A link that does not own its deliveries
// releases pending and stays in the slot for Close. An owned link hands
// pending and everything it still returns to h under a bounded context of
// its own (the pipeline still takes deliveries: it stops only after the
// source), then it is closed.
func (d *Driver) stopIntake(sl *slot, l Link, h bridge.Handler, pending *bridge.Delivery, more bool) {
	if !l.Owned() {
		if pending != nil {
			pending.Release()
		}
		return
	}
	sl.take()
	ctx, cancel := context.WithTimeout(context.Background(), handOverHandlerTimeout)
	defer cancel()
	handed, lost := 0, 0
	give := func(dl *bridge.Delivery) {
		if err := h(ctx, dl); err != nil {
			lost++
			return
		}
		handed++
	}
	if pending != nil {
		give(pending)
	}
	for more {
		dl, err := l.Next(ctx)
		if err != nil {
			break
		}
		give(dl)
	}
	_ = l.Abort(nil)
	if handed > 0 {
		d.log.Info("messages received before intake stopped handed to the pipeline", "count", handed)
	}
	if lost > 0 {
		d.log.Error("messages received before intake stopped could not be handed to the pipeline; the platform settled them when it sent them, so they are lost", "count", lost)
	}
}

// Close stops Run (if running) and waits for it, then closes every link
// kept for settles, all within ctx (see Link.Close). Settling a delivery
// after Close is a no-op. Close is idempotent.
func (d *Driver) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	started, cancel := d.started, d.cancel
	d.mu.Unlock()
	d.stopGroup()
	if started {
		cancel()
		select {
		case <-d.done:
		case <-ctx.Done():
			return fmt.Errorf("%s source close: Run did not return in time: %w", d.cfg.Protocol, ctx.Err())
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(d.slots))
	for i, sl := range d.slots {
		if l := sl.take(); l != nil {
			wg.Go(func() {
				if err := l.Close(ctx); err != nil {
					errs[i] = fmt.Errorf("%s source close %s: connection closed forcibly: %w", d.cfg.Protocol, sl.id, err)
				}
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopGroup stops the connections' FailureGroup, if any.
func (d *Driver) stopGroup() {
	if d.group != nil {
		d.group.Stop()
	}
}

// ConnStates reports every slot's connection, in slot order.
func (d *Driver) ConnStates() []bridge.ConnState {
	out := make([]bridge.ConnState, len(d.slots))
	for i, sl := range d.slots {
		out[i] = sl.sup.State()
	}
	return out
}

// Link returns slot i's current link: live, or kept for settles after Run;
// nil between connections. For tests and diagnostics.
func (d *Driver) Link(i int) Link {
	sl := d.slots[i]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.link
}

var (
	_ bridge.Source        = (*Driver)(nil)
	_ bridge.StateReporter = (*Driver)(nil)
)
