// Package stompsrc is the STOMP-over-TLS source: it consumes an Alibaba
// Cloud IoT Platform server-side subscription, hands every MESSAGE frame to
// the pipeline as a bridge.Delivery, and keeps its connections alive by
// itself.
//
// Each of Config.Connections slots holds at most one connection, supervised
// by a source.Supervisor: every dial signs afresh, CONNECTs with heart-beats
// and SUBSCRIBEs. The connection's own goroutine reads its frames (wire.go,
// a reader of our own over go-stomp's frame types: liveness, size limits and
// parsing in one pass) and calls the handler, with no goroutine between the
// socket and the pipeline, and reads nothing while the handler blocks. A
// timer per connection finds a silent one; a read error, an ERROR frame or
// silence makes the supervisor redial with jittered backoff under the
// consumer group's shared attempt limiter.
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

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
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
	sup   *source.Supervisor

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
		s.slots = append(s.slots, &slot{index: i, sup: &source.Supervisor{
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
func (s *Source) session(sl *slot, h bridge.Handler) source.Session {
	return func(ctx context.Context, connected func()) error {
		l, err := dial(ctx, s.cfg, sl.index, s.log)
		if err != nil {
			return err
		}
		sl.setLink(l)
		connected()
		err = s.receive(ctx, l, h)
		if ctx.Err() != nil || errors.Is(err, source.ErrFatal) {
			// Stay open for the settles of deliveries in flight; Close
			// closes the link.
			return err
		}
		l.close()
		sl.setLink(nil)
		return err
	}
}

// receive reads the frames of l in this goroutine and hands each message
// to h, until l fails (a read error, an ERROR frame, a failed silence
// check) or ctx is done. Nothing is read while h blocks: backpressure.
//
// When ctx is done: with ack auto the link sends DISCONNECT and hands over
// what the server sent before its RECEIPT (see handOver); with
// client-individual the read stops and the link stays open for the settles
// of the deliveries in flight.
func (s *Source) receive(ctx context.Context, l *link, h bridge.Handler) error {
	l.watchSilence(s.cfg.CheckInterval)
	var stop func() bool
	if l.acks == nil {
		stop = context.AfterFunc(ctx, l.startHandOver)
	} else {
		// A done ctx ends a blocked read without closing the socket.
		stop = context.AfterFunc(ctx, func() { _ = l.w.nc.SetReadDeadline(time.Now()) })
	}
	defer stop()
	for {
		f, err := l.w.read()
		if ctx.Err() != nil {
			// Nothing is read from now on: silence no longer says anything
			// (a client-individual link stays open for the settles).
			l.stopWatch()
			if l.acks == nil {
				var first *bridge.Delivery
				if err == nil && f.Command == frame.MESSAGE {
					first = s.delivery(l, f)
				}
				s.handOver(l, h, first, err != nil || f.Command == frame.RECEIPT)
			}
			return ctx.Err()
		}
		if err != nil {
			return l.ended(err)
		}
		switch f.Command {
		case frame.MESSAGE:
		case frame.ERROR:
			return l.ended(serverErr(f))
		default:
			continue // a RECEIPT we did not ask for
		}
		d := s.delivery(l, f)
		l.inHandler.Store(true)
		err = h(ctx, d)
		l.progress.Store(time.Now().UnixNano())
		l.inHandler.Store(false)
		if err != nil {
			if ctx.Err() != nil {
				l.stopWatch()
				if l.acks == nil {
					// Ack auto: the message is already ours alone.
					s.handOver(l, h, d, false)
				} else {
					d.Release()
				}
				return ctx.Err()
			}
			d.Release()
			return fmt.Errorf("%w: stomp source: the pipeline refused a delivery: %w", source.ErrFatal, err)
		}
	}
}

// handOverTimeout bounds the hand-over of buffered ack-auto messages at
// shutdown.
const handOverTimeout = 10 * time.Second

// handOver ends an ack-auto link when intake stops without losing what the
// platform already pushed: with ack auto the platform settled those
// messages when it sent them, so they are the bridge's alone. The link has
// sent DISCONNECT (startHandOver; the server sends nothing after answering
// it); handOver hands first (when not nil) and every message the server
// sent before its RECEIPT to h, until the RECEIPT (ended: it was already
// read, or the connection is gone), the end of the connection or
// handOverTimeout. The pipeline still takes deliveries at this point (it
// stops only after the source returned). It runs in the receive loop, the
// link's only reader.
func (s *Source) handOver(l *link, h bridge.Handler, first *bridge.Delivery, ended bool) {
	l.closeOnce.Do(func() {
		l.stopWatch()
		ctx, cancel := context.WithTimeout(context.Background(), handOverTimeout)
		defer cancel()
		handed, lost := 0, 0
		give := func(d *bridge.Delivery) {
			if err := h(ctx, d); err != nil {
				lost++
				return
			}
			handed++
		}
		if first != nil {
			give(first)
		}
		if !ended {
			if _, err := l.disconnect(ctx, func(f *inFrame) { give(s.delivery(l, f)) }); err != nil {
				l.log.Debug("stomp disconnect", "err", err)
			}
		}
		l.w.Close()
		if handed > 0 {
			l.log.Info("stomp messages buffered at shutdown handed to the pipeline", "count", handed)
		}
		if lost > 0 {
			l.log.Error("stomp messages buffered at shutdown could not be handed over; with ack auto they are lost", "count", lost)
		}
	})
}

// delivery turns a received MESSAGE frame into a delivery settled through l.
func (s *Source) delivery(l *link, f *inFrame) *bridge.Delivery {
	l.received.Add(1)
	if s.loggedHeaders.CompareAndSwap(false, true) {
		s.logHeaders(l, f)
	}
	var msg bridge.Message
	if s.cfg.EncodeBase64 && bridge.IsCanonicalBase64(f.Body) {
		// Checked, not decoded: a sink that writes base64 sends it as it is.
		msg = toMessage(f.Header, f.Body, false)
		msg.Base64 = true
	} else {
		msg = toMessage(f.Header, f.Body, s.cfg.EncodeBase64)
	}
	if l.acks == nil {
		return bridge.NewDelivery(msg, nil, nil)
	}
	// The token keeps what ACK and NACK need, not the frame: a base64 body
	// would otherwise be held twice, encoded and decoded.
	return bridge.NewDelivery(msg, l, ackToken{ack: f.Header.Get(frame.Ack), messageID: f.Header.Get(frame.MessageId)})
}

// logHeaders logs the headers of the first message once: the platform does
// not document which headers it sends.
func (s *Source) logHeaders(l *link, m *inFrame) {
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
