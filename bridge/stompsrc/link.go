package stompsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/monotime"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// subscriptionID is the id of a link's one subscription.
const subscriptionID = "0"

// link is one live STOMP connection with its one subscription, a
// source.Link. Next, called from the slot's goroutine, is the only reader
// of the wire; Settle may be called from any goroutine.
type link struct {
	name string // the client id
	src  *Source
	w    *wire
	log  *slog.Logger
	// version is the STOMP version the server chose ("1.0", "1.1", "1.2").
	version string
	// silence is how long the server may stay silent before the link is
	// declared dead; 0 when no heart-beats were negotiated.
	silence time.Duration
	// progress is when the receive loop last got a message through the
	// handler; inHandler is true while it waits for it.
	progress  monotime.Stamp
	inHandler atomic.Bool
	// interval is the silence check's period; checked is when the check
	// last ran and resumed when it last ran late, after this process was
	// not running (see check). These instants, and wire.lastAlive, are kept
	// on the monotonic clock, so a step of the wall clock is no silence.
	interval         time.Duration
	checked, resumed monotime.Stamp
	acks             *acker // nil with ack auto
	received         atomic.Int64
	// disconnected is set once DISCONNECT was sent.
	disconnected atomic.Bool
	// receipted is set (by Next only) once the RECEIPT of the DISCONNECT
	// was read.
	receipted bool

	// checkErr is the failed liveness check that closed the link.
	checkMu  sync.Mutex
	checkErr error
	watch    *time.Timer

	closeOnce sync.Once
}

// dialAs signs (source.Settings.Login, for op), connects and logs in as
// clientID; it subscribes to cfg.Destination only when subscribe is set
// (the check logs in without subscribing, so nothing can be pushed to it).
func dialAs(ctx context.Context, cfg Config, tc *tls.Config, op, clientID string, log *slog.Logger, subscribe bool) (*link, error) {
	p, creds, err := cfg.Login(op, clientID, func(p *iotauth.Params) { p.EncodeBase64 = cfg.EncodeBase64 })
	if err != nil {
		return nil, err
	}
	cfg.TLS.WarnIfInsecure(log, cfg.Names, p.ClientID, cfg.Endpoint)
	secrets := []string{creds.Password, p.AccessKeySecret, p.SecurityToken}
	fail := func(err error) (*link, error) {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("stomp connect %s: %w", cfg.Endpoint, ctx.Err())
		}
		return nil, cfg.Refusal(p, describeDial(cfg.Names, cfg.Endpoint, cfg.DialTimeout, err, secrets...))
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	gc, tlsConn, err := dialGathering(dctx, cfg.Endpoint, tc, cfg.ReadGather)
	if err != nil {
		return fail(err)
	}
	w := newWire(tlsConn)
	deadline, _ := dctx.Deadline()
	_ = tlsConn.SetDeadline(deadline)
	// The CONNECT exchange honours the deadline; closing the socket makes
	// it honour cancellation too.
	stop := context.AfterFunc(dctx, func() { tlsConn.Close() })

	connected, err := login(w, cfg, creds)
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
	serverHeartBeat := connected.Header.Get(frame.HeartBeat)

	l := &link{
		name:    p.ClientID,
		w:       w,
		log:     log.With("conn", p.ClientID),
		version: connected.Header.Get(frame.Version),
		silence: silenceLimit(cfg.HeartBeat, serverHeartBeat),
	}
	if l.version == "" {
		l.version = "1.0"
	}
	l.progress.Store(time.Now())
	gc.Gather() // logged in: reads may gather from now on
	if !subscribe {
		return l, nil
	}
	mode := "auto"
	if cfg.Ack == AckClientIndividual {
		mode = "client-individual"
		l.acks = newAcker(l)
	}
	if err := w.send(frame.SUBSCRIBE, frame.Destination, cfg.Destination, frame.Ack, mode, frame.Id, subscriptionID); err != nil {
		l.close()
		return nil, fmt.Errorf("stomp subscribe %s on %s: %w", cfg.Destination, cfg.Endpoint, err)
	}
	l.watchSilence(cfg.CheckInterval)
	l.log.Debug("stomp connected", "username", iotauth.RedactUsername(creds.Username),
		"version", l.version, "server", connected.Header.Get(frame.Server), "heart_beat", serverHeartBeat,
		"silence_limit", l.silence, "destination", cfg.Destination, "ack", cfg.Ack)
	return l, nil
}

// login sends CONNECT and reads the answer: CONNECTED, or an ERROR returned
// as a stomp.Error carrying the frame (see serverError).
func login(w *wire, cfg Config, creds iotauth.Credentials) (*inFrame, error) {
	err := w.send(frame.CONNECT,
		frame.AcceptVersion, "1.0,1.1,1.2",
		frame.Host, cfg.host(),
		frame.Login, creds.Username,
		frame.Passcode, creds.Password,
		// We send no heart-beats and ask for them every HeartBeat.
		frame.HeartBeat, "0,"+strconv.FormatInt(cfg.HeartBeat.Milliseconds(), 10))
	if err != nil {
		return nil, err
	}
	f, err := w.read()
	if err != nil {
		return nil, err
	}
	switch f.Command {
	case frame.CONNECTED:
		return f, nil
	case frame.ERROR:
		return nil, serverErr(f)
	}
	return nil, fmt.Errorf("the server answered CONNECT with %s", f.Command)
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
// link stops reading then, on purpose. Nor does time this process did not
// run (SIGSTOP, a paused VM or container, a starved box), told by a check
// that runs late (source.Paused): the server's beats wait unread in the
// socket meanwhile, so the silence counts again from then.
func (l *link) check(now time.Time) error {
	if l.silence <= 0 {
		return nil
	}
	if prev := l.checked.Swap(now); !prev.IsZero() {
		if gap, paused := source.Paused(prev, now, l.interval); paused {
			l.resumed.Store(now)
			if gap > l.silence {
				again := "" // ack auto: the platform counts a push settled once sent
				if l.acks != nil {
					again = ", and what the platform pushed meanwhile may come again after its ACK timeout (30s)"
				}
				l.log.Warn("this process did not run for a while (paused: SIGSTOP, a paused VM or container; or starved of CPU); "+
					"the server's silence counts from now"+again, "gap", gap.Round(time.Millisecond))
			}
		}
	}
	if l.inHandler.Load() {
		return nil
	}
	last := l.w.LastAlive()
	if p := l.progress.Load(); p.After(last) {
		last = p
	}
	if r := l.resumed.Load(); r.After(last) {
		last = r
	}
	if quiet := now.Sub(last); quiet > l.silence {
		return fmt.Errorf("stomp connection %s: nothing from the server for %s (heart-beats missed, limit %s); reconnecting",
			l.name, quiet.Round(time.Millisecond), l.silence)
	}
	return nil
}

// watchSilence checks the link every interval while it lives; a failed
// check is recorded and closes the socket, which ends the receive loop's
// read. It costs no goroutine while it waits.
func (l *link) watchSilence(interval time.Duration) {
	if l.silence <= 0 {
		return
	}
	l.interval = interval
	l.checked.Store(time.Now())
	var tick func()
	tick = func() {
		if err := l.check(time.Now()); err != nil {
			l.checkMu.Lock()
			l.checkErr = err
			l.checkMu.Unlock()
			l.w.Close()
			return
		}
		l.checkMu.Lock()
		if l.watch != nil {
			l.watch.Reset(interval)
		}
		l.checkMu.Unlock()
	}
	l.checkMu.Lock()
	l.watch = time.AfterFunc(interval, tick)
	l.checkMu.Unlock()
}

// stopWatch stops the silence check.
func (l *link) stopWatch() {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	if l.watch != nil {
		l.watch.Stop()
		l.watch = nil
	}
}

// failedCheck is the liveness check that closed the link, or nil.
func (l *link) failedCheck() error {
	l.checkMu.Lock()
	defer l.checkMu.Unlock()
	return l.checkErr
}

// isServerError tells a server's ERROR frame from errors made up for a
// read or write failure, which hold only a message header.
func isServerError(err error) bool {
	f, ok := serverError(err)
	return ok && (f.Header.Len() > 1 || len(f.Body) > 0)
}

// ended describes why reading from the link failed.
func (l *link) ended(err error) error {
	if f, ok := serverError(err); ok && isServerError(err) {
		return fmt.Errorf("stomp connection %s: the server sent ERROR: %s", l.name, frameText(f))
	}
	if err := l.failedCheck(); err != nil {
		return err
	}
	if p := l.w.Problem(); p != "" {
		return fmt.Errorf("stomp connection %s: %s; reconnecting", l.name, p)
	}
	return fmt.Errorf("stomp connection %s: closed by the server or the network: %w", l.name, err)
}

// afterReceipt bounds how long Next still reads after the RECEIPT of the
// DISCONNECT, until the server closes the connection.
const afterReceipt = 500 * time.Millisecond

// errDisconnected ends Next once the server confirmed the DISCONNECT and
// closed the connection (or afterReceipt passed).
var errDisconnected = errors.New("stomp connection ended by DISCONNECT")

// Next reads frames until the next MESSAGE and returns it as a delivery
// (source.Link). An ERROR frame, a read error or a failed silence check
// fails the link; after Stop, the RECEIPT of the DISCONNECT ends it. ctx is
// not read: Stop interrupts a blocked read.
func (l *link) Next(context.Context) (*bridge.Delivery, error) {
	if l.inHandler.Load() {
		// The previous delivery is through the handler.
		l.progress.Store(time.Now())
		l.inHandler.Store(false)
	}
	for {
		f, err := l.w.read()
		if err != nil {
			if l.receipted {
				return nil, errDisconnected
			}
			return nil, l.ended(err)
		}
		switch f.Command {
		case frame.MESSAGE:
			d := l.src.delivery(l, f)
			l.inHandler.Store(true)
			return d, nil
		case frame.ERROR:
			return nil, l.ended(serverErr(f))
		case frame.RECEIPT:
			if f.Header.Get(frame.ReceiptId) == disconnectReceipt && !l.receipted {
				// A server may still write a message after the RECEIPT,
				// one its sender had taken before it read the DISCONNECT
				// (the simulator does: its sender and its reader write
				// concurrently). With ack auto that message is settled:
				// read on until the server closes, at most afterReceipt.
				l.receipted = true
				_ = l.w.nc.SetReadDeadline(time.Now().Add(afterReceipt))
			}
		}
		// Anything else (a RECEIPT we did not ask for) is skipped.
	}
}

// Owned: with ack auto the platform settled every message when it sent it.
func (l *link) Owned() bool { return l.acks == nil }

// Lost is nil: the link notices a lost connection only when it reads.
func (l *link) Lost() <-chan struct{} { return nil }

// Stop ends intake: nothing is read from now on, so silence no longer says
// anything. With ack auto the link sends DISCONNECT, so that the server
// stops sending, and Next returns what the server sent before its RECEIPT
// (the socket is closed after source.HandOverTimeout). With
// client-individual a blocked read ends without closing the socket, which
// stays open for the settles of the deliveries in flight.
func (l *link) Stop() {
	l.stopWatch()
	if l.acks == nil {
		l.startHandOver()
		return
	}
	_ = l.w.nc.SetReadDeadline(time.Now())
}

// Abort closes the failed link at once and returns cause.
func (l *link) Abort(cause error) error {
	l.close()
	return cause
}

// Close ends the link gracefully within ctx (see shutdown); it returns
// ctx's error when ctx ended first.
func (l *link) Close(ctx context.Context) error {
	l.shutdown(ctx)
	return ctx.Err()
}

// ackToken is what a client-individual delivery carries to be settled: the
// frame's ack header (STOMP 1.2) or message-id (1.0, 1.1).
type ackToken struct {
	ack, messageID string
}

// Settle implements bridge.Settler for client-individual links: Accepted
// sends ACK, Released sends NACK, on this link's connection only. It never
// blocks; when the connection is gone the request is dropped and the
// platform redelivers the message.
func (l *link) Settle(d *bridge.Delivery, o bridge.Outcome) {
	t, ok := d.Token.(ackToken)
	if !ok || l.acks == nil {
		return
	}
	l.acks.push(ackReq{tok: t, ack: o == bridge.Accepted})
}

// close ends the link at once: it closes the socket and stops the acker.
// Unacknowledged messages are redelivered by the platform. It is idempotent
// and does not block.
func (l *link) close() {
	l.closeOnce.Do(func() {
		l.stopWatch()
		l.w.Close()
		if l.acks != nil {
			l.acks.close()
		}
	})
}

// shutdown ends the link gracefully within ctx: pending ACKs and NACKs are
// sent, then DISCONNECT; the frames the server still sends until its
// RECEIPT are read and discarded (with ack auto those messages were
// settled by the platform when it sent them; with client-individual it
// redelivers them).
func (l *link) shutdown(ctx context.Context) {
	l.closeOnce.Do(func() {
		l.stopWatch()
		if l.acks != nil {
			l.acks.close()
			select {
			case <-l.acks.done:
			case <-ctx.Done():
			}
		}
		n, err := l.disconnect(ctx, nil)
		if err != nil {
			l.log.Debug("stomp disconnect", "err", err)
		}
		l.w.Close()
		if n > 0 {
			l.log.Warn("stomp messages buffered at shutdown were not delivered", "count", n,
				"note", "with ack client-individual the platform redelivers them; with ack auto they are lost")
		}
	})
}

// disconnect sends DISCONNECT with a receipt and reads until the RECEIPT,
// the end of the connection or ctx, passing each MESSAGE to each (when
// not nil) and counting the ones it did not pass. The server sends nothing
// after the RECEIPT. Only the reader may call it.
func (l *link) disconnect(ctx context.Context, each func(*inFrame)) (dropped int, err error) {
	if err := l.sendDisconnect(); err != nil {
		return 0, err
	}
	if l.w.mid {
		// An earlier read stopped inside a frame: the rest cannot be parsed.
		return 0, errors.New("not waiting for the receipt: the connection stopped mid-frame")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(source.HandOverTimeout)
	}
	_ = l.w.nc.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = l.w.nc.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		f, err := l.w.read()
		if err != nil {
			return dropped, err
		}
		switch f.Command {
		case frame.MESSAGE:
			if each != nil {
				each(f)
			} else {
				dropped++
			}
		case frame.RECEIPT:
			if f.Header.Get(frame.ReceiptId) == disconnectReceipt {
				return dropped, nil
			}
		case frame.ERROR:
			return dropped, serverErr(f)
		}
	}
}

// disconnectReceipt is the receipt id of the link's DISCONNECT.
const disconnectReceipt = "disconnect"

// sendDisconnect sends DISCONNECT with a receipt, once.
func (l *link) sendDisconnect() error {
	if !l.disconnected.CompareAndSwap(false, true) {
		return nil
	}
	return l.w.send(frame.DISCONNECT, frame.Receipt, disconnectReceipt)
}

// startHandOver begins an ack-auto link's end when intake stops: DISCONNECT,
// so that the server stops sending, and a bound on how long Next may still
// read until the RECEIPT (the socket is closed after
// source.HandOverTimeout).
func (l *link) startHandOver() {
	if err := l.sendDisconnect(); err != nil {
		l.log.Debug("stomp disconnect", "err", err)
	}
	time.AfterFunc(source.HandOverTimeout, func() { l.w.Close() })
}

// ackReq is one ACK (ack) or NACK (!ack) to send.
type ackReq struct {
	tok ackToken
	ack bool
}

// acker sends the ACK and NACK frames of one connection from its own
// goroutine, so that Settle never blocks (a socket write can, while the
// server waits for us to read). Each wake-up writes every frame queued
// meanwhile in one socket write: no goroutine hop or write per ACK. The
// queue is bounded by the deliveries in flight.
type acker struct {
	l *link

	mu     sync.Mutex
	queue  []ackReq
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func newAcker(l *link) *acker {
	a := &acker{l: l, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	first := len(a.queue) == 1
	a.mu.Unlock()
	if first {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
}

// close stops taking requests; the goroutine sends what is queued (on a dead
// connection the write fails at once) and exits, closing done.
func (a *acker) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *acker) run() {
	defer close(a.done)
	var batch []ackReq
	var buf []byte
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
		buf = buf[:0]
		for _, r := range batch {
			buf = a.l.appendAck(buf, r)
		}
		if len(buf) > 0 {
			if err := a.l.w.write(buf); err != nil {
				a.l.log.Debug("stomp acks not sent; the platform will redeliver the messages", "count", len(batch), "err", err)
			}
		}
		clear(batch)
	}
}

// appendAck appends the ACK or NACK frame for r in the link's STOMP
// version (STOMP 1.0 has no NACK: nothing is sent, the platform
// redelivers).
func (l *link) appendAck(dst []byte, r ackReq) []byte {
	cmd := frame.ACK
	if !r.ack {
		cmd = frame.NACK
	}
	switch l.version {
	case "1.2":
		return appendFrame(dst, cmd, frame.Id, r.tok.ack)
	case "1.1":
		return appendFrame(dst, cmd, frame.Subscription, subscriptionID, frame.MessageId, r.tok.messageID)
	}
	if !r.ack {
		return dst
	}
	return appendFrame(dst, cmd, frame.MessageId, r.tok.messageID)
}
