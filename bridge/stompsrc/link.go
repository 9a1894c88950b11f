package stompsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// goStompReadSlack is added by go-stomp to its own read timeout. We make it
// so large that go-stomp never times a connection out by itself: the silence
// check of the link does that, and, unlike go-stomp (which enforces its read
// timeout even when the server offers no heart-beats), only when the server
// promised heart-beats.
const goStompReadSlack = 365 * 24 * time.Hour

// readChannelCapacity is go-stomp's frame buffer between the socket and the
// subscription; small, because backpressure must reach the socket soon.
const readChannelCapacity = 16

// link is one live STOMP connection with its one subscription. The receive
// loop of its session is the only reader of sub.C; Settle may be called from
// any goroutine.
type link struct {
	name string // the client id
	conn *stomp.Conn
	sub  *stomp.Subscription
	raw  *frameWatch
	log  *slog.Logger
	// silence is how long the server may stay silent before the link is
	// declared dead; 0 when no heart-beats were negotiated.
	silence time.Duration
	// progress is when the receive loop last got a message through the
	// handler (read and written only by the receive loop).
	progress time.Time
	acks     *acker // nil with ack auto
	received atomic.Int64

	closeOnce sync.Once
}

// dial signs afresh, connects over TLS, logs in and subscribes. clientID is
// the slot's client id. It honours ctx and bounds the whole exchange by
// cfg.DialTimeout.
func dial(ctx context.Context, cfg Config, slot int, log *slog.Logger) (*link, error) {
	p, err := cfg.Params()
	if err != nil {
		return nil, fmt.Errorf("stomp connect: signing parameters: %w", err)
	}
	p.ClientID = cfg.clientID(p.ClientID, slot)
	p.EncodeBase64 = cfg.EncodeBase64
	return dialAs(ctx, cfg, p, log)
}

func dialAs(ctx context.Context, cfg Config, p iotauth.Params, log *slog.Logger) (*link, error) {
	creds, err := iotauth.Sign(p, cfg.Clock())
	if err != nil {
		return nil, fmt.Errorf("stomp connect: sign the login for client id %q: %w", p.ClientID, err)
	}
	host, _, _ := net.SplitHostPort(cfg.Endpoint)
	tc, err := cfg.TLS.TLSConfig(host)
	if err != nil {
		// The CA bundle became unusable after the start: redialling
		// cannot fix it.
		return nil, fmt.Errorf("%w: stomp connect %s: %w", bridge.ErrFatal, cfg.Endpoint, err)
	}
	if cfg.TLS.InsecureSkipVerify {
		log.Warn("TLS certificate verification is off (source.tls.insecure_skip_verify); anyone on the path can read and alter the traffic",
			"conn", p.ClientID, "endpoint", cfg.Endpoint)
	}
	secrets := []string{creds.Password, p.AccessKeySecret, p.SecurityToken}
	fail := func(err error) (*link, error) {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("stomp connect %s: %w", cfg.Endpoint, ctx.Err())
		}
		return nil, describeDial(cfg.Endpoint, cfg.DialTimeout, err, secrets...)
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	tcp, err := d.DialContext(dctx, "tcp", cfg.Endpoint)
	if err != nil {
		return fail(err)
	}
	tlsConn := tls.Client(tcp, tc)
	if err := tlsConn.HandshakeContext(dctx); err != nil {
		tcp.Close()
		return fail(err)
	}
	raw := newFrameWatch(tlsConn)
	deadline, _ := dctx.Deadline()
	_ = tlsConn.SetDeadline(deadline)
	// go-stomp's CONNECT honours only the deadline; closing the socket makes
	// it honour cancellation too.
	stop := context.AfterFunc(dctx, func() { tlsConn.Close() })

	var serverHeartBeat string
	opts := []func(*stomp.Conn) error{
		stomp.ConnOpt.Login(creds.Username, creds.Password),
		stomp.ConnOpt.Host(cfg.host()),
		stomp.ConnOpt.HeartBeat(0, cfg.HeartBeat),
		stomp.ConnOpt.HeartBeatError(goStompReadSlack),
		stomp.ConnOpt.ReadChannelCapacity(readChannelCapacity),
		stomp.ConnOpt.DisconnectReceiptTimeout(cfg.DialTimeout),
		stomp.ConnOpt.ResponseHeaders(func(h *frame.Header) { serverHeartBeat = h.Get(frame.HeartBeat) }),
		stomp.ConnOpt.Logger(stompLogger{log.With("conn", p.ClientID)}),
	}
	conn, err := stomp.ConnectWithContext(dctx, raw, opts...)
	if !stop() {
		// ctx was cancelled or the deadline passed: the socket is closed.
		if err == nil {
			err = dctx.Err()
		}
		tlsConn.Close()
		return fail(err)
	}
	if err != nil {
		tlsConn.Close()
		return fail(err)
	}
	_ = tlsConn.SetDeadline(time.Time{})

	l := &link{
		name:    p.ClientID,
		conn:    conn,
		raw:     raw,
		log:     log.With("conn", p.ClientID),
		silence: silenceLimit(cfg.HeartBeat, serverHeartBeat),
	}
	mode := stomp.AckAuto
	if cfg.Ack == AckClientIndividual {
		mode = stomp.AckClientIndividual
		l.acks = newAcker(conn, l.log)
	}
	l.sub, err = conn.Subscribe(cfg.Destination, mode)
	if err != nil {
		l.close()
		return nil, fmt.Errorf("stomp subscribe %s on %s: %w", cfg.Destination, cfg.Endpoint, err)
	}
	l.progress = time.Now()
	l.log.Debug("stomp connected", "username", iotauth.RedactUsername(creds.Username),
		"version", conn.Version().String(), "server", conn.Server(), "heart_beat", serverHeartBeat,
		"silence_limit", l.silence, "destination", cfg.Destination, "ack", cfg.Ack)
	return l, nil
}

// silenceLimit is how long a connection may go without reading a byte when
// we asked for heart-beats every asked and the server's CONNECTED frame
// answered heart-beat: server. Per STOMP the server then beats every
// max(sx, asked) unless either is 0. We allow two intervals and a second.
func silenceLimit(asked time.Duration, server string) time.Duration {
	if asked <= 0 || server == "" {
		return 0
	}
	sx, _, err := frame.ParseHeartBeat(server)
	if err != nil || sx <= 0 {
		return 0
	}
	return 2*max(sx, asked) + time.Second
}

// check reports an error when the server has been silent longer than the
// heart-beats allow. Time spent blocked in the handler does not count: the
// link stops reading then, on purpose.
func (l *link) check(now time.Time) error {
	if l.silence <= 0 {
		return nil
	}
	last := l.raw.LastAlive()
	if l.progress.After(last) {
		last = l.progress
	}
	if quiet := now.Sub(last); quiet > l.silence {
		return fmt.Errorf("stomp connection %s: nothing from the server for %s (heart-beats missed, limit %s); reconnecting",
			l.name, quiet.Round(time.Millisecond), l.silence)
	}
	return nil
}

// isServerError tells a server's ERROR frame from the ones go-stomp makes
// up for a read or write failure, which hold only a message header.
func isServerError(err error) bool {
	f, ok := serverError(err)
	return ok && (f.Header.Len() > 1 || len(f.Body) > 0)
}

// ended describes why the subscription channel delivered an error.
func (l *link) ended(err error) error {
	if f, ok := serverError(err); ok && isServerError(err) {
		return fmt.Errorf("stomp connection %s: the server sent ERROR: %s", l.name, frameText(f))
	}
	if p := l.raw.Problem(); p != "" {
		return fmt.Errorf("stomp connection %s: %s; reconnecting", l.name, p)
	}
	return fmt.Errorf("stomp connection %s: closed by the server or the network: %w", l.name, err)
}

// Settle implements bridge.Settler for client-individual links: Accepted
// sends ACK, Released sends NACK, on this link's connection only. It never
// blocks; when the connection is gone the request is dropped and the
// platform redelivers the message.
func (l *link) Settle(d *bridge.Delivery, o bridge.Outcome) {
	m, ok := d.Token.(*stomp.Message)
	if !ok || l.acks == nil {
		return
	}
	l.acks.push(ackReq{msg: m, ack: o == bridge.Accepted})
}

// close ends the link at once: it closes the socket, so that go-stomp winds
// down, drains what is left on the subscription (nobody else will) and stops
// the acker. Unacknowledged messages are redelivered by the platform. It is
// idempotent and does not block.
func (l *link) close() {
	l.closeOnce.Do(func() {
		l.raw.Close()
		if l.sub != nil {
			go drain(l.sub.C)
		}
		if l.acks != nil {
			l.acks.close()
		}
	})
}

// shutdown ends the link gracefully within ctx: pending ACKs and NACKs are
// sent, then DISCONNECT; whatever go-stomp still buffers is discarded (with
// ack auto those messages were settled by the platform when it sent them).
func (l *link) shutdown(ctx context.Context) {
	dropped := make(chan int, 1)
	ran := false
	l.closeOnce.Do(func() {
		ran = true
		go func() { dropped <- drain(l.sub.C) }()
		if l.acks != nil {
			l.acks.close()
			select {
			case <-l.acks.done:
			case <-ctx.Done():
			}
		}
		done := make(chan error, 1)
		go func() { done <- l.conn.Disconnect() }()
		select {
		case err := <-done:
			if err != nil {
				l.log.Debug("stomp disconnect", "err", err)
			}
		case <-ctx.Done():
		}
		l.raw.Close()
	})
	if !ran {
		return // closed or handed over before
	}
	select {
	case n := <-dropped:
		if n > 0 {
			l.log.Warn("stomp messages buffered at shutdown were not delivered", "count", n,
				"note", "with ack client-individual the platform redelivers them; with ack auto they are lost")
		}
	case <-ctx.Done():
	}
}

// drain reads c until it is closed and returns how many messages it held.
func drain(c <-chan *stomp.Message) int {
	n := 0
	for m := range c {
		if m != nil && m.Err == nil {
			n++
		}
	}
	return n
}

// ackReq is one ACK (ack) or NACK (!ack) to send.
type ackReq struct {
	msg *stomp.Message
	ack bool
}

// acker sends ACK and NACK frames for one connection from its own goroutine,
// so that Settle never blocks: go-stomp's write path stalls while its read
// path waits for the receive loop, which may wait for the pipeline, which
// may wait for settles. The queue is bounded by the deliveries in flight.
type acker struct {
	conn *stomp.Conn
	log  *slog.Logger

	mu     sync.Mutex
	queue  []ackReq
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func newAcker(conn *stomp.Conn, log *slog.Logger) *acker {
	a := &acker{conn: conn, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go a.run()
	return a
}

// push queues r; after close it drops r. It never blocks.
func (a *acker) push(r ackReq) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.queue = append(a.queue, r)
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// close stops taking requests; the goroutine sends what is queued (on a dead
// connection each attempt fails at once) and exits, closing done.
func (a *acker) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acker) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

func (a *acker) run() {
	defer close(a.done)
	var batch []ackReq
	for {
		a.mu.Lock()
		batch, a.queue = a.queue, batch[:0]
		closed := a.closed
		a.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-a.wake
			continue
		}
		for _, r := range batch {
			a.send(r)
		}
		clear(batch)
	}
}

// send sends one frame. go-stomp gives up on a full write queue after its
// send timeout; while the connection lives, that is only backpressure, so
// send tries again.
func (a *acker) send(r ackReq) {
	for {
		var err error
		if r.ack {
			err = a.conn.Ack(r.msg)
		} else {
			err = a.conn.Nack(r.msg)
		}
		if err == nil {
			return
		}
		if errors.Is(err, stomp.ErrMsgSendTimeout) && !a.isClosed() {
			continue
		}
		a.log.Debug("stomp ack not sent; the platform will redeliver the message", "ack", r.ack, "err", err)
		return
	}
}

// stompLogger routes go-stomp's own log lines to slog at debug level: the
// source reports every state change itself.
type stompLogger struct{ log *slog.Logger }

func (l stompLogger) Debugf(f string, v ...any)   { l.log.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (l stompLogger) Infof(f string, v ...any)    { l.log.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (l stompLogger) Warningf(f string, v ...any) { l.log.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (l stompLogger) Errorf(f string, v ...any)   { l.log.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (l stompLogger) Debug(m string)              { l.log.Debug("go-stomp: " + m) }
func (l stompLogger) Info(m string)               { l.log.Debug("go-stomp: " + m) }
func (l stompLogger) Warning(m string)            { l.log.Debug("go-stomp: " + m) }
func (l stompLogger) Error(m string)              { l.log.Debug("go-stomp: " + m) }
