// Package stompfake is the misbehaving STOMP 1.2 server of the tests: a
// minimal platform over TLS on loopback that a test drives frame by frame.
// It verifies the platform's logins (iotauth), takes one subscription per
// connection, sends MESSAGE frames with the platform's headers on demand,
// records ACK and NACK, answers receipts, and misbehaves when told to:
// ERROR frames (SetSubscribeError, Conn.Write of ErrorFrame), bytes no
// broker would send (Conn.WriteRaw: malformed frames, lying
// content-lengths, invalid base64), silence (Conn.GoSilent) and closing
// (Conn.Close). The simulator (iotsim) is the well-behaved platform; this
// server is for what the simulator never does.
//
// It is a test fixture: it listens on 127.0.0.1 only and stops at the end
// of the test that started it.
package stompfake

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Config configures a Server.
type Config struct {
	// Secrets are the AccessKey secrets by AccessKey ID that logins are
	// verified against (iotauth.Verify, a minute of clock skew). A login
	// that fails is answered with an ERROR frame and the connection closed.
	Secrets map[string]string
	// HeartBeat is the server's heart-beat offer (the first value of
	// CONNECTED's heart-beat header); 0 offers none. When the client asks
	// for heart-beats too, the server sends one every max(HeartBeat, what
	// the client asked) until the connection ends or goes silent.
	HeartBeat time.Duration
}

// waitLimit bounds the Wait methods: a peer that never comes fails the
// test (generous: a bridge under test may be starting on a loaded machine).
const waitLimit = time.Minute

// writeLimit bounds one write to a client that does not read.
const writeLimit = 30 * time.Second

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	// CAFile is the PEM file of the CA that signed the server's
	// certificate (for 127.0.0.1 and localhost).
	CAFile string

	cfg  Config
	ln   net.Listener
	wg   sync.WaitGroup
	done chan struct{} // closed when the test ends

	mu           sync.Mutex
	conns        map[*Conn]bool
	accepted     int // TCP connections accepted
	logins       []iotauth.Username
	perClient    map[string]int // live subscribed connections per client id
	maxPerClient int
	newest       *Conn // the connection that subscribed last
	subscribeErr string
	acks, nacks  []string // message ids
	nextID       int

	subscribed chan *Conn  // each successful SUBSCRIBE
	settled    chan string // each ACK or NACK: "ack:<id>" / "nack:<id>"
}

// Start starts a Server on 127.0.0.1 with a certificate of a throwaway CA
// (CAFile); it stops when t ends.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	b, ca := testpeers.CA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		CAFile: ca, cfg: cfg, ln: ln, done: make(chan struct{}),
		conns:      map[*Conn]bool{},
		perClient:  map[string]int{},
		subscribed: make(chan *Conn, 1024),
		settled:    make(chan string, 1024),
	}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// close stops accepting, closes every connection and waits for the
// server's goroutines.
func (s *Server) close() {
	close(s.done)
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &Conn{s: s, nc: nc, w: frame.NewWriter(nc), done: make(chan struct{})}
		s.mu.Lock()
		select {
		case <-s.done: // close has closed every connection it knew
			s.mu.Unlock()
			nc.Close()
			return
		default:
		}
		s.conns[c] = true
		s.accepted++
		s.mu.Unlock()
		s.wg.Add(1)
		go c.serve()
	}
}

// SetSubscribeError makes every SUBSCRIBE from now on be answered with an
// ERROR frame carrying msg, and the connection closed; "" takes
// subscriptions again.
func (s *Server) SetSubscribeError(msg string) {
	s.mu.Lock()
	s.subscribeErr = msg
	s.mu.Unlock()
}

// Record is what a Server has seen so far.
type Record struct {
	// Accepted counts the TCP connections accepted.
	Accepted int
	// Logins are the verified logins, in order.
	Logins []iotauth.Username
	// MaxPerClient is the most subscribed connections one client id had at
	// once.
	MaxPerClient int
	// Acks and Nacks are the message ids acknowledged and refused.
	Acks, Nacks []string
}

// Record returns what the server has seen so far (a copy).
func (s *Server) Record() Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Record{Accepted: s.accepted, Logins: slices.Clone(s.logins), MaxPerClient: s.maxPerClient,
		Acks: slices.Clone(s.acks), Nacks: slices.Clone(s.nacks)}
}

// Settled reports whether message id was acknowledged or refused.
func (s *Server) Settled(id string) bool {
	r := s.Record()
	return slices.Contains(r.Acks, id) || slices.Contains(r.Nacks, id)
}

// Subscriptions yields each connection that subscribed, once (WaitSubscribed
// takes from it too). It holds 1024; when it is full, the connection waits.
func (s *Server) Subscriptions() <-chan *Conn { return s.subscribed }

// Settles yields each ACK ("ack:<id>") and NACK ("nack:<id>") as it comes
// (WaitSettle takes from it too). It holds 1024; when it is full, the
// connection waits.
func (s *Server) Settles() <-chan string { return s.settled }

// Newest is the connection that subscribed last; nil before any.
func (s *Server) Newest() *Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest
}

// WaitSubscribed returns the next connection that subscribed; it fails t
// when none does within a minute.
func (s *Server) WaitSubscribed(t testing.TB) *Conn {
	t.Helper()
	return wait(t, s.subscribed, "no connection subscribed")
}

// WaitSettle returns the next "ack:<id>" or "nack:<id>"; it fails t when
// none comes within a minute.
func (s *Server) WaitSettle(t testing.TB) string {
	t.Helper()
	return wait(t, s.settled, "no ACK or NACK came")
}

// wait takes the next value of ch; it fails t, saying what did not happen,
// when none comes within waitLimit.
func wait[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("fake STOMP server: %s within %s", what, waitLimit)
		var zero T
		return zero
	}
}

// Conn is one client connection of the Server.
type Conn struct {
	s    *Server
	nc   net.Conn
	done chan struct{} // closed when the connection has ended

	// Set once, at the login, before the connection can be seen.
	user  iotauth.Username
	hbAsk time.Duration // the heart-beat interval the client asked of the server

	subID, ackMode string // guarded by s.mu

	mu     sync.Mutex // guards w and silent
	w      *frame.Writer
	silent bool
}

// User is the verified login of the connection.
func (c *Conn) User() iotauth.Username { return c.user }

// AckMode is the ack header of the connection's SUBSCRIBE.
func (c *Conn) AckMode() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.ackMode
}

// SubID is the id of the connection's subscription ("" when none).
func (c *Conn) SubID() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.subID
}

// Done is closed when the connection has ended, by either side.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Close closes the connection from the server's side, without a frame.
func (c *Conn) Close() error { return c.nc.Close() }

// GoSilent stops the connection's heart-beats (and everything else the
// server would send by itself) without closing it.
func (c *Conn) GoSilent() {
	c.mu.Lock()
	c.silent = true
	c.mu.Unlock()
}

// Write sends f; nil sends a heart-beat.
func (c *Conn) Write(f *frame.Frame) error {
	return c.writing(func() error { return c.w.Write(f) })
}

// WriteRaw sends b as it is: anything a broker never would.
func (c *Conn) WriteRaw(b []byte) error {
	return c.writing(func() error {
		_, err := c.nc.Write(b)
		return err
	})
}

// writing runs write alone on the connection, within writeLimit.
func (c *Conn) writing(write func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(writeLimit))
	return write()
}

// Send sends one MESSAGE on the connection's subscription with the
// platform's headers (topic, messageId, generateTime 1700000000123), an ack
// header when the subscription is client-individual, the header pairs of
// extra, and body, base64-encoded when the login asked for encode=base64.
// It returns the message id (also the ack id).
func (c *Conn) Send(topic string, body []byte, extra ...string) (string, error) {
	if c.user.EncodeBase64 {
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	return c.SendAsIs(topic, body, extra...)
}

// SendAsIs is Send with body as it is, whatever the login asked: a body the
// platform failed to encode.
func (c *Conn) SendAsIs(topic string, body []byte, extra ...string) (string, error) {
	c.s.mu.Lock()
	c.s.nextID++
	id := "m" + strconv.Itoa(c.s.nextID)
	sub, mode := c.subID, c.ackMode
	c.s.mu.Unlock()
	f := frame.New(frame.MESSAGE,
		frame.Subscription, sub,
		frame.MessageId, "stomp-"+id,
		frame.Destination, "/topic/#",
		"topic", topic,
		"messageId", id,
		"generateTime", "1700000000123",
		frame.ContentLength, strconv.Itoa(len(body)))
	if mode == "client-individual" {
		f.Header.Add(frame.Ack, id)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Header.Add(extra[i], extra[i+1])
	}
	f.Body = body
	return id, c.Write(f)
}

// ErrorFrame is an ERROR frame as a broker sends it: msg in the message
// header and "details: msg" in the body.
func ErrorFrame(msg string) *frame.Frame {
	f := frame.New(frame.ERROR, frame.Message, msg, frame.ContentType, "text/plain")
	f.Body = []byte("details: " + msg)
	return f
}

func (c *Conn) serve() {
	s := c.s
	defer s.wg.Done()
	defer func() {
		c.nc.Close()
		close(c.done)
		s.mu.Lock()
		delete(s.conns, c)
		if c.subID != "" {
			s.perClient[c.user.ClientID]--
		}
		s.mu.Unlock()
	}()
	r := frame.NewReader(c.nc)
	f, err := r.Read()
	if err != nil || f == nil || (f.Command != frame.CONNECT && f.Command != frame.STOMP) {
		return
	}
	u, err := iotauth.Verify(f.Header.Get(frame.Login), f.Header.Get(frame.Passcode), func(ak string) (string, bool) {
		v, ok := s.cfg.Secrets[ak]
		return v, ok
	}, time.Now(), time.Minute)
	if err != nil {
		c.Write(frame.New(frame.ERROR, frame.Message, "authentication failed: "+err.Error(), frame.ContentType, "text/plain"))
		return
	}
	c.user = u
	s.mu.Lock()
	s.logins = append(s.logins, u)
	s.mu.Unlock()
	if hb := f.Header.Get(frame.HeartBeat); hb != "" {
		_, c.hbAsk, _ = frame.ParseHeartBeat(hb)
	}
	offer := int64(s.cfg.HeartBeat / time.Millisecond)
	if err := c.Write(frame.New(frame.CONNECTED, frame.Version, "1.2", frame.HeartBeat, strconv.FormatInt(offer, 10)+",0", frame.Session, "s1")); err != nil {
		return
	}
	if s.cfg.HeartBeat > 0 && c.hbAsk > 0 {
		s.wg.Add(1)
		go c.beat(max(s.cfg.HeartBeat, c.hbAsk))
	}
	for {
		f, err := r.Read()
		if err != nil {
			return
		}
		if f == nil {
			continue // a heart-beat
		}
		switch f.Command {
		case frame.SUBSCRIBE:
			s.mu.Lock()
			serr := s.subscribeErr
			if serr == "" {
				c.subID, c.ackMode = f.Header.Get(frame.Id), f.Header.Get(frame.Ack)
				s.perClient[c.user.ClientID]++
				s.maxPerClient = max(s.maxPerClient, s.perClient[c.user.ClientID])
				s.newest = c
			}
			s.mu.Unlock()
			if serr != "" {
				c.Write(frame.New(frame.ERROR, frame.Message, serr, frame.ContentType, "text/plain"))
				return
			}
			if !yield(s, s.subscribed, c) {
				return
			}
		case frame.ACK, frame.NACK:
			id := f.Header.Get(frame.Id)
			s.mu.Lock()
			if f.Command == frame.ACK {
				s.acks = append(s.acks, id)
			} else {
				s.nacks = append(s.nacks, id)
			}
			s.mu.Unlock()
			if !yield(s, s.settled, map[string]string{frame.ACK: "ack:", frame.NACK: "nack:"}[f.Command]+id) {
				return
			}
		case frame.UNSUBSCRIBE, frame.DISCONNECT:
			if rc := f.Header.Get(frame.Receipt); rc != "" {
				c.Write(frame.New(frame.RECEIPT, frame.ReceiptId, rc))
			}
			if f.Command == frame.DISCONNECT {
				return
			}
			s.mu.Lock()
			s.perClient[c.user.ClientID]--
			c.subID = ""
			s.mu.Unlock()
		}
	}
}

// yield hands v to the test through ch; false when the test has ended.
func yield[T any](s *Server, ch chan T, v T) bool {
	select {
	case ch <- v:
		return true
	case <-s.done:
		return false
	}
}

func (c *Conn) beat(every time.Duration) {
	defer c.s.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.mu.Lock()
			silent := c.silent
			c.mu.Unlock()
			if !silent {
				c.Write(nil)
			}
		}
	}
}
