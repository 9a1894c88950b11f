package iotsim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// The platform's AMQP rules (protocol brief, sections 1 and 4).
const (
	// DefaultMinIdleTimeout and DefaultMaxIdleTimeout bound the
	// idle-time-out a client's open may carry; outside them the connection
	// is refused (platform error 9601, "heartbeat value not acceptable").
	DefaultMinIdleTimeout = 30 * time.Second
	DefaultMaxIdleTimeout = 300 * time.Second
	// DefaultAttachTimeout is how long an open connection may go without a
	// receiver link before the platform closes it.
	DefaultAttachTimeout = 15 * time.Second
)

// amqpMaxFrame is the max-frame-size the simulator announces and accepts.
const amqpMaxFrame = 64 * 1024

// amqpWindow is the session incoming window the simulator announces: it
// never limits a client, which sends no transfers anyway.
const amqpWindow = 5000

// amqpConn is one AMQP 1.0 client connection: SASL PLAIN, open, one
// session, one receiver link (the simulator is its sender). serveAMQP runs
// the read side; sendLoop pushes the group's messages within the link
// credit and the session window and beats when idle.
type amqpConn struct {
	// kick: credit, window or settlement changed; pending: by delivery-id.
	clientConn[uint32, *amqpDelivery]

	closeOnce sync.Once
	wmu       sync.Mutex
	bw        *bufio.Writer
	wbuf      []byte
	sendMu    sync.Mutex // held by deliver from its checks through its write

	// Set before the connection is open, read-only afterwards.
	maxFrame uint32        // the client's max-frame-size
	idle     time.Duration // the client's idle-time-out
	opened   bool

	// Under mu: the session (one; channel-max is 0),
	session       bool
	remoteChannel uint16
	nextOutID     uint32 // transfer-id of our next transfer
	remoteInNext  uint32 // client's next-incoming-id
	remoteInWin   uint32 // client's incoming-window at remoteInNext
	// the receiver link, nil when none is attached
	link      *amqpLink
	attached  chan struct{} // closed at the first receiver attach
	nextDelID uint32
	seq       int64 // send order of the unsettled deliveries
}

// amqpLink is the client's receiver link, seen from the sender side.
type amqpLink struct {
	handle        uint32 // the client's handle; the simulator uses the same number
	name          string
	settled       bool   // snd-settle-mode settled: deliveries are pre-settled (auto ack)
	deliveryCount uint32 // sender's delivery-count
	credit        uint32 // link-credit left
	drain         bool
}

// amqpDelivery is an unsettled transfer awaiting its disposition.
type amqpDelivery struct {
	sent
	id uint32
}

func newAMQPConn(s *Server, nc net.Conn) *amqpConn {
	c := &amqpConn{bw: bufio.NewWriterSize(nc, 32*1024), attached: make(chan struct{})}
	c.init(s, nc, "proto", "amqp")
	return c
}

// close ends the connection from the server side: an open connection gets
// a close frame (amqp:connection:forced, the platform's 9602) first.
func (c *amqpConn) close() {
	c.closeWith(&amqp10.Error{Condition: amqp10.ErrConnectionForced,
		Description: "9602: the server closed the connection (load balancing); reconnect"})
}

// closeWith sends close with e when the connection is open, then closes
// the socket. Idempotent. The close follows every transfer the server
// counted as delivered: a transfer being written is finished first and none
// starts after (a write blocked on a client that reads no more is given a
// second).
func (c *amqpConn) closeWith(e *amqp10.Error) {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.SetWriteDeadline(time.Now().Add(time.Second)) // a write blocked on a client that reads no more
		c.unlink(nil)
		c.mu.Lock()
		open := c.opened
		c.mu.Unlock()
		if open && e != nil {
			_ = c.writeFrame(&amqp10.Close{Error: e}, nil, time.Second)
		}
		c.nc.Close()
	})
}

// writeFrame writes one frame (nil p: an empty frame) and flushes.
func (c *amqpConn) writeFrame(p amqp10.Performative, payload []byte, timeout time.Duration) error {
	return c.writeFrames(timeout, func(b []byte) ([]byte, error) {
		return amqp10.AppendFrame(b, amqp10.FrameAMQP, 0, p, payload)
	})
}

// writeFrames encodes with enc into the write buffer and flushes it.
func (c *amqpConn) writeFrames(timeout time.Duration, enc func([]byte) ([]byte, error)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b, err := enc(c.wbuf[:0])
	if err != nil {
		return err
	}
	c.wbuf = b
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	return c.bw.Flush()
}

func (c *amqpConn) writeSASL(p amqp10.Performative) error {
	return c.writeFrames(writeTimeout, func(b []byte) ([]byte, error) {
		return amqp10.AppendFrame(b, amqp10.FrameSASL, 0, p, nil)
	})
}

func (c *amqpConn) writeRaw(b []byte) error {
	return c.writeFrames(writeTimeout, func(dst []byte) ([]byte, error) { return append(dst, b...), nil })
}

func (c *amqpConn) serve() {
	loggedIn := false
	defer func() {
		c.closeWith(nil)
		c.s.forget(c, c.clientID, loggedIn)
	}()
	br := bufio.NewReaderSize(c.nc, 32*1024)
	c.nc.SetDeadline(time.Now().Add(c.s.cfg.LoginTimeout))
	ok, reason := c.handshake(br)
	loggedIn = c.counted
	if !ok {
		c.log.Info("amqp connection refused before open", "reason", reason)
		return
	}
	c.nc.SetDeadline(time.Time{})

	var wg sync.WaitGroup
	wg.Go(c.sendLoop)
	wg.Go(c.attachDeadline)
	reason = c.readLoop(br)
	c.closeWith(nil)
	wg.Wait()
	n := c.drain()
	c.log.Info("connection closed", "reason", reason, "requeued", n)
}

// handshake runs the SASL layer and the open exchange. It reports whether
// the connection is open, or why not.
func (c *amqpConn) handshake(br *bufio.Reader) (bool, string) {
	h, err := amqp10.ReadProtocolHeader(br)
	if err != nil {
		return false, "no AMQP protocol header: " + err.Error()
	}
	if h != amqp10.HeaderSASL {
		// The platform requires SASL PLAIN: answer with the header we
		// speak and hang up, as the specification says.
		_ = c.writeRaw(amqp10.HeaderSASL[:])
		return false, fmt.Sprintf("protocol header %v: the platform requires SASL (AMQP 3.1.0.0) first", h[4:])
	}
	if err := c.writeRaw(amqp10.HeaderSASL[:]); err != nil {
		return false, err.Error()
	}
	if err := c.writeSASL(&amqp10.SASLMechanisms{Mechanisms: []amqp10.Symbol{"PLAIN"}}); err != nil {
		return false, err.Error()
	}
	f, err := amqp10.ReadFrame(br, amqpMaxFrame)
	if err != nil {
		return false, "reading sasl-init: " + err.Error()
	}
	init, ok := f.Body.(*amqp10.SASLInit)
	if !ok {
		return false, "expected sasl-init, got " + amqp10.Name(f.Body)
	}
	if reason, code := c.authenticate(init); reason != "" {
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused", "reason", reason)
		_ = c.writeSASL(&amqp10.SASLOutcome{Code: code, AdditionalData: []byte(reason)})
		return false, "login refused: " + reason
	}
	if err := c.writeSASL(&amqp10.SASLOutcome{Code: amqp10.SASLOK}); err != nil {
		return false, err.Error()
	}
	if h, err = amqp10.ReadProtocolHeader(br); err != nil || h != amqp10.HeaderAMQP {
		_ = c.writeRaw(amqp10.HeaderAMQP[:])
		return false, fmt.Sprintf("expected the AMQP 0.1.0.0 header after SASL: %v %v", h, err)
	}
	if err := c.writeRaw(amqp10.HeaderAMQP[:]); err != nil {
		return false, err.Error()
	}
	f, err = amqp10.ReadFrame(br, amqpMaxFrame)
	if err != nil {
		return false, "reading open: " + err.Error()
	}
	open, ok := f.Body.(*amqp10.Open)
	if !ok {
		return false, "expected open, got " + amqp10.Name(f.Body)
	}
	c.maxFrame = min(open.EffectiveMaxFrameSize(), 1<<24)
	if c.maxFrame < amqp10.MinMaxFrameSize {
		c.maxFrame = amqp10.MinMaxFrameSize
	}
	c.idle = open.IdleTime()
	// Answer with our open in any case, then refuse with close: the
	// specification's way to turn a connection down.
	lo, hi := c.s.cfg.MinIdleTimeout, c.s.cfg.MaxIdleTimeout
	reply := &amqp10.Open{ContainerID: "iotsim", MaxFrameSize: amqpMaxFrame, ChannelMax: 0,
		IdleTimeout: uint32(min(max(c.idle, lo), hi) / time.Millisecond)}
	c.mu.Lock()
	c.opened = true
	c.mu.Unlock()
	if err := c.writeFrame(reply, nil, writeTimeout); err != nil {
		return false, err.Error()
	}
	if c.idle < lo || c.idle > hi {
		msg := fmt.Sprintf("9601: heartbeat value not acceptable: the open's idle-time-out is %d ms; "+
			"the platform accepts %d to %d ms", open.IdleTimeout, lo.Milliseconds(), hi.Milliseconds())
		c.closeWith(&amqp10.Error{Condition: amqp10.ErrInvalidField, Description: msg})
		return false, msg
	}
	c.log.Info("amqp open", "idleTimeout", c.idle, "maxFrameSize", c.maxFrame, "containerId", open.ContainerID)
	return true, ""
}

// authenticate checks a sasl-init with PLAIN credentials as the STOMP
// login does; it logs the connection in and returns "", or the reason and
// the SASL outcome code.
func (c *amqpConn) authenticate(init *amqp10.SASLInit) (string, uint8) {
	reason := c.verify(init)
	if strings.HasPrefix(reason, "throttled") {
		return reason, amqp10.SASLSysTemp
	}
	return reason, amqp10.SASLAuth
}

func (c *amqpConn) verify(init *amqp10.SASLInit) string {
	if !strings.EqualFold(string(init.Mechanism), "PLAIN") {
		return fmt.Sprintf("SASL mechanism %q is not supported: the platform takes PLAIN", init.Mechanism)
	}
	// PLAIN: [authzid] NUL authcid NUL passwd (RFC 4616).
	parts := bytes.Split(init.InitialResponse, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "SASL PLAIN response needs a username (the platform username) and a password (the signature)"
	}
	username, password := string(parts[1]), string(parts[2])
	if reason := c.s.admit(username); reason != "" {
		return reason
	}
	u, err := iotauth.Verify(username, password, c.s.secretFor, c.s.now(), c.s.cfg.MaxSkew)
	if err != nil {
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username))
		if errors.Is(err, iotauth.ErrBadSignature) {
			return "signature mismatch: the password is not the HMAC of the username's authId and timestamp with the secret of that authId"
		}
		return err.Error()
	}
	if !c.s.tokenIssued(u) {
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username), "reason", "security token mismatch")
		return tokenMismatch
	}
	c.clientID = u.ClientID
	g, err := c.s.login(c, u)
	if err != nil && !errors.Is(err, ErrClosed) {
		return err.Error()
	}
	if err != nil {
		return "server is shutting down"
	}
	c.g = g
	c.log = c.log.With("clientId", u.ClientID, "group", u.ConsumerGroupID)
	c.log.Info("login ok", "authMode", u.AuthMode, "signMethod", u.SignMethod)
	return ""
}

// attachDeadline closes the connection when no receiver link is attached
// within AttachTimeout of open, as the platform does.
func (c *amqpConn) attachDeadline() {
	t := time.NewTimer(c.s.cfg.AttachTimeout)
	defer t.Stop()
	select {
	case <-c.attached:
	case <-c.done:
	case <-t.C:
		c.log.Info("no receiver link attached in time: closing", "attachTimeout", c.s.cfg.AttachTimeout)
		c.closeWith(&amqp10.Error{Condition: amqp10.ErrConnectionForced,
			Description: fmt.Sprintf("no receiver link attached within %s of open: the platform closes such connections", c.s.cfg.AttachTimeout)})
	}
}

// readLoop handles client frames until the connection ends; it returns why.
// A client silent for its own idle-time-out is dropped.
func (c *amqpConn) readLoop(br *bufio.Reader) string {
	for {
		if c.idle > 0 {
			c.nc.SetReadDeadline(time.Now().Add(c.idle))
		}
		f, err := amqp10.ReadFrame(br, amqpMaxFrame)
		if err != nil {
			if c.isClosed() {
				return "closed by the server"
			}
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				c.closeWith(&amqp10.Error{Condition: amqp10.ErrResourceLimit,
					Description: fmt.Sprintf("no frame from the client for its idle-time-out of %s", c.idle)})
				return "client went silent"
			case errors.Is(err, io.EOF):
				return "closed by the client without close"
			case errors.Is(err, amqp10.ErrMalformed):
				c.closeWith(&amqp10.Error{Condition: amqp10.ErrFramingError, Description: err.Error()})
				return "malformed frame: " + err.Error()
			}
			return "read error: " + err.Error()
		}
		if f.Type != amqp10.FrameAMQP {
			c.closeWith(&amqp10.Error{Condition: amqp10.ErrFramingError, Description: "SASL frame after open"})
			return "SASL frame after open"
		}
		if f.Body == nil {
			continue // empty frame: the client is alive
		}
		if e := c.handle(f); e != nil {
			if e.Condition == "" { // clean close by the client
				c.mu.Lock()
				c.opened = false // close already answered
				c.mu.Unlock()
				c.closeWith(nil)
				return "closed by the client"
			}
			c.closeWith(e)
			return e.Error()
		}
	}
}

// handle processes one performative. A non-nil error ends the connection
// (an empty Condition: the client closed it cleanly).
func (c *amqpConn) handle(f amqp10.Frame) *amqp10.Error {
	switch p := f.Body.(type) {
	case *amqp10.Begin:
		return c.begin(f.Channel, p)
	case *amqp10.Attach:
		return c.attach(p)
	case *amqp10.Flow:
		return c.flow(p)
	case *amqp10.Disposition:
		return c.disposition(p)
	case *amqp10.Detach:
		return c.detach(p)
	case *amqp10.End:
		l := c.unlink(nil)
		c.mu.Lock()
		had := c.session
		c.session = false
		c.mu.Unlock()
		if !had {
			return &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: "end without a session"}
		}
		if l != nil {
			c.giveBack()
		}
		_ = c.writeFrame(&amqp10.End{}, nil, writeTimeout)
		return nil
	case *amqp10.Close:
		c.unlink(nil)
		_ = c.writeFrame(&amqp10.Close{}, nil, writeTimeout)
		return &amqp10.Error{}
	case *amqp10.Transfer:
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed,
			Description: "transfer from the client: the platform has no sender links, it only pushes to receivers"}
	case *amqp10.Open:
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: "second open"}
	}
	return &amqp10.Error{Condition: amqp10.ErrNotImplemented, Description: "unexpected " + amqp10.Name(f.Body)}
}

func (c *amqpConn) begin(ch uint16, b *amqp10.Begin) *amqp10.Error {
	c.mu.Lock()
	if c.session {
		c.mu.Unlock()
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed,
			Description: "a second session: the simulator takes one session per connection (channel-max 0)"}
	}
	if b.RemoteChannel != nil {
		c.mu.Unlock()
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: "begin with remote-channel: the server never begins sessions"}
	}
	c.session = true
	c.remoteChannel = ch
	c.remoteInNext = 0
	c.remoteInWin = b.IncomingWindow
	c.nextOutID = 0
	c.mu.Unlock()
	rc := ch
	err := c.writeFrame(&amqp10.Begin{RemoteChannel: &rc, NextOutgoingID: 0, IncomingWindow: amqpWindow,
		OutgoingWindow: amqpWindow, HandleMax: amqp10.U32(7)}, nil, writeTimeout)
	if err != nil {
		return &amqp10.Error{Condition: amqp10.ErrInternal, Description: err.Error()}
	}
	return nil
}

// attach accepts the first receiver link; a sender link, or a second
// receiver, is answered and detached at once with the reason, as the
// specification says a refused attach is done.
func (c *amqpConn) attach(a *amqp10.Attach) *amqp10.Error {
	if e := c.lockSession("attach"); e != nil {
		return e
	}
	var refuse string
	switch {
	case a.Role == amqp10.RoleSender:
		refuse = "sender links are not supported: the platform only pushes messages to a receiver"
	case c.link != nil:
		refuse = "one receiver link per connection: this connection already has one"
	}
	reply := &amqp10.Attach{Name: a.Name, Handle: a.Handle, Role: amqp10.RoleSender,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: 0, Source: a.Source, Target: a.Target,
		InitialDeliveryCount: amqp10.U32(0)}
	if refuse != "" {
		c.mu.Unlock()
		reply.Role = !a.Role
		reply.Source, reply.Target, reply.InitialDeliveryCount = nil, nil, nil
		if reply.Role == amqp10.RoleSender {
			reply.InitialDeliveryCount = amqp10.U32(0)
		}
		c.log.Info("link refused", "link", a.Name, "reason", refuse)
		_ = c.writeFrame(reply, nil, writeTimeout)
		_ = c.writeFrame(&amqp10.Detach{Handle: a.Handle, Closed: true,
			Error: &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: refuse}}, nil, writeTimeout)
		return nil
	}
	if reply.Source == nil {
		reply.Source = &amqp10.Terminus{}
	}
	l := &amqpLink{handle: a.Handle, name: a.Name, settled: a.SndSettleMode == amqp10.SndSettled}
	c.link = l
	first := false
	select {
	case <-c.attached:
	default:
		close(c.attached)
		first = true
	}
	c.mu.Unlock()
	if err := c.writeFrame(reply, nil, writeTimeout); err != nil {
		return &amqp10.Error{Condition: amqp10.ErrInternal, Description: err.Error()}
	}
	src := ""
	if a.Source != nil {
		src = a.Source.Address
	}
	c.log.Info("receiver attached", "link", a.Name, "source", src, "presettled", l.settled, "first", first)
	c.wake()
	return nil
}

// lockSession locks c.mu when the session has begun; before that it
// returns the error that ends the connection, naming the performative.
func (c *amqpConn) lockSession(performative string) *amqp10.Error {
	c.mu.Lock()
	if !c.session {
		c.mu.Unlock()
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: performative + " before begin"}
	}
	return nil
}

func (c *amqpConn) flow(fl *amqp10.Flow) *amqp10.Error {
	if e := c.lockSession("flow"); e != nil {
		return e
	}
	next := uint32(0)
	if fl.NextIncomingID != nil {
		next = *fl.NextIncomingID
	}
	c.remoteInNext, c.remoteInWin = next, fl.IncomingWindow
	echo := fl.Echo
	var l *amqpLink
	if fl.Handle != nil {
		if c.link == nil || c.link.handle != *fl.Handle {
			c.mu.Unlock()
			return &amqp10.Error{Condition: amqp10.ErrUnattachedHandle,
				Description: fmt.Sprintf("flow for handle %d, which is not attached", *fl.Handle)}
		}
		l = c.link
		if fl.LinkCredit != nil {
			// link-credit(snd) = delivery-count(rcv) + link-credit(rcv) - delivery-count(snd)
			rcvCount := l.deliveryCount
			if fl.DeliveryCount != nil {
				rcvCount = *fl.DeliveryCount
			}
			l.credit = rcvCount + *fl.LinkCredit - l.deliveryCount
			if int32(l.credit) < 0 {
				l.credit = 0
			}
		}
		l.drain = fl.Drain
	}
	c.mu.Unlock()
	c.wake()
	if echo {
		c.sendFlow(true)
	}
	return nil
}

// sendFlow tells the client the session's state and, when withLink, the
// link's (delivery-count, credit, and the group's waiting messages as
// available).
func (c *amqpConn) sendFlow(withLink bool) {
	c.mu.Lock()
	fl := &amqp10.Flow{NextIncomingID: amqp10.U32(0), IncomingWindow: amqpWindow,
		NextOutgoingID: c.nextOutID, OutgoingWindow: amqpWindow}
	if l := c.link; withLink && l != nil {
		fl.Handle = amqp10.U32(l.handle)
		fl.DeliveryCount = amqp10.U32(l.deliveryCount)
		fl.LinkCredit = amqp10.U32(l.credit)
		fl.Drain = l.drain
		if c.g != nil {
			n, _ := c.g.queued()
			fl.Available = amqp10.U32(uint32(n))
		}
	}
	c.mu.Unlock()
	_ = c.writeFrame(fl, nil, writeTimeout)
}

// disposition settles deliveries as the platform reads the outcomes:
// accepted is the ACK; released (log 9651) and modified give the message
// back at once; rejected (9652, a NACK) puts it in the group's backlog,
// retried in the next round: the platform never drops a message a client
// refused. A delivery that is not pending
// (settled, or taken back after the ACK timeout) is ignored: a late ACK is
// harmless. Unsettled dispositions (rcv-settle-mode second) are settled.
func (c *amqpConn) disposition(d *amqp10.Disposition) *amqp10.Error {
	if d.Role != amqp10.RoleReceiver {
		return &amqp10.Error{Condition: amqp10.ErrNotAllowed, Description: "disposition with role sender from a receiver"}
	}
	last := d.First
	if d.Last != nil {
		last = *d.Last
	}
	if last-d.First > 1<<20 {
		return &amqp10.Error{Condition: amqp10.ErrInvalidField, Description: "disposition range is too large"}
	}
	var done []*amqpDelivery
	c.mu.Lock()
	for id := d.First; ; id++ {
		if dl, ok := c.pending.m[id]; ok {
			done = append(done, dl)
			delete(c.pending.m, id)
		}
		if id == last {
			break
		}
	}
	c.mu.Unlock()
	es := inOrder(done)
	switch d.State.(type) {
	case *amqp10.Accepted:
		c.s.acked.Add(int64(len(es)))
	case *amqp10.Released:
		c.s.nacked.Add(int64(len(es)))
		c.s.released.Add(int64(len(es)))
		c.g.requeue(es...)
	case *amqp10.Modified:
		c.s.nacked.Add(int64(len(es)))
		c.s.modified.Add(int64(len(es)))
		c.g.requeue(es...)
	case *amqp10.Rejected:
		c.s.nacked.Add(int64(len(es)))
		c.s.rejected.Add(int64(len(es)))
		c.g.toBacklog(es...)
	case nil, *amqp10.Received:
		// Not an outcome: the deliveries stay pending.
		c.mu.Lock()
		if c.pending.m != nil {
			for _, dl := range done {
				c.pending.m[dl.id] = dl
			}
		}
		c.mu.Unlock()
		return nil
	}
	if len(done) < int(last-d.First)+1 {
		c.log.Debug("ignored a disposition for deliveries that are not pending", "first", d.First, "last", last)
	}
	if !d.Settled && d.State != nil {
		_ = c.writeFrame(&amqp10.Disposition{Role: amqp10.RoleSender, First: d.First, Last: d.Last,
			Settled: true, State: d.State}, nil, writeTimeout)
	}
	c.wake()
	return nil
}

func (c *amqpConn) detach(d *amqp10.Detach) *amqp10.Error {
	l := c.unlink(func(l *amqpLink) bool { return l.handle == d.Handle })
	if l == nil {
		// A link this side already refused and detached: nothing to do.
		return nil
	}
	n := c.giveBack()
	c.log.Info("receiver detached by the client", "link", l.name, "requeued", n)
	_ = c.writeFrame(&amqp10.Detach{Handle: d.Handle, Closed: true}, nil, writeTimeout)
	return nil
}

// unlink ends the deliveries on the receiver link (any link when match is
// nil) and returns it; nil when there is none or match refuses it. A
// transfer being written is finished first and none starts after, so that
// an answer written afterwards (detach, end, close) follows every transfer
// the server sent and counted as delivered (pre-settled: as settled). A
// client ending its link, session or connection reads until that answer.
func (c *amqpConn) unlink(match func(*amqpLink) bool) *amqpLink {
	c.sendMu.Lock() // deliver holds it through its write
	defer c.sendMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.link
	if l == nil || (match != nil && !match(l)) {
		return nil
	}
	c.link = nil
	return l
}

// giveBack returns every pending delivery to the group.
func (c *amqpConn) giveBack() int {
	es := c.pending.takeAll()
	c.g.requeue(es...)
	return len(es)
}

// sendable reports whether a transfer may go now: a link with credit and
// room in the client's session window.
func (c *amqpConn) sendable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.link
	return c.pending.m != nil && l != nil && l.credit > 0 && int32(c.remoteInNext+c.remoteInWin-c.nextOutID) > 0
}

func (c *amqpConn) sendLoop() {
	var beat <-chan time.Time
	if c.idle > 0 {
		// Half the client's idle-time-out, as the specification advises.
		t := time.NewTicker(c.idle / 2)
		defer t.Stop()
		beat = t.C
	}
	sent := false
	for {
		var ready <-chan struct{}
		if c.sendable() {
			e, wait := c.g.take()
			if e != nil {
				if err := c.deliver(e); err != nil {
					c.closeWith(nil)
					return
				}
				sent = true
				continue
			}
			ready = wait
		}
		c.drained()
		select {
		case <-ready:
		case <-c.kick:
		case <-beat:
			if !sent {
				if err := c.writeFrame(nil, nil, writeTimeout); err != nil {
					c.closeWith(nil)
					return
				}
			}
			sent = false
		case <-c.done:
			return
		}
	}
}

// drained ends a drain: with nothing to send, the remaining credit is used
// up by advancing the delivery-count, and the client is told.
func (c *amqpConn) drained() {
	c.mu.Lock()
	l := c.link
	if l == nil || !l.drain || l.credit == 0 {
		c.mu.Unlock()
		return
	}
	l.deliveryCount += l.credit
	l.credit = 0
	c.mu.Unlock()
	c.sendFlow(true)
}

// deliver writes e as one delivery on the receiver link, split into
// transfers of at most the client's max-frame-size. On failure e goes back
// to the group.
func (c *amqpConn) deliver(e *entry) error {
	payload, err := amqp10.AppendMessage(nil, &amqp10.Message{
		ApplicationProperties: amqp10.Map{
			{Key: "topic", Value: e.msg.Topic},
			{Key: "messageId", Value: e.msg.MessageID},
			{Key: "generateTime", Value: e.msg.GenerateTime},
		},
		Data: [][]byte{e.msg.Body},
	})
	if err != nil {
		c.g.requeue(e)
		return nil
	}
	c.sendMu.Lock() // unlink waits for the write
	defer c.sendMu.Unlock()
	c.mu.Lock()
	l := c.link
	if c.pending.m == nil || l == nil || l.credit == 0 {
		c.mu.Unlock()
		c.g.requeue(e)
		return nil
	}
	id := c.nextDelID
	c.nextDelID++
	l.credit--
	l.deliveryCount++
	c.nextOutID++
	redelivery := e.deliveries > 0
	e.deliveries++
	settled := l.settled
	if !settled {
		c.seq++
		c.pending.m[id] = &amqpDelivery{sent: sent{e: e, seq: c.seq, deadline: time.Now().Add(c.s.cfg.AckTimeout)}, id: id}
	}
	handle := l.handle
	c.mu.Unlock()

	write := func() error {
		return c.writeFrames(writeTimeout, func(b []byte) ([]byte, error) { return c.appendDelivery(b, handle, id, settled, payload) })
	}
	return c.s.send(c.g, e, redelivery, settled, func() bool { return c.pending.untrack(id) }, write)
}

// appendDelivery appends delivery id on the link with handle to b: the
// message payload in transfers of at most the client's max-frame-size.
func (c *amqpConn) appendDelivery(b []byte, handle, id uint32, settled bool, payload []byte) ([]byte, error) {
	var tag [4]byte
	binary.BigEndian.PutUint32(tag[:], id)
	rest := payload
	first := true
	for {
		t := &amqp10.Transfer{Handle: handle, Settled: settled}
		if first {
			t.DeliveryID, t.DeliveryTag, t.MessageFormat = amqp10.U32(id), tag[:], amqp10.U32(0)
		}
		hdr, err := amqp10.AppendFrame(nil, amqp10.FrameAMQP, 0, t, nil)
		if err != nil {
			return b, err
		}
		room := int(c.maxFrame) - len(hdr) - 2 // the more flag may add 2 bytes
		n := min(len(rest), room)
		t.More = n < len(rest)
		if b, err = amqp10.AppendFrame(b, amqp10.FrameAMQP, 0, t, rest[:n]); err != nil {
			return b, err
		}
		rest, first = rest[n:], false
		if len(rest) == 0 {
			return b, nil
		}
	}
}

// drain gives every unsettled delivery back and stops further deliveries.
func (c *amqpConn) drain() int {
	if c.g == nil {
		return 0
	}
	n := c.giveBack()
	c.mu.Lock()
	c.pending.m = nil
	c.mu.Unlock()
	return n
}
