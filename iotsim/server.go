// Package iotsim simulates the Alibaba Cloud IoT Platform's server-side
// subscription endpoint over STOMP (port 61614 in real life) and AMQP 1.0
// (port 5671, Config.AMQPAddr) for tests, the demo and benchmarks, and
// generates platform-shaped device traffic.
//
// The AMQP side (see amqp.go) follows the platform's rules: TLS and SASL
// PLAIN with the same verification as STOMP; an open whose idle-time-out
// is outside 30 to 300 s is refused (9601); a receiver link must be
// attached within AttachTimeout (15 s) of open; one receiver per
// connection, no sender links; deliveries only within the link credit;
// each message a data section with the application properties topic
// (string), messageId (string) and generateTime (long, epoch ms).
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
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
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

// The platform's delivery rules: the defaults of the iot-simulator command
// (Config's zero values turn them off, so that tests stay short).
const (
	DefaultBacklogInterval = time.Minute // backlog retried about once a minute
	DefaultBacklogRate     = 200         // backlog pushes per second per consumer group
	DefaultConnectLimit    = 100         // connection attempts per minute per consumer group
	DefaultMaxGroupClients = 64          // clients online per consumer group (error 9600 beyond)
)

// Config configures a Server. The zero value of each field selects its
// default; HeartBeat is the exception (see below).
type Config struct {
	// Addr is the STOMP listen address, default "127.0.0.1:0".
	Addr string
	// AMQPAddr, when not empty, is the address of an AMQP 1.0 listener
	// beside STOMP (TLS, SASL PLAIN, the same credentials, groups and
	// messages); "127.0.0.1:0" picks a free port. Empty: no AMQP.
	AMQPAddr string
	// AttachTimeout is how long an open AMQP connection may go without a
	// receiver link before it is closed; default 15 s, as the platform.
	AttachTimeout time.Duration
	// MinIdleTimeout and MaxIdleTimeout bound the idle-time-out an AMQP
	// client's open may carry (refused outside, error 9601); defaults 30 s
	// and 300 s, as the platform. The server beats at half the client's
	// value and drops a client silent for all of it.
	MinIdleTimeout, MaxIdleTimeout time.Duration
	// TLS is the server TLS config. Nil: a throwaway CA and a certificate for
	// 127.0.0.1, ::1 and localhost are generated (see Server.CACertPEM).
	TLS *tls.Config
	// Secrets maps an authId (AccessKey ID) to the AccessKey secret accepted
	// for it. Logins with any other authId fail with "unknown authId".
	Secrets map[string]string
	// Authorize, when set, replaces Secrets: it returns the secret of an
	// authId and the security token that must come with it ("" for
	// aksign), or ok false to refuse the authId (unknown, or expired). A
	// test uses it to check each login against what a fake STS issued.
	Authorize func(authID string) (secret, token string, ok bool)
	// MaxSkew, when > 0, refuses logins whose timestamp is further than this
	// from the server clock. 0 does not check freshness.
	MaxSkew time.Duration
	// Now is the server clock MaxSkew compares with; default time.Now. A
	// clock ahead of or behind the machine's is a client with a skewed clock.
	Now func() time.Time
	// KnownGroups, when set, are the consumer groups that exist: a login
	// naming another is refused, as the platform refuses a group that does
	// not exist. Empty: any group, created at its first use (tests).
	KnownGroups []string
	// CheckInstance makes a login carry the instance's ID, InstanceID, in
	// its iotInstanceId, as the platform documents it: the ID shown on the
	// console's instance overview, or empty for a public instance that has
	// none (opened before 2021-07-30); a login naming another ID is refused.
	// False: any iotInstanceId is accepted (tests).
	CheckInstance bool
	InstanceID    string
	// AckTimeout is how long a client or client-individual delivery (an
	// unsettled AMQP delivery) may stay unacknowledged before it counts as
	// an ACK timeout (9650) and goes to the group's backlog; default 30 s,
	// as the platform. A later ACK of it is ignored.
	AckTimeout time.Duration
	// BacklogInterval is how often the backlog (timed-out and rejected
	// messages) is retried: a round starts this long after the previous one
	// ended. BacklogRate bounds its pushes per second for the whole group.
	// The platform: about 1 minute and about 200/s (the command's
	// defaults). 0 here: every backlog message due at once, and no bound.
	BacklogInterval time.Duration
	BacklogRate     float64
	// ConnectLimit, when > 0, refuses connection attempts of a consumer
	// group beyond this many in ConnectWindow (default 1 minute), across
	// every client, as the platform does beyond 100 a minute (the
	// command's default): STOMP with an ERROR frame, AMQP with a SASL
	// outcome sys-temp, both saying "throttled". Every login that names the
	// group counts, refused ones included.
	ConnectLimit  int
	ConnectWindow time.Duration
	// MaxGroupClients, when > 0, refuses the login of a client (a clientId)
	// to a consumer group that already has this many other clients logged
	// in, as the platform does beyond 64 (the command's default; error
	// 9600, "too many connections in one group"): STOMP with an ERROR
	// frame, AMQP with a SASL outcome auth, both saying so. A client
	// already online may open more connections.
	MaxGroupClients int
	// NoSubscribe are AccessKey IDs (authIds) whose RAM user (for an STS
	// token: the role) lacks the iot:sub action the platform requires of a
	// subscription: their logins, signed right, are refused
	// (ErrNoSubscribePermission; STOMP with an ERROR frame, AMQP with a SASL
	// outcome auth). The platform's own text for it is not documented.
	NoSubscribe []string
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
	// handshake and CONNECT (AMQP: SASL and open); default 15 s, as the
	// platform.
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
	// Released, Rejected and Modified count the AMQP outcomes other than
	// accepted (each also counts in Nacked).
	Released int64
	Rejected int64
	Modified int64
	// Queued is the messages waiting for a subscriber, Unacked the
	// deliveries awaiting an ACK; Pending is their sum.
	Queued  int
	Unacked int
	Pending int
	// Backlog is the part of Queued in the backlog (timed out or rejected,
	// waiting for its retry round).
	Backlog int
	// LoginsThrottled counts connection attempts refused by ConnectLimit
	// (also in LoginsFailed).
	LoginsThrottled int64
}

// ErrClosed is returned by PublishContext once the server is closed.
var ErrClosed = errors.New("iotsim: server closed")

// Server is a running simulator. Its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ln     net.Listener
	amqpLn net.Listener // nil without Config.AMQPAddr
	caPEM  []byte
	nextID atomic.Int64
	done   chan struct{}
	wg     sync.WaitGroup

	published, loginsOK, loginsFailed  atomic.Int64
	delivered, redelivered             atomic.Int64
	acked, nacked, expired, connSerial atomic.Int64
	released, rejected, modified       atomic.Int64
	throttled                          atomic.Int64

	mu           sync.Mutex
	closed       bool
	groups       map[string]*group
	conns        map[client]struct{}    // every accepted connection, STOMP and AMQP
	perClient    map[string]int         // logged-in connections per clientId
	attempts     map[string][]time.Time // recent connection attempts per group (ConnectLimit)
	maxPerClient int
	loggedIn     int
}

// Start listens on cfg.Addr and serves until Close. It returns an error when
// the address cannot be bound or no certificate can be made.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	cfg.AckTimeout = positiveOr(cfg.AckTimeout, DefaultAckTimeout)
	switch {
	case cfg.HeartBeat == 0:
		cfg.HeartBeat = DefaultHeartBeat
	case cfg.HeartBeat < 0:
		cfg.HeartBeat = 0
	}
	cfg.QueueSize = positiveOr(cfg.QueueSize, DefaultQueueSize)
	cfg.MaxUnacked = positiveOr(cfg.MaxUnacked, DefaultMaxUnacked)
	cfg.LoginTimeout = positiveOr(cfg.LoginTimeout, DefaultLoginTimeout)
	cfg.AttachTimeout = positiveOr(cfg.AttachTimeout, DefaultAttachTimeout)
	cfg.MinIdleTimeout = positiveOr(cfg.MinIdleTimeout, DefaultMinIdleTimeout)
	cfg.MaxIdleTimeout = positiveOr(cfg.MaxIdleTimeout, DefaultMaxIdleTimeout)
	cfg.ConnectWindow = positiveOr(cfg.ConnectWindow, time.Minute)
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		done:      make(chan struct{}),
		groups:    make(map[string]*group),
		conns:     make(map[client]struct{}),
		perClient: make(map[string]int),
		attempts:  make(map[string][]time.Time),
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
	if cfg.AMQPAddr != "" {
		aln, err := net.Listen("tcp", cfg.AMQPAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("iotsim: listen for AMQP on %s: %w (choose another address)", cfg.AMQPAddr, err)
		}
		s.amqpLn = tls.NewListener(aln, tlsCfg)
		s.log.Info("iot simulator listening for AMQP 1.0", "addr", s.AMQPAddr())
		s.wg.Add(1)
		go s.acceptLoop(s.amqpLn, func(nc net.Conn) servedClient { return newAMQPConn(s, nc) })
	}
	s.log.Info("iot simulator listening", "addr", s.Addr())
	s.wg.Add(2)
	go s.acceptLoop(s.ln, func(nc net.Conn) servedClient { return newConn(s, nc) })
	go s.expireLoop()
	return s, nil
}

// positiveOr returns v, or def when v is zero or negative: the rule of
// every Config value with a default.
func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Addr returns the host:port the STOMP listener listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AMQPAddr returns the host:port of the AMQP listener, or "" without one.
func (s *Server) AMQPAddr() string {
	if s.amqpLn == nil {
		return ""
	}
	return s.amqpLn.Addr().String()
}

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
		g = newGroup(id, s.cfg.QueueSize, s.cfg.BacklogInterval, s.cfg.BacklogRate)
		s.groups[id] = g
	}
	return g, nil
}

// CloseConnections closes every client connection from the server side, as
// the platform does when it rebalances (error 9602): STOMP connections
// without a frame, AMQP connections with a close frame whose error is
// amqp:connection:forced with "9602: ..." as description.
// Unacked deliveries go back to their groups. New connections are accepted
// as before. It does not wait for the connections' goroutines.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	cs := slices.Collect(maps.Keys(s.conns))
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
		Released:            s.released.Load(),
		Rejected:            s.rejected.Load(),
		Modified:            s.modified.Load(),
		LoginsThrottled:     s.throttled.Load(),
	}
	groups := slices.Collect(maps.Values(s.groups))
	conns := slices.Collect(maps.Keys(s.conns))
	s.mu.Unlock()
	for _, g := range groups {
		all, backlog := g.queued()
		st.Queued += all
		st.Backlog += backlog
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
	if s.amqpLn != nil {
		if aerr := s.amqpLn.Close(); err == nil {
			err = aerr
		}
	}
	s.CloseConnections()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("iotsim: close listener: %w", err)
	}
	return nil
}

// servedClient is a client with its serving goroutine.
type servedClient interface {
	client
	serve()
}

func (s *Server) acceptLoop(ln net.Listener, newClient func(net.Conn) servedClient) {
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
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
		c := newClient(nc)
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
			conns := slices.Collect(maps.Keys(s.conns))
			s.mu.Unlock()
			for _, c := range conns {
				c.expire(now)
			}
		}
	}
}

// client is one accepted connection of either protocol.
type client interface {
	// close ends the connection from the server side (for AMQP with a close
	// frame first); the connection's goroutines then clean up. Idempotent.
	close()
	isClosed() bool
	// unacked is the number of deliveries awaiting settlement.
	unacked() int
	// expire gives back deliveries unsettled past their ACK deadline.
	expire(now time.Time)
	// ident is the login state the server keeps per connection.
	ident() *identity
}

// identity is a connection's login: set during login, read-only afterwards
// (counted is written under the server's lock).
type identity struct {
	clientID string
	groupID  string // the consumer group of the login (written under the server's lock)
	counted  bool
}

func (i *identity) ident() *identity { return i }

// clientConn is what a client connection of either protocol has: its
// server, socket, serial id and logger, its signals, the identity and group
// of its login, and its unsettled deliveries by the protocol's id (K). mu
// guards pending and the protocol's own state.
type clientConn[K comparable, D outstanding] struct {
	identity
	s   *Server
	nc  net.Conn
	id  int64
	log *slog.Logger
	signals
	g       *group // set at login, read-only afterwards
	mu      sync.Mutex
	pending unsettled[K, D]
}

// init sets up c for nc, just accepted; attrs are added to its log
// (after its serial id).
func (c *clientConn[K, D]) init(s *Server, nc net.Conn, attrs ...any) {
	c.s, c.nc, c.id = s, nc, s.connSerial.Add(1)
	c.log = s.log.With(append(append([]any{"conn", c.id}, attrs...), "remote", nc.RemoteAddr().String())...)
	c.signals = newSignals()
	c.pending = newUnsettled[K, D](&c.mu)
}

// expire gives back deliveries unsettled past their deadline.
func (c *clientConn[K, D]) expire(now time.Time) {
	if back := c.pending.takeLate(now); len(back) > 0 { // c.g is set at login, before any delivery
		c.s.ackTimedOut(c.g, c.log, back)
		c.wake()
	}
}

func (c *clientConn[K, D]) unacked() int { return c.pending.len() }

// ErrUnknownGroup is wrapped by the login error for a consumer group that is
// not in Config.KnownGroups.
var ErrUnknownGroup = errors.New("consumer group does not exist")

// ErrTooManyClients is wrapped by the login error of a client that would be
// one more than Config.MaxGroupClients in its consumer group.
var ErrTooManyClients = errors.New("9600: too many connections in one consumer group")

// groupClients counts the other clients (clientIds but clientID) logged in
// to group on open connections. Called with s.mu.
func (s *Server) groupClients(group, clientID string) int {
	others := map[string]bool{}
	for o := range s.conns {
		if oi := o.ident(); oi.counted && oi.groupID == group && oi.clientID != clientID && !o.isClosed() {
			others[oi.clientID] = true
		}
	}
	return len(others)
}

// ErrWrongInstance is wrapped by the login error for an iotInstanceId that is
// not Config.InstanceID (with Config.CheckInstance).
var ErrWrongInstance = errors.New("wrong instance")

// ErrNoSubscribePermission is wrapped by the login error of an authId in
// Config.NoSubscribe.
var ErrNoSubscribePermission = errors.New("not authorized: the RAM user of this authId may not subscribe (it lacks the action iot:sub)")

// login records a successful login of c (its clientID is set) as u and
// returns the group to pull from; it refuses a login to another instance
// (ErrWrongInstance) or to an unknown group (ErrUnknownGroup), and returns
// ErrClosed once the server is closed.
func (s *Server) login(c client, u iotauth.Username) (*group, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if slices.Contains(s.cfg.NoSubscribe, u.AuthID) {
		return nil, fmt.Errorf("%w; authId %q", ErrNoSubscribePermission, u.AuthID)
	}
	if s.cfg.CheckInstance && u.IotInstanceID != s.cfg.InstanceID {
		this := fmt.Sprintf("this instance is %q", s.cfg.InstanceID)
		if s.cfg.InstanceID == "" {
			this = "this instance has no ID: leave it empty"
		}
		return nil, fmt.Errorf("%w: iotInstanceId %q is not this instance's (%s); check iotInstanceId", ErrWrongInstance, u.IotInstanceID, this)
	}
	groupID := u.ConsumerGroupID
	if len(s.cfg.KnownGroups) > 0 && !slices.Contains(s.cfg.KnownGroups, groupID) {
		return nil, fmt.Errorf("%w: %q (this server has %s); check consumerGroupId", ErrUnknownGroup, groupID, strings.Join(s.cfg.KnownGroups, ", "))
	}
	id := c.ident()
	if n := s.groupClients(groupID, id.clientID); s.cfg.MaxGroupClients > 0 && n >= s.cfg.MaxGroupClients {
		return nil, fmt.Errorf("%w: consumer group %s has %d clients online, the platform's limit (error 9600); "+
			"a client must leave it first", ErrTooManyClients, groupID, n)
	}
	s.loginsOK.Add(1)
	s.loggedIn++
	id.counted, id.groupID = true, groupID
	s.perClient[id.clientID]++
	// MaxConnsPerClientID counts the connections of this client id that are
	// still open: one the server closed (CloseConnections) counts no more,
	// even while its goroutine is still cleaning up.
	open := 0
	for o := range s.conns {
		if oi := o.ident(); oi.counted && oi.clientID == id.clientID && !o.isClosed() {
			open++
		}
	}
	s.maxPerClient = max(s.maxPerClient, open)
	g := s.groups[groupID]
	if g == nil {
		g = newGroup(groupID, s.cfg.QueueSize, s.cfg.BacklogInterval, s.cfg.BacklogRate)
		s.groups[groupID] = g
	}
	return g, nil
}

func (s *Server) forget(c client, clientID string, wasLoggedIn bool) {
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

// admit counts a connection attempt against its consumer group's budget
// (Config.ConnectLimit in ConnectWindow, across every client) and returns
// why it is refused, or "". A username that names no group is not counted:
// its login fails anyway.
func (s *Server) admit(username string) string {
	if s.cfg.ConnectLimit <= 0 {
		return ""
	}
	u, err := iotauth.ParseUsername(username)
	if err != nil || u.ConsumerGroupID == "" {
		return ""
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.attempts[u.ConsumerGroupID]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= s.cfg.ConnectWindow {
		i++
	}
	ts = append(ts[i:], now)
	s.attempts[u.ConsumerGroupID] = ts
	if len(ts) <= s.cfg.ConnectLimit {
		return ""
	}
	s.throttled.Add(1)
	return fmt.Sprintf("throttled: more than %d connection attempts in %s for consumer group %s (the platform's limit, "+
		"across every client of the group); back off and retry", s.cfg.ConnectLimit, s.cfg.ConnectWindow, u.ConsumerGroupID)
}
