// Package stompsrc is the STOMP-over-TLS source: it consumes an Alibaba
// Cloud IoT Platform server-side subscription with go-stomp, hands every
// MESSAGE frame to the pipeline as a bridge.Delivery, and keeps its
// connections alive by itself.
//
// Each of Config.Connections slots holds at most one connection, supervised
// by a bridge.Supervisor: every dial signs afresh, CONNECTs with heart-beats
// and SUBSCRIBEs; a periodic check (and go-stomp's own read path) finds a
// dead or silent connection and the supervisor redials with jittered
// backoff under the consumer group's shared attempt limiter.
//
// With ack auto the platform settles a message when it sends it, so settling
// a delivery is a no-op. With ack client-individual, Accept sends ACK and
// Release sends NACK on the connection the message came on; if that
// connection is gone nothing is sent and the platform redelivers.
package stompsrc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("stomp source is closed")

// Source consumes the subscription over Config.Connections connections. It
// implements bridge.Source and bridge.StateReporter. Its methods are safe
// for concurrent use; Run may be called once.
type Source struct {
	cfg Config
	log *slog.Logger
	// backoff bounds between failed attempts of one slot (tests shorten it).
	minBackoff, maxBackoff time.Duration
	stableAfter            time.Duration

	loggedHeaders atomic.Bool

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	slots   []*slot
	done    chan struct{} // closed when Run returns
}

// slot is one connection slot: its supervisor and its current link.
type slot struct {
	index int
	sup   *bridge.Supervisor

	mu   sync.Mutex
	link *link
}

func (sl *slot) setLink(l *link) {
	sl.mu.Lock()
	sl.link = l
	sl.mu.Unlock()
}

func (sl *slot) current() *link {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.link
}

// New validates cfg and fills in defaults. It does no I/O.
func New(cfg Config) (*Source, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	// A CA bundle that cannot be used is a config error: found here, not
	// retried at every dial.
	host, _, _ := net.SplitHostPort(cfg.Endpoint)
	if _, err := cfg.TLS.TLSConfig(host); err != nil {
		return nil, err
	}
	return &Source{
		cfg:         cfg,
		log:         cfg.Logger.With("source", "stomp"),
		minBackoff:  cmp.Or(cfg.MinBackoff, time.Second),
		maxBackoff:  max(cmp.Or(cfg.MaxBackoff, time.Minute), cmp.Or(cfg.MinBackoff, time.Second)),
		stableAfter: time.Minute,
		done:        make(chan struct{}),
	}, nil
}

// Run connects every slot and hands each received message to h, from one
// goroutine per connection, until ctx is done or Close is called; then it
// returns nil. While h blocks, that connection reads nothing more
// (backpressure). Run never cancels a call of h because a connection died:
// with ack auto the message is already the bridge's. If h returns an error
// while ctx is not done, the pipeline is gone: Run returns that error.
//
// When Run returns, the connections stay open so that deliveries in flight
// can still be acknowledged; Close closes them.
func (s *Source) Run(ctx context.Context, h bridge.Handler) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.started {
		s.mu.Unlock()
		return errors.New("stomp source: Run called twice")
	}
	s.started = true
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	base := "stomp"
	if p, err := s.cfg.Params(); err == nil && p.ClientID != "" {
		base = p.ClientID
	}
	for i := range s.cfg.Connections {
		name := s.cfg.clientID(base, i)
		s.slots = append(s.slots, &slot{index: i, sup: &bridge.Supervisor{
			Name:        name,
			Backoff:     bridge.Backoff{Min: s.minBackoff, Max: s.maxBackoff},
			StableAfter: s.stableAfter,
			Limiter:     s.cfg.Limiter,
			Logger:      s.log,
		}})
	}
	slots := s.slots
	s.mu.Unlock()
	defer close(s.done)

	g, gctx := errgroup.WithContext(ctx)
	for _, sl := range slots {
		g.Go(func() error { return sl.sup.Run(gctx, s.session(sl, h)) })
	}
	return g.Wait()
}

// session is one connection's life in slot sl.
func (s *Source) session(sl *slot, h bridge.Handler) bridge.Session {
	return func(ctx context.Context, connected func()) error {
		l, err := dial(ctx, s.cfg, sl.index, s.log)
		if err != nil {
			return err
		}
		sl.setLink(l)
		connected()
		err = s.receive(ctx, l, h)
		if ctx.Err() != nil || errors.Is(err, bridge.ErrFatal) {
			// Stay open for the settles of deliveries in flight; Close
			// closes the link.
			return err
		}
		l.close()
		sl.setLink(nil)
		return err
	}
}

// receive hands messages of l to h until l fails, its check fails or ctx is
// done.
func (s *Source) receive(ctx context.Context, l *link, h bridge.Handler) error {
	tick := time.NewTicker(s.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if l.acks == nil {
				s.handOver(l, h, nil)
			}
			return ctx.Err()
		case now := <-tick.C:
			if err := l.check(now); err != nil {
				return err
			}
		case m, ok := <-l.sub.C:
			if !ok {
				return fmt.Errorf("stomp connection %s: the subscription ended", l.name)
			}
			if m.Err != nil {
				return l.ended(m.Err)
			}
			d := s.delivery(l, m)
			if err := h(ctx, d); err != nil {
				if ctx.Err() != nil {
					if l.acks == nil {
						// Ack auto: the message is already ours alone.
						s.handOver(l, h, d)
					} else {
						d.Release()
					}
					return ctx.Err()
				}
				d.Release()
				return fmt.Errorf("%w: stomp source: the pipeline refused a delivery: %w", bridge.ErrFatal, err)
			}
			l.progress = time.Now()
		}
	}
}

// handOverTimeout bounds the hand-over of buffered ack-auto messages at
// shutdown.
const handOverTimeout = 10 * time.Second

// handOver ends an ack-auto link when intake stops without losing what the
// platform already pushed: with ack auto the platform settled those
// messages when it sent them, so they are the bridge's alone. It sends
// DISCONNECT (the server sends nothing after answering it) and meanwhile
// hands first (when not nil) and every message still buffered to h, until
// the subscription ends or handOverTimeout passes; then it closes the socket
// and offers h what go-stomp still buffered. The pipeline still takes
// deliveries at this point (it stops only after the source returned).
func (s *Source) handOver(l *link, h bridge.Handler, first *bridge.Delivery) {
	l.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
		defer cancel()
		disconnected := make(chan struct{})
		go func() {
			if err := l.conn.Disconnect(); err != nil {
				l.log.Debug("stomp disconnect", "err", err)
			}
			close(disconnected)
		}()
		handed, lost := 0, 0
		if first != nil {
			if err := h(ctx, first); err != nil {
				lost++
			} else {
				handed++
			}
		}
	loop:
		for {
			select {
			case m, ok := <-l.sub.C:
				if !ok {
					break loop
				}
				if m.Err != nil {
					continue // the subscription's end, reported as an error frame
				}
				if err := h(ctx, s.delivery(l, m)); err != nil {
					lost++
					continue
				}
				handed++
			case <-ctx.Done():
				break loop
			}
		}
		l.raw.Close()
		// The socket is closed: go-stomp ends the subscription once it has
		// handed over what it buffered. Those messages are offered to h as
		// well (with ctx done it takes them only if it can without waiting:
		// the bridge keeps them for the spool or the dead-letter file).
		for m := range l.sub.C {
			if m == nil || m.Err != nil {
				continue
			}
			if err := h(ctx, s.delivery(l, m)); err != nil {
				lost++
				continue
			}
			handed++
		}
		<-disconnected
		if handed > 0 {
			l.log.Info("stomp messages buffered at shutdown handed to the pipeline", "count", handed)
		}
		if lost > 0 {
			l.log.Error("stomp messages buffered at shutdown could not be handed over; with ack auto they are lost", "count", lost)
		}
	})
}

// delivery turns a received frame into a delivery settled through l.
func (s *Source) delivery(l *link, m *stomp.Message) *bridge.Delivery {
	l.received.Add(1)
	if s.loggedHeaders.CompareAndSwap(false, true) {
		s.logHeaders(l, m)
	}
	msg := toMessage(m.Header, m.Body, s.cfg.EncodeBase64)
	var settler bridge.Settler
	var token any
	if l.acks != nil {
		settler = l
		// The token keeps what ACK and NACK need, not the frame's body: a
		// base64 body would otherwise be held twice, encoded and decoded.
		token = &stomp.Message{Header: m.Header, Subscription: m.Subscription, Conn: m.Conn}
	}
	return bridge.NewDelivery(msg, settler, token)
}

// logHeaders logs the headers of the first message once: the platform does
// not document which headers it sends.
func (s *Source) logHeaders(l *link, m *stomp.Message) {
	var b strings.Builder
	for i := 0; m.Header != nil && i < m.Header.Len(); i++ {
		k, v := m.Header.GetAt(i)
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(k + "=" + strconv.Quote(v))
	}
	l.log.Info("first stomp message received", "headers", b.String(), "body_bytes", len(m.Body))
}

// Close stops Run (if running) and waits for it, then for each connection
// sends the pending ACKs and NACKs, DISCONNECTs and closes the socket, all
// within ctx. Messages not acknowledged by then are redelivered by the
// platform (client-individual). Settling a delivery after Close is a no-op.
// Close is idempotent.
func (s *Source) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started, cancel, slots := s.started, s.cancel, s.slots
	s.mu.Unlock()
	if !started {
		return nil
	}
	cancel()
	select {
	case <-s.done:
	case <-ctx.Done():
		return fmt.Errorf("stomp source close: Run did not return in time: %w", ctx.Err())
	}
	var wg sync.WaitGroup
	for _, sl := range slots {
		if l := sl.current(); l != nil {
			wg.Go(func() { l.shutdown(ctx) })
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stomp source close: connections closed forcibly: %w", err)
	}
	return nil
}

// ConnStates reports every slot's connection; nil before Run.
func (s *Source) ConnStates() []bridge.ConnState {
	s.mu.Lock()
	slots := s.slots
	s.mu.Unlock()
	out := make([]bridge.ConnState, 0, len(slots))
	for _, sl := range slots {
		out = append(out, sl.sup.State())
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

var (
	_ bridge.Source        = (*Source)(nil)
	_ bridge.StateReporter = (*Source)(nil)
	_ bridge.Settler       = (*link)(nil)
)
