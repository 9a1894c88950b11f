// Package iotsim simulates the Alibaba Cloud IoT Platform's server-side
// subscription endpoint over STOMP (port 61614 in real life) for tests, the
// demo and benchmarks, and generates platform-shaped device traffic.
//
// The server speaks STOMP 1.1 and 1.2 over TLS. It checks the platform
// username and password with iotauth.Verify (aksign and ststoken, all sign
// methods) and refuses bad ones with an ERROR frame; it delivers each message
// of a consumer group to one connection of that group, as MESSAGE frames with
// the platform's topic, messageId and generateTime headers, base64-encoding
// bodies for encode=base64 logins; it supports ack auto, client and
// client-individual, and redelivers (same messageId) messages that are
// NACKed, unacked when their connection goes, or unacked for AckTimeout. It
// can close every connection from the server side, as the platform does
// (error 9602).
//
// Each MESSAGE frame carries destination (the message's topic), message-id
// and messageId (the platform's id, kept on redelivery), subscription, topic,
// generateTime (epoch ms), content-length, and for client acks on STOMP 1.2
// an ack header unique to that delivery.
//
// The simulator knows nothing of the bridge.
package iotsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
)

// Defaults of Config.
const (
	DefaultAddr         = "127.0.0.1:0"
	DefaultAckTimeout   = 30 * time.Second // the platform's ACK timeout
	DefaultHeartBeat    = 10 * time.Second
	DefaultQueueSize    = 100000
	DefaultMaxUnacked   = 32
	DefaultLoginTimeout = 15 * time.Second // the platform's connect-and-auth deadline
)

// Config configures a Server. The zero value of each field selects its
// default; HeartBeat is the exception (see below).
type Config struct {
	// Addr is the listen address, default "127.0.0.1:0".
	Addr string
	// TLS is the server TLS config. Nil: a throwaway CA and a certificate for
	// 127.0.0.1, ::1 and localhost are generated (see Server.CACertPEM).
	TLS *tls.Config
	// Secrets maps an authId (AccessKey ID) to the AccessKey secret accepted
	// for it. Logins with any other authId fail with "unknown authId".
	Secrets map[string]string
	// MaxSkew, when > 0, refuses logins whose timestamp is further than this
	// from the server clock. 0 does not check freshness.
	MaxSkew time.Duration
	// AckTimeout is how long a client or client-individual delivery may stay
	// unacknowledged before it is redelivered; default 30 s, as the platform.
	AckTimeout time.Duration
	// HeartBeat is the server heart-beat interval offered in both directions
	// (the server sends newlines at the negotiated interval and expects the
	// client's at its own). Use NoHeartBeat for none; 0 means 10 s.
	HeartBeat time.Duration
	// QueueSize bounds the messages of one consumer group that wait for a
	// subscriber (redeliveries excepted); default 100000. Publish blocks
	// while the group is full.
	QueueSize int
	// MaxUnacked bounds the client-acknowledged deliveries one connection may
	// hold; at the bound it gets no more until it acks. Default 32: a
	// go-stomp v3 client that ACKs from the goroutine reading its
	// subscription stalls for 10 s and fails the ACK with ErrMsgSendTimeout
	// once some 50 to 60 deliveries are unacked: its frame loop blocks on
	// the full subscription channel (16) while the ACKs wait in its full
	// write channel (20) behind it. Measured: 48 never stalls, 64 does.
	MaxUnacked int
	// LoginTimeout is how long a new connection has to complete the TLS
	// handshake and CONNECT; default 15 s, as the platform.
	LoginTimeout time.Duration
	// Logger receives connection-level events (never per message, never a
	// password or security token). Nil discards.
	Logger *slog.Logger
}

// NoHeartBeat as Config.HeartBeat disables server heart-beats.
const NoHeartBeat time.Duration = -1

// Message is one device message as the platform would push it.
type Message struct {
	Topic string
	// MessageID is the platform's messageId; Publish assigns a unique decimal
	// one when empty. Redeliveries keep it.
	MessageID string
	// GenerateTime is epoch milliseconds; Publish sets the current time when 0.
	GenerateTime int64
	// Body is the raw payload, any bytes.
	Body []byte
}

// Stats are counters since Start. Delivered counts every MESSAGE frame
// written, redeliveries included; Redelivered counts those that carried a
// message delivered before; Acked counts deliveries settled (on send for ack
// auto, on ACK for client acks); Nacked counts NACKed deliveries; Expired
// counts deliveries redelivered after AckTimeout.
type Stats struct {
	Published    int64
	LoginsOK     int64
	LoginsFailed int64
	// Connections is the number of logged-in connections now.
	Connections int
	// MaxConnsPerClientID is the most logged-in connections that one clientId
	// ever held at the same time.
	MaxConnsPerClientID int
	Delivered           int64
	Acked               int64
	Nacked              int64
	Expired             int64
	Redelivered         int64
	// Queued is the messages waiting for a subscriber, Unacked the
	// deliveries awaiting an ACK; Pending is their sum.
	Queued  int
	Unacked int
	Pending int
}

// ErrClosed is returned by PublishContext once the server is closed.
var ErrClosed = errors.New("iotsim: server closed")

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	caPEM  []byte
	nextID atomic.Int64
	done   chan struct{}
	wg     sync.WaitGroup

	published, loginsOK, loginsFailed  atomic.Int64
	delivered, redelivered             atomic.Int64
	acked, nacked, expired, connSerial atomic.Int64

	mu           sync.Mutex
	closed       bool
	groups       map[string]*group
	conns        map[*conn]struct{} // every accepted connection
	perClient    map[string]int     // logged-in connections per clientId
	maxPerClient int
	loggedIn     int
}

// Start listens on cfg.Addr and serves until Close. It returns an error when
// the address cannot be bound or no certificate can be made.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	switch {
	case cfg.HeartBeat == 0:
		cfg.HeartBeat = DefaultHeartBeat
	case cfg.HeartBeat < 0:
		cfg.HeartBeat = 0
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxUnacked <= 0 {
		cfg.MaxUnacked = DefaultMaxUnacked
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = DefaultLoginTimeout
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		done:      make(chan struct{}),
		groups:    make(map[string]*group),
		conns:     make(map[*conn]struct{}),
		perClient: make(map[string]int),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tlsCfg := cfg.TLS
	if tlsCfg == nil {
		b, err := certgen.New()
		if err != nil {
			return nil, fmt.Errorf("iotsim: start: %w", err)
		}
		tlsCfg, s.caPEM = b.ServerTLSConfig(), b.CAPEM
	}
	s.nextID.Store(time.Now().UnixMilli() * 1000)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("iotsim: listen on %s: %w (choose another address)", cfg.Addr, err)
	}
	s.ln = tls.NewListener(ln, tlsCfg)
	s.log.Info("iot simulator listening", "addr", s.Addr())
	s.wg.Add(2)
	go s.acceptLoop()
	go s.expireLoop()
	return s, nil
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// CACertPEM returns the PEM of the generated CA that signed the server
// certificate, or nil when Config.TLS was given.
func (s *Server) CACertPEM() []byte { return s.caPEM }

// Publish queues m for consumer group groupID, to be delivered to one
// subscriber of that group; messages wait while the group has none. It blocks
// while the group already holds Config.QueueSize waiting messages, and drops
// m only once the server is closed.
func (s *Server) Publish(groupID string, m Message) {
	_ = s.PublishContext(context.Background(), groupID, m)
}

// PublishContext is Publish that gives up when ctx is done while the group is
// full, returning an error wrapping ctx.Err(), and returns ErrClosed once the
// server is closed.
func (s *Server) PublishContext(ctx context.Context, groupID string, m Message) error {
	if m.MessageID == "" {
		m.MessageID = strconv.FormatInt(s.nextID.Add(1), 10)
	}
	if m.GenerateTime == 0 {
		m.GenerateTime = time.Now().UnixMilli()
	}
	g, err := s.group(groupID)
	if err != nil {
		return err
	}
	if err := g.put(ctx, &entry{msg: m}); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("iotsim: publish to group %s (full, %d waiting): %w", groupID, s.cfg.QueueSize, err)
	}
	s.published.Add(1)
	return nil
}

func (s *Server) group(id string) (*group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	g := s.groups[id]
	if g == nil {
		g = newGroup(id, s.cfg.QueueSize)
		s.groups[id] = g
	}
	return g, nil
}

// CloseConnections closes every client connection from the server side
// without a frame, as the platform does when it rebalances (error 9602).
// Unacked deliveries go back to their groups. New connections are accepted
// as before. It does not wait for the connections' goroutines.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
	if len(cs) > 0 {
		s.log.Info("closed every client connection from the server side", "connections", len(cs))
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Published:           s.published.Load(),
		LoginsOK:            s.loginsOK.Load(),
		LoginsFailed:        s.loginsFailed.Load(),
		Connections:         s.loggedIn,
		MaxConnsPerClientID: s.maxPerClient,
		Delivered:           s.delivered.Load(),
		Acked:               s.acked.Load(),
		Nacked:              s.nacked.Load(),
		Expired:             s.expired.Load(),
		Redelivered:         s.redelivered.Load(),
	}
	groups := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, g := range groups {
		st.Queued += g.queued()
	}
	for _, c := range conns {
		st.Unacked += c.unacked()
	}
	st.Pending = st.Queued + st.Unacked
	return st
}

// Close stops listening, closes every connection and waits for the server's
// goroutines. Publishers blocked in Publish return. Messages still queued are
// dropped. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for _, g := range s.groups {
		g.close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.CloseConnections()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("iotsim: close listener: %w", err)
	}
	return nil
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Error("accept failed; the simulator stops accepting", "err", err)
			return
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

// expireLoop redelivers client-acked deliveries left unacked for AckTimeout.
func (s *Server) expireLoop() {
	defer s.wg.Done()
	tick := min(max(s.cfg.AckTimeout/4, 5*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.mu.Lock()
			conns := make([]*conn, 0, len(s.conns))
			for c := range s.conns {
				conns = append(conns, c)
			}
			s.mu.Unlock()
			for _, c := range conns {
				c.expire(now)
			}
		}
	}
}

// login records a successful login of c (c.clientID is set); it returns
// the group to pull from.
func (s *Server) login(c *conn, groupID string) (*group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.loginsOK.Add(1)
	s.loggedIn++
	c.counted = true
	s.perClient[c.clientID]++
	// MaxConnsPerClientID counts the connections of this client id that are
	// still open: one the server closed (CloseConnections) counts no more,
	// even while its goroutine is still cleaning up.
	open := 0
	for o := range s.conns {
		if o.counted && o.clientID == c.clientID && !o.isClosed() {
			open++
		}
	}
	s.maxPerClient = max(s.maxPerClient, open)
	g := s.groups[groupID]
	if g == nil {
		g = newGroup(groupID, s.cfg.QueueSize)
		s.groups[groupID] = g
	}
	return g, nil
}

func (s *Server) forget(c *conn, clientID string, wasLoggedIn bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if wasLoggedIn {
		s.loggedIn--
		if s.perClient[clientID]--; s.perClient[clientID] <= 0 {
			delete(s.perClient, clientID)
		}
	}
}
