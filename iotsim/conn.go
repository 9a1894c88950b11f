package iotsim

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// writeTimeout bounds one frame write; a client that stops reading for this
// long is dropped.
const writeTimeout = 10 * time.Second

// Ack modes of SUBSCRIBE.
const (
	ackAuto             = "auto"
	ackClient           = "client"
	ackClientIndividual = "client-individual"
)

type subscription struct {
	id, dest, ack string
	active        bool
}

// delivery is a client-acked MESSAGE awaiting ACK or NACK.
type delivery struct {
	sent
	sub *subscription
}

// conn is one client connection. serve runs the read side; a second
// goroutine (sendLoop) pulls messages of the login's group and writes them.
type conn struct {
	// kick: subscriptions or unacked count changed; pending: by ack id.
	clientConn[string, *delivery]

	closeOnce sync.Once
	wmu       sync.Mutex
	w         *frame.Writer
	sendMu    sync.Mutex // held by deliver from its checks through its write

	// Set during login, read-only afterwards.
	version        string
	encodeBase64   bool
	sendHB, recvHB time.Duration // server→client, client→server

	// Under mu.
	subs    []*subscription
	rr      int  // round-robin position in subs
	stopped bool // DISCONNECT: no more deliveries
	seq     int64
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{w: frame.NewWriter(nc)}
	c.init(s, nc)
	return c
}

// close closes the network connection; serve then cleans up. Idempotent.
// The end follows every MESSAGE the server counted as delivered: a MESSAGE
// being written is finished first and none starts after (a write blocked
// on a client that reads no more is given a second).
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.stopDeliveries()
		c.nc.Close()
	})
}

func (c *conn) write(f *frame.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.w.Write(f)
}

// fail sends an ERROR frame with message, lets the client read it, and
// closes. The ERROR follows every MESSAGE sent (stopDeliveries).
func (c *conn) fail(message string, extra ...string) {
	c.stopDeliveries()
	f := frame.New(frame.ERROR, append([]string{frame.Message, message, frame.ContentType, "text/plain"}, extra...)...)
	f.Body = []byte(message)
	f.Header.Set(frame.ContentLength, strconv.Itoa(len(f.Body)))
	if err := c.write(f); err == nil {
		if tc, ok := c.nc.(*tls.Conn); ok {
			tc.CloseWrite()
		}
		// Drain briefly so that unread client bytes do not turn the close
		// into a reset that loses the ERROR frame.
		c.nc.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c.nc)
	}
	c.close()
}

func (c *conn) serve() {
	loggedIn := false
	defer func() {
		c.close()
		c.s.forget(c, c.clientID, loggedIn)
	}()
	r := frame.NewReader(c.nc)
	c.nc.SetDeadline(time.Now().Add(c.s.cfg.LoginTimeout))
	f, err := readFrame(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			c.log.Debug("connection ended before CONNECT")
		} else {
			c.log.Info("connection failed before CONNECT (TLS handshake, timeout or bad frame)", "err", err)
		}
		return
	}
	if !c.login(f) {
		return
	}
	loggedIn = true
	c.nc.SetDeadline(time.Time{})

	var wg sync.WaitGroup
	wg.Go(c.sendLoop)
	reason := c.readLoop(r)
	c.close()
	wg.Wait()
	n := c.drain()
	c.log.Info("connection closed", "reason", reason, "requeued", n)
}

// readFrame reads the next frame, skipping heart-beat newlines.
func readFrame(r *frame.Reader) (*frame.Frame, error) {
	for {
		f, err := r.Read()
		if err != nil || f != nil {
			return f, err
		}
	}
}

// login handles CONNECT/STOMP: version, heart-beats, credentials. It reports
// whether the client is logged in; otherwise the connection is closed.
func (c *conn) login(f *frame.Frame) bool {
	if f.Command != frame.CONNECT && f.Command != frame.STOMP {
		c.fail(fmt.Sprintf("expected CONNECT, got %s", f.Command))
		return false
	}
	c.version = negotiate(f.Header.Get(frame.AcceptVersion))
	if c.version == "" {
		c.fail("unsupported STOMP version: this server speaks 1.1 and 1.2", frame.Version, "1.1,1.2")
		return false
	}
	cx, cy := time.Duration(0), time.Duration(0)
	if hb, ok := f.Header.Contains(frame.HeartBeat); ok {
		var err error
		if cx, cy, err = frame.ParseHeartBeat(hb); err != nil {
			c.fail(fmt.Sprintf("invalid heart-beat header %q: want two millisecond counts, e.g. 0,30000", hb))
			return false
		}
	}
	hb := c.s.cfg.HeartBeat
	if hb > 0 && cy > 0 {
		c.sendHB = max(hb, cy)
	}
	if hb > 0 && cx > 0 {
		c.recvHB = max(hb, cx)
	}

	username, password := f.Header.Get(frame.Login), f.Header.Get(frame.Passcode)
	if username == "" || password == "" {
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused: no login or passcode")
		c.fail("authentication failed: login (the platform username) and passcode (the signature) are required")
		return false
	}
	if reason := c.s.admit(username); reason != "" {
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username), "reason", reason)
		c.fail(reason)
		return false
	}
	u, err := iotauth.Verify(username, password, c.s.secretFor, c.s.now(), c.s.cfg.MaxSkew)
	if err != nil {
		reason := err.Error()
		if errors.Is(err, iotauth.ErrBadSignature) {
			reason = "signature mismatch: the passcode is not the HMAC of the username's authId and timestamp with the secret of that authId"
		}
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username), "reason", reason)
		c.fail("authentication failed: " + reason)
		return false
	}
	if !c.s.tokenIssued(u) {
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username), "reason", "security token mismatch")
		c.fail("authentication failed: " + tokenMismatch)
		return false
	}
	c.clientID = u.ClientID
	g, err := c.s.login(c, u)
	if err != nil && !errors.Is(err, ErrClosed) {
		c.s.loginsFailed.Add(1)
		c.log.Warn("login refused", "username", iotauth.RedactUsername(username), "reason", err.Error())
		c.fail("authentication failed: " + err.Error())
		return false
	}
	if err != nil {
		c.fail("server is shutting down")
		return false
	}
	c.g, c.encodeBase64 = g, u.EncodeBase64
	c.log = c.log.With("clientId", u.ClientID, "group", u.ConsumerGroupID)
	err = c.write(frame.New(frame.CONNECTED,
		frame.Version, c.version,
		frame.HeartBeat, fmt.Sprintf("%d,%d", c.sendHB.Milliseconds(), c.recvHB.Milliseconds()),
		frame.Server, "iotsim/1",
		frame.Session, strconv.FormatInt(c.id, 10)))
	if err != nil {
		c.log.Info("connection lost while logging in", "err", err)
		return false
	}
	c.log.Info("login ok", "version", c.version, "authMode", u.AuthMode, "signMethod", u.SignMethod,
		"base64", u.EncodeBase64, "heartbeatOut", c.sendHB, "heartbeatIn", c.recvHB)
	return true
}

// secretFor is the secret a login's authId must sign with: Authorize's
// when set, else Secrets'. STOMP and AMQP logins both use it.
func (s *Server) secretFor(authID string) (string, bool) {
	if auth := s.cfg.Authorize; auth != nil {
		secret, _, ok := auth(authID)
		return secret, ok
	}
	secret, ok := s.cfg.Secrets[authID]
	return secret, ok
}

// now is the server clock (Config.Now).
func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// tokenMismatch is why a login whose securityToken tokenIssued refuses is
// refused.
const tokenMismatch = "the securityToken is not the one issued with this authId"

// tokenIssued reports whether u carries the security token Authorize
// issued with its authId (always true without Authorize).
func (s *Server) tokenIssued(u iotauth.Username) bool {
	auth := s.cfg.Authorize
	if auth == nil {
		return true
	}
	_, token, ok := auth(u.AuthID)
	return ok && token == u.SecurityToken
}

// negotiate picks the highest of 1.2 and 1.1 that the client accepts; a
// client without accept-version speaks 1.0, which is refused.
func negotiate(accept string) string {
	best := ""
	for v := range strings.SplitSeq(accept, ",") {
		switch strings.TrimSpace(v) {
		case "1.2":
			best = "1.2"
		case "1.1":
			if best == "" {
				best = "1.1"
			}
		}
	}
	return best
}

// readLoop handles client frames until the connection ends; it returns why.
func (c *conn) readLoop(r *frame.Reader) string {
	for {
		if c.recvHB > 0 {
			// Twice the interval: the tolerance the STOMP spec suggests.
			c.nc.SetReadDeadline(time.Now().Add(2 * c.recvHB))
		}
		f, err := r.Read()
		if err != nil {
			select {
			case <-c.done:
				return "closed by the server"
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.fail(fmt.Sprintf("no heart-beat from the client for %s", 2*c.recvHB))
				return "client heart-beats stopped"
			}
			if errors.Is(err, io.EOF) {
				return "closed by the client"
			}
			if errors.Is(err, frame.ErrInvalidCommand) || errors.Is(err, frame.ErrInvalidFrameFormat) {
				c.fail("malformed frame: " + err.Error())
				return "malformed frame"
			}
			return "read error: " + err.Error()
		}
		if f == nil {
			continue
		}
		if done, reason := c.handle(f); done {
			return reason
		}
	}
}

// handle processes one client frame; done means the connection must end.
func (c *conn) handle(f *frame.Frame) (done bool, reason string) {
	var problem string
	switch f.Command {
	case frame.SUBSCRIBE:
		problem = c.subscribe(f)
	case frame.UNSUBSCRIBE:
		problem = c.unsubscribe(f)
	case frame.ACK, frame.NACK:
		problem = c.settle(f, f.Command == frame.ACK)
	case frame.DISCONNECT:
		c.stopDeliveries()
		c.receipt(f)
		return true, "DISCONNECT"
	case frame.SEND:
		problem = "SEND is not supported: the platform only pushes to subscribers"
	case frame.BEGIN, frame.COMMIT, frame.ABORT:
		problem = f.Command + " is not supported: the platform has no transactions"
	default:
		problem = "unexpected " + f.Command + " frame after login"
	}
	if problem != "" {
		c.fail(problem)
		return true, problem
	}
	c.receipt(f)
	return false, ""
}

func (c *conn) receipt(f *frame.Frame) {
	if id, ok := f.Header.Contains(frame.Receipt); ok {
		c.write(frame.New(frame.RECEIPT, frame.ReceiptId, id))
	}
}

func (c *conn) subscribe(f *frame.Frame) string {
	dest, id := f.Header.Get(frame.Destination), f.Header.Get(frame.Id)
	ack := f.Header.Get(frame.Ack)
	if ack == "" {
		ack = ackAuto
	}
	switch {
	case dest == "":
		return "SUBSCRIBE needs a destination header, e.g. /topic/#"
	case id == "":
		return "SUBSCRIBE needs an id header"
	case ack != ackAuto && ack != ackClient && ack != ackClientIndividual:
		return fmt.Sprintf("SUBSCRIBE ack %q is not supported: use auto, client or client-individual", ack)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		if s.id == id {
			return fmt.Sprintf("SUBSCRIBE id %q is already in use on this connection", id)
		}
	}
	c.subs = append(c.subs, &subscription{id: id, dest: dest, ack: ack, active: true})
	c.log.Info("subscribed", "destination", dest, "id", id, "ack", ack)
	c.wake()
	return ""
}

func (c *conn) unsubscribe(f *frame.Frame) string {
	id := f.Header.Get(frame.Id)
	c.mu.Lock()
	var back []*entry
	found := false
	for i, s := range c.subs {
		if s.id != id {
			continue
		}
		found = true
		s.active = false
		c.subs = append(c.subs[:i], c.subs[i+1:]...)
		var gone []*delivery
		for k, d := range c.pending.m {
			if d.sub == s {
				gone = append(gone, d)
				delete(c.pending.m, k)
			}
		}
		back = inOrder(gone)
		break
	}
	c.mu.Unlock()
	if !found {
		return fmt.Sprintf("UNSUBSCRIBE: no subscription with id %q", id)
	}
	c.g.requeue(back...)
	return ""
}

// settle handles ACK and NACK. An id that is not pending (already settled,
// or redelivered after AckTimeout) is ignored, as a late ACK is harmless.
func (c *conn) settle(f *frame.Frame, ack bool) string {
	c.mu.Lock()
	var d *delivery
	var key string
	if c.version == "1.2" {
		key = f.Header.Get(frame.Id)
		if key == "" {
			c.mu.Unlock()
			return f.Command + " needs an id header (the MESSAGE's ack header)"
		}
		d = c.pending.m[key]
	} else {
		mid, sid := f.Header.Get(frame.MessageId), f.Header.Get(frame.Subscription)
		if mid == "" || sid == "" {
			c.mu.Unlock()
			return f.Command + " needs message-id and subscription headers"
		}
		for k, p := range c.pending.m {
			if p.e.msg.MessageID == mid && p.sub.id == sid {
				d, key = p, k
				break
			}
		}
	}
	var done []*delivery
	if d != nil {
		if d.sub.ack == ackClient {
			// Cumulative: everything this subscription got up to this one.
			for k, p := range c.pending.m {
				if p.sub == d.sub && p.seq <= d.seq {
					done = append(done, p)
					delete(c.pending.m, k)
				}
			}
		} else {
			done = append(done, d)
			delete(c.pending.m, key)
		}
	}
	settled := inOrder(done)
	c.mu.Unlock()
	if d == nil {
		c.log.Debug("ignored ACK/NACK for a delivery that is not pending", "command", f.Command)
		return ""
	}
	if ack {
		c.s.acked.Add(int64(len(settled)))
	} else {
		c.s.nacked.Add(int64(len(settled)))
		c.g.requeue(settled...)
	}
	c.wake()
	return ""
}

// nextSub returns the subscription to deliver to next (round robin), or nil
// when there is none, deliveries stopped or the connection holds MaxUnacked
// deliveries.
func (c *conn) nextSub() *subscription {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || len(c.subs) == 0 || len(c.pending.m) >= c.s.cfg.MaxUnacked {
		return nil
	}
	c.rr = (c.rr + 1) % len(c.subs)
	return c.subs[c.rr]
}

func (c *conn) sendLoop() {
	var beat <-chan time.Time
	if c.sendHB > 0 {
		t := time.NewTicker(c.sendHB)
		defer t.Stop()
		beat = t.C
	}
	for {
		var ready <-chan struct{}
		if sub := c.nextSub(); sub != nil {
			e, wait := c.g.take()
			if e != nil {
				if err := c.deliver(sub, e); err != nil {
					c.close()
					return
				}
				continue
			}
			ready = wait
		}
		select {
		case <-ready:
		case <-c.kick:
		case <-beat:
			if err := c.write(nil); err != nil {
				c.close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// stopDeliveries ends the deliveries to this connection: a MESSAGE being
// written is finished first and no later one starts, so that a RECEIPT
// written afterwards follows every MESSAGE the server sent (and, with ack
// auto, counted as delivered). A client ending with DISCONNECT reads until
// that RECEIPT.
func (c *conn) stopDeliveries() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.mu.Lock()
	c.stopped = true
	for _, s := range c.subs {
		s.active = false
	}
	c.mu.Unlock()
}

// deliver writes e to sub. On failure e goes back to the group.
func (c *conn) deliver(sub *subscription, e *entry) error {
	c.sendMu.Lock() // stopDeliveries waits for the write
	defer c.sendMu.Unlock()
	c.mu.Lock()
	if c.pending.m == nil || !sub.active {
		c.mu.Unlock()
		c.g.requeue(e)
		return nil
	}
	redelivery := e.deliveries > 0
	e.deliveries++
	ackID := ""
	if sub.ack != ackAuto {
		c.seq++
		ackID = strconv.FormatInt(c.id, 10) + "-" + strconv.FormatInt(c.seq, 10)
		c.pending.m[ackID] = &delivery{sent: sent{e: e, seq: c.seq, deadline: time.Now().Add(c.s.cfg.AckTimeout)}, sub: sub}
	}
	c.mu.Unlock()

	body := e.msg.Body
	if c.encodeBase64 {
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	f := frame.New(frame.MESSAGE,
		frame.Destination, e.msg.Topic,
		frame.MessageId, e.msg.MessageID,
		frame.Subscription, sub.id,
		"topic", e.msg.Topic,
		"messageId", e.msg.MessageID,
		"generateTime", strconv.FormatInt(e.msg.GenerateTime, 10),
		frame.ContentLength, strconv.Itoa(len(body)))
	if ackID != "" && c.version == "1.2" {
		f.Header.Add(frame.Ack, ackID)
	}
	f.Body = body
	return c.s.send(c.g, e, redelivery, ackID == "", func() bool { return c.pending.untrack(ackID) },
		func() error { return c.write(f) })
}

// drain gives every unacked delivery back to the group and stops further
// deliveries; it returns how many went back.
func (c *conn) drain() int {
	c.mu.Lock()
	back := takeAllLocked(c.pending.m)
	c.pending.m = nil
	for _, s := range c.subs {
		s.active = false
	}
	c.mu.Unlock()
	if c.g != nil {
		c.g.requeue(back...)
	}
	return len(back)
}
