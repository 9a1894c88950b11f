package iotsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

const (
	testAK     = "LTAItestAK"
	testSecret = "test-secret-value"
	testGroup  = "DEFAULT_GROUP"
)

// waitFor polls cond until it holds; the deadline only bounds a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, 10*time.Second, cond)
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Secrets == nil {
		cfg.Secrets = map[string]string{testAK: testSecret}
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func params(clientID string) iotauth.Params {
	return iotauth.Params{
		ClientID:        clientID,
		AccessKeyID:     testAK,
		AccessKeySecret: testSecret,
		ConsumerGroupID: testGroup,
		IotInstanceID:   "iot-sim",
		SignMethod:      iotauth.HMACSHA1,
	}
}

func clientTLS(t *testing.T, s *Server) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(s.CACertPEM()) {
		t.Fatal("CACertPEM holds no certificate")
	}
	return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// dialAs logs in with credentials signed from p now.
func dialAs(t *testing.T, s *Server, p iotauth.Params, opts ...func(*stomp.Conn) error) (*stomp.Conn, error) {
	t.Helper()
	cred, err := iotauth.Sign(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return dialRaw(t, s, cred.Username, cred.Password, opts...)
}

func dialRaw(t *testing.T, s *Server, username, password string, opts ...func(*stomp.Conn) error) (*stomp.Conn, error) {
	t.Helper()
	tc, err := tls.Dial("tcp", s.Addr(), clientTLS(t, s))
	if err != nil {
		t.Fatal(err)
	}
	all := append([]func(*stomp.Conn) error{
		stomp.ConnOpt.Login(username, password),
		stomp.ConnOpt.Host("127.0.0.1"),
		stomp.ConnOpt.Logger(quietLogger{}),
	}, opts...)
	c, err := stomp.Connect(tc, all...)
	if err != nil {
		tc.Close()
		return nil, err
	}
	t.Cleanup(func() { c.MustDisconnect() })
	return c, nil
}

func mustDial(t *testing.T, s *Server, p iotauth.Params, opts ...func(*stomp.Conn) error) *stomp.Conn {
	t.Helper()
	c, err := dialAs(t, s, p, opts...)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return c
}

func subscribe(t *testing.T, c *stomp.Conn, ack stomp.AckMode) *stomp.Subscription {
	t.Helper()
	sub, err := c.Subscribe("/topic/#", ack)
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

func recv(t *testing.T, sub *stomp.Subscription) *stomp.Message {
	t.Helper()
	select {
	case m, ok := <-sub.C:
		if !ok {
			t.Fatal("subscription closed")
		}
		if m.Err != nil {
			t.Fatalf("subscription error: %v", m.Err)
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// received dials as clientID, subscribes with ack, publishes ms and
// receives as many messages; it returns the connection, the subscription
// and the messages in the order they came.
func received(t *testing.T, s *Server, clientID string, ack stomp.AckMode, ms ...Message) (*stomp.Conn, *stomp.Subscription, []*stomp.Message) {
	t.Helper()
	c := mustDial(t, s, params(clientID))
	sub := subscribe(t, c, ack)
	for _, m := range ms {
		s.Publish(testGroup, m)
	}
	got := make([]*stomp.Message, len(ms))
	for i := range got {
		got[i] = recv(t, sub)
	}
	return c, sub, got
}

// numbered returns n messages with the ids "0" to "n-1".
func numbered(n int) []Message {
	ms := make([]Message, n)
	for i := range ms {
		ms[i] = Message{Topic: "/a/b/user/x", MessageID: fmt.Sprint(i)}
	}
	return ms
}

type quietLogger struct{}

func (quietLogger) Debugf(string, ...interface{})   {}
func (quietLogger) Debug(string)                    {}
func (quietLogger) Infof(string, ...interface{})    {}
func (quietLogger) Info(string)                     {}
func (quietLogger) Warningf(string, ...interface{}) {}
func (quietLogger) Warning(string)                  {}
func (quietLogger) Errorf(string, ...interface{})   {}
func (quietLogger) Error(string)                    {}

func TestLogin(t *testing.T) {
	s := startServer(t, Config{MaxSkew: time.Minute, Secrets: map[string]string{testAK: testSecret, "LTAIother": "other"}})
	type tc struct {
		name    string
		mutate  func(p *iotauth.Params)
		raw     func() (string, string)
		wantErr string
	}
	var tests []tc
	for _, m := range []string{iotauth.HMACMD5, iotauth.HMACSHA1, iotauth.HMACSHA256} {
		for _, token := range []string{"", "sts-token-value"} {
			name := m + "/aksign"
			if token != "" {
				name = m + "/ststoken"
			}
			tests = append(tests, tc{name: name + "/ok", mutate: func(p *iotauth.Params) { p.SignMethod, p.SecurityToken = m, token }})
			tests = append(tests, tc{name: name + "/wrong secret", mutate: func(p *iotauth.Params) {
				p.SignMethod, p.SecurityToken, p.AccessKeySecret = m, token, "not-the-secret"
			}, wantErr: "authentication failed: signature mismatch"})
		}
	}
	tests = append(tests,
		tc{name: "upper-case method", mutate: func(p *iotauth.Params) { p.SignMethod = "HmacSHA256" }},
		tc{name: "base64 login", mutate: func(p *iotauth.Params) { p.EncodeBase64 = true }},
		tc{name: "unknown authId", mutate: func(p *iotauth.Params) { p.AccessKeyID = "LTAInobody" }, wantErr: `authentication failed: unknown authId "LTAInobody"`},
		tc{name: "secret of another authId", mutate: func(p *iotauth.Params) { p.AccessKeyID = "LTAIother" }, wantErr: "signature mismatch"},
		tc{name: "no passcode", raw: func() (string, string) { return "c|authMode=aksign|", "" }, wantErr: "login (the platform username) and passcode"},
		tc{name: "not a username", raw: func() (string, string) { return "guest", "guest" }, wantErr: "authentication failed: username: must end with '|'"},
		tc{name: "stale timestamp", raw: func() (string, string) {
			cred, err := iotauth.Sign(params("stale"), time.Now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return cred.Username, cred.Password
		}, wantErr: "away from the server clock"},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.raw != nil {
				u, p := tt.raw()
				_, err = dialRaw(t, s, u, p)
			} else {
				p := params("login-test")
				tt.mutate(&p)
				_, err = dialAs(t, s, p)
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("login failed: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("login succeeded, want %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "not-the-secret") {
				t.Fatal("error quotes the secret")
			}
		})
	}
	st := s.Stats()
	var wantOK, wantBad int64
	for _, tt := range tests {
		if tt.wantErr == "" {
			wantOK++
		} else {
			wantBad++
		}
	}
	if st.LoginsOK != wantOK || st.LoginsFailed != wantBad {
		t.Fatalf("stats: %d ok, %d failed; want %d, %d", st.LoginsOK, st.LoginsFailed, wantOK, wantBad)
	}
}

func TestVersions(t *testing.T) {
	s := startServer(t, Config{})
	tests := []struct {
		name    string
		accept  []stomp.Version
		want    stomp.Version
		wantErr string
	}{
		{"1.2 preferred", nil, stomp.V12, ""},
		{"1.1 only", []stomp.Version{stomp.V11}, stomp.V11, ""},
		{"1.0 refused", []stomp.Version{stomp.V10}, "", "unsupported STOMP version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []func(*stomp.Conn) error
			if tt.accept != nil {
				opts = append(opts, stomp.ConnOpt.AcceptVersion(tt.accept...))
			}
			c, err := dialAs(t, s, params("v"), opts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Version() != tt.want {
				t.Fatalf("version %s, want %s", c.Version(), tt.want)
			}
		})
	}
}

func TestMessageHeadersAndBodies(t *testing.T) {
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0, 'x'}
	tests := []struct {
		name     string
		base64   bool
		ack      stomp.AckMode
		wantBody []byte
		wantAck  bool
	}{
		{"plain auto", false, stomp.AckAuto, binary, false},
		{"base64 auto", true, stomp.AckAuto, []byte(base64.StdEncoding.EncodeToString(binary)), false},
		{"base64 client-individual", true, stomp.AckClientIndividual, []byte(base64.StdEncoding.EncodeToString(binary)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{})
			p := params("hdr")
			p.EncodeBase64 = tt.base64
			c := mustDial(t, s, p)
			sub := subscribe(t, c, tt.ack)
			s.Publish(testGroup, Message{Topic: "/pk1/dev1/user/raw", MessageID: "42", GenerateTime: 1700000000123, Body: binary})
			m := recv(t, sub)
			if !bytes.Equal(m.Body, tt.wantBody) {
				t.Fatalf("body %q, want %q", m.Body, tt.wantBody)
			}
			for k, want := range map[string]string{
				"topic": "/pk1/dev1/user/raw", "messageId": "42", "generateTime": "1700000000123",
				"message-id": "42", "destination": "/pk1/dev1/user/raw", "subscription": sub.Id(),
			} {
				if got := m.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if _, ok := m.Header.Contains("ack"); ok != tt.wantAck {
				t.Errorf("ack header present = %v, want %v", ok, tt.wantAck)
			}
		})
	}
}

func TestPublishFillsIDAndTime(t *testing.T) {
	s := startServer(t, Config{})
	sub := subscribe(t, mustDial(t, s, params("ids")), stomp.AckAuto)
	before := time.Now().UnixMilli()
	s.Publish(testGroup, Message{Topic: "/a/b/user/x"})
	s.Publish(testGroup, Message{Topic: "/a/b/user/x"})
	m1, m2 := recv(t, sub), recv(t, sub)
	id1, id2 := m1.Header.Get("messageId"), m2.Header.Get("messageId")
	if id1 == "" || id1 == id2 {
		t.Fatalf("message ids %q and %q, want distinct non-empty", id1, id2)
	}
	var gt int64
	fmt.Sscan(m1.Header.Get("generateTime"), &gt)
	if gt < before {
		t.Fatalf("generateTime %d before publish time %d", gt, before)
	}
}

func TestAutoAckIsSettledOnSend(t *testing.T) {
	s := startServer(t, Config{})
	c, _, _ := received(t, s, "auto", stomp.AckAuto, Message{Topic: "/a/b/user/x", MessageID: "1"})
	c.Disconnect()
	waitFor(t, "disconnect", func() bool { return s.Stats().Connections == 0 })
	st := s.Stats()
	if st.Delivered != 1 || st.Acked != 1 || st.Pending != 0 || st.Redelivered != 0 {
		t.Fatalf("stats %+v, want 1 delivered and acked, nothing pending", st)
	}
}

func TestClientIndividual(t *testing.T) {
	tests := []struct {
		name    string
		version stomp.Version
	}{{"1.2", stomp.V12}, {"1.1", stomp.V11}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{})
			c := mustDial(t, s, params("ci"), stomp.ConnOpt.AcceptVersion(tt.version))
			sub := subscribe(t, c, stomp.AckClientIndividual)
			s.Publish(testGroup, Message{Topic: "/a/b/user/x", MessageID: "1"})
			s.Publish(testGroup, Message{Topic: "/a/b/user/x", MessageID: "2"})
			m1, m2 := recv(t, sub), recv(t, sub)
			if got := s.Stats(); got.Unacked != 2 || got.Acked != 0 {
				t.Fatalf("before ACK: %+v", got)
			}
			if err := c.Ack(m2); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "ACK", func() bool { return s.Stats().Acked == 1 })
			if err := c.Nack(m1); err != nil {
				t.Fatal(err)
			}
			again := recv(t, sub)
			if again.Header.Get("messageId") != "1" {
				t.Fatalf("redelivered messageId %q, want 1", again.Header.Get("messageId"))
			}
			if err := c.Ack(again); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "second ACK", func() bool { return s.Stats().Acked == 2 })
			st := s.Stats()
			if st.Nacked != 1 || st.Redelivered != 1 || st.Delivered != 3 || st.Pending != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestClientAckIsCumulative(t *testing.T) {
	s := startServer(t, Config{})
	c, _, got := received(t, s, "cum", stomp.AckClient, numbered(3)...)
	if err := c.Ack(got[2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cumulative ACK", func() bool { return s.Stats().Acked == 3 })
	if st := s.Stats(); st.Unacked != 0 {
		t.Fatalf("unacked %d after cumulative ACK", st.Unacked)
	}
}

func TestRedeliveryAfterDisconnect(t *testing.T) {
	s := startServer(t, Config{})
	first, _, _ := received(t, s, "first", stomp.AckClientIndividual, Message{Topic: "/a/b/user/x", MessageID: "m-1", Body: []byte("hello")})
	first.Disconnect()
	waitFor(t, "requeue", func() bool { return s.Stats().Queued == 1 })

	second := mustDial(t, s, params("second"))
	m := recv(t, subscribe(t, second, stomp.AckClientIndividual))
	if m.Header.Get("messageId") != "m-1" || string(m.Body) != "hello" {
		t.Fatalf("got %s %q, want m-1 hello", m.Header.Get("messageId"), m.Body)
	}
	if st := s.Stats(); st.Redelivered != 1 {
		t.Fatalf("redelivered %d, want 1", st.Redelivered)
	}
}

func TestRedeliveryAfterAckTimeout(t *testing.T) {
	s := startServer(t, Config{AckTimeout: 50 * time.Millisecond})
	c := mustDial(t, s, params("slow"))
	sub := subscribe(t, c, stomp.AckClientIndividual)
	s.Publish(testGroup, Message{Topic: "/a/b/user/x", MessageID: "late"})
	first := recv(t, sub)
	second := recv(t, sub)
	if first.Header.Get("messageId") != "late" || second.Header.Get("messageId") != "late" {
		t.Fatalf("messageIds %q, %q", first.Header.Get("messageId"), second.Header.Get("messageId"))
	}
	if first.Header.Get("ack") == second.Header.Get("ack") {
		t.Fatal("redelivery reuses the ack id")
	}
	// The stale ACK is ignored; the fresh one settles.
	c.Ack(first)
	if err := c.Ack(second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ACK", func() bool { st := s.Stats(); return st.Acked == 1 && st.Pending == 0 })
	if st := s.Stats(); st.Expired < 1 || st.Redelivered < 1 {
		t.Fatalf("stats %+v, want an expiry and a redelivery", st)
	}
}

func TestCloseConnections(t *testing.T) {
	s := startServer(t, Config{})
	c := mustDial(t, s, params("victim"))
	sub := subscribe(t, c, stomp.AckClientIndividual)
	s.Publish(testGroup, Message{Topic: "/a/b/user/x", MessageID: "x"})
	recv(t, sub)
	s.CloseConnections()
	select {
	case m, ok := <-sub.C:
		if ok && m.Err == nil {
			t.Fatalf("got a message after the server closed: %v", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client did not notice the server-side close")
	}
	waitFor(t, "connections to drop", func() bool { return s.Stats().Connections == 0 })
	again := recv(t, subscribe(t, mustDial(t, s, params("victim")), stomp.AckAuto))
	if again.Header.Get("messageId") != "x" {
		t.Fatalf("after reconnect got %q, want x", again.Header.Get("messageId"))
	}
}

func TestEachMessageGoesToOneConnectionOfItsGroup(t *testing.T) {
	s := startServer(t, Config{})
	other := params("other-group")
	other.ConsumerGroupID = "GROUP_B"
	subs := []*stomp.Subscription{
		subscribe(t, mustDial(t, s, params("a-0")), stomp.AckAuto),
		subscribe(t, mustDial(t, s, params("a-1")), stomp.AckAuto),
	}
	subB := subscribe(t, mustDial(t, s, other), stomp.AckAuto)
	const n = 200
	for i := range n {
		m := Message{Topic: "/a/b/user/x", MessageID: fmt.Sprint(i)}
		s.Publish(testGroup, m)
		s.Publish("GROUP_B", m)
	}
	seen := map[string]int{}
	perConn := make([]int, len(subs))
	for len(seen) < n {
		select {
		case m := <-subs[0].C:
			seen[m.Header.Get("messageId")]++
			perConn[0]++
		case m := <-subs[1].C:
			seen[m.Header.Get("messageId")]++
			perConn[1]++
		case <-time.After(10 * time.Second):
			t.Fatalf("group A got %d of %d", len(seen), n)
		}
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("message %s delivered %d times in group A", id, k)
		}
	}
	for range n {
		recv(t, subB)
	}
	if st := s.Stats(); st.Delivered != 2*n || st.Pending != 0 {
		t.Fatalf("stats %+v, want %d delivered", st, 2*n)
	}
	t.Logf("group A split: %v", perConn)
}

func TestMaxConnsPerClientID(t *testing.T) {
	s := startServer(t, Config{})
	mustDial(t, s, params("same"))
	mustDial(t, s, params("same"))
	mustDial(t, s, params("different"))
	if st := s.Stats(); st.MaxConnsPerClientID != 2 || st.Connections != 3 {
		t.Fatalf("stats %+v, want max 2 per clientId, 3 connections", st)
	}
}

func TestPublishBlocksWhileGroupIsFull(t *testing.T) {
	s := startServer(t, Config{QueueSize: 2})
	for i := range 2 {
		if err := s.PublishContext(context.Background(), testGroup, Message{Topic: "/a/b/user/x", MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.PublishContext(ctx, testGroup, Message{Topic: "/a/b/user/x"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("publish into a full group: %v, want context.Canceled", err)
	}
	done := make(chan struct{})
	go func() {
		s.Publish(testGroup, Message{Topic: "/a/b/user/x", MessageID: "third"})
		close(done)
	}()
	sub := subscribe(t, mustDial(t, s, params("drain")), stomp.AckAuto)
	for _, want := range []string{"0", "1", "third"} {
		if got := recv(t, sub).Header.Get("messageId"); got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	<-done
	s.Close()
	if err := s.PublishContext(context.Background(), testGroup, Message{}); err == nil {
		t.Fatal("publish after Close succeeded")
	}
}

// rawConn is a hand-driven STOMP client for what go-stomp cannot do (go
// silent, watch heart-beats).
type rawConn struct {
	tc *tls.Conn
	r  *frame.Reader
}

// send writes f to the server.
func (rc *rawConn) send(t *testing.T, f *frame.Frame) {
	t.Helper()
	if err := frame.NewWriter(rc.tc).Write(f); err != nil {
		t.Fatal(err)
	}
}

// subscribeAuto subscribes to every topic with ack auto and reads until n
// MESSAGE frames came.
func (rc *rawConn) subscribeAuto(t *testing.T, n int) {
	t.Helper()
	rc.send(t, frame.New(frame.SUBSCRIBE, frame.Id, "s1", frame.Destination, "/topic/#", frame.Ack, "auto"))
	for n > 0 {
		f, err := rc.r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f != nil && f.Command == frame.MESSAGE {
			n--
		}
	}
}

func dialFrames(t *testing.T, s *Server, heartBeat string) *rawConn {
	t.Helper()
	tc, err := tls.Dial("tcp", s.Addr(), clientTLS(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	cred, err := iotauth.Sign(params("raw"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err = frame.NewWriter(tc).Write(frame.New(frame.CONNECT, frame.AcceptVersion, "1.2", frame.Host, "127.0.0.1",
		frame.HeartBeat, heartBeat, frame.Login, cred.Username, frame.Passcode, cred.Password))
	if err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{tc: tc, r: frame.NewReader(tc)}
	f, err := rc.r.Read()
	if err != nil || f == nil || f.Command != frame.CONNECTED {
		t.Fatalf("CONNECT: %v %v", f, err)
	}
	return rc
}

func TestServerDropsClientThatStopsHeartBeating(t *testing.T) {
	s := startServer(t, Config{HeartBeat: 20 * time.Millisecond})
	rc := dialFrames(t, s, "20,0")
	// Promised beats every 20 ms, sends nothing: the server gives up.
	var last *frame.Frame
	for {
		f, err := rc.r.Read()
		if err != nil {
			break
		}
		if f != nil {
			last = f
		}
	}
	if last == nil || last.Command != frame.ERROR || !strings.Contains(last.Header.Get(frame.Message), "no heart-beat") {
		t.Fatalf("last frame %v, want ERROR about heart-beats", last)
	}
	waitFor(t, "connection to go", func() bool { return s.Stats().Connections == 0 })
}

func TestServerSendsHeartBeats(t *testing.T) {
	tests := []struct {
		name      string
		server    time.Duration
		client    string
		wantBeats bool
		wantHB    string
	}{
		{"negotiated to the larger", 10 * time.Millisecond, "0,30", true, "30,0"},
		{"client wants none", 10 * time.Millisecond, "0,0", false, "0,0"},
		{"server offers none", NoHeartBeat, "5000,30", false, "0,0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{HeartBeat: tt.server})
			tc, err := tls.Dial("tcp", s.Addr(), clientTLS(t, s))
			if err != nil {
				t.Fatal(err)
			}
			defer tc.Close()
			cred, _ := iotauth.Sign(params("hb"), time.Now())
			frame.NewWriter(tc).Write(frame.New(frame.CONNECT, frame.AcceptVersion, "1.2", frame.Host, "h",
				frame.HeartBeat, tt.client, frame.Login, cred.Username, frame.Passcode, cred.Password))
			br := bufio.NewReader(tc)
			head, err := br.ReadString(0)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(head, "heart-beat:"+tt.wantHB+"\n") {
				t.Fatalf("CONNECTED %q lacks heart-beat:%s", head, tt.wantHB)
			}
			if !tt.wantBeats {
				return
			}
			tc.SetReadDeadline(time.Now().Add(10 * time.Second))
			for range 3 {
				b, err := br.ReadByte()
				if err != nil {
					t.Fatalf("waiting for heart-beats: %v", err)
				}
				if b != '\n' {
					t.Fatalf("got %q, want heart-beat newlines", b)
				}
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	s := startServer(t, Config{})
	tests := []struct {
		name string
		f    *frame.Frame
		want string
	}{
		{"send", frame.New(frame.SEND, frame.Destination, "/x"), "SEND is not supported"},
		{"bad ack mode", frame.New(frame.SUBSCRIBE, frame.Destination, "/topic/#", frame.Id, "1", frame.Ack, "sometimes"), "ack \"sometimes\" is not supported"},
		{"subscribe without id", frame.New(frame.SUBSCRIBE, frame.Destination, "/topic/#"), "needs an id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialFrames(t, s, "0,0")
			rc.send(t, tt.f)
			f, err := readFrame(rc.r)
			if err != nil {
				t.Fatal(err)
			}
			if f.Command != frame.ERROR || !strings.Contains(f.Header.Get(frame.Message), tt.want) {
				t.Fatalf("got %s %q, want ERROR containing %q", f.Command, f.Header.Get(frame.Message), tt.want)
			}
			if _, err := io.ReadAll(rc.tc); err != nil {
				t.Fatalf("after ERROR: %v, want a clean close", err)
			}
		})
	}
}

func TestRedeliveryKeepsOrder(t *testing.T) {
	s := startServer(t, Config{})
	first, _, _ := received(t, s, "first", stomp.AckClientIndividual, numbered(5)...)
	first.Disconnect()
	waitFor(t, "requeue", func() bool { return s.Stats().Queued == 5 })
	again := subscribe(t, mustDial(t, s, params("second")), stomp.AckAuto)
	for i := range 5 {
		if got := recv(t, again).Header.Get("messageId"); got != fmt.Sprint(i) {
			t.Fatalf("redelivery %d has messageId %s", i, got)
		}
	}
}

func TestUnsubscribeGivesBackUnacked(t *testing.T) {
	s := startServer(t, Config{})
	c, sub, _ := received(t, s, "unsub", stomp.AckClientIndividual, Message{Topic: "/a/b/user/x", MessageID: "u"})
	// go-stomp v3.1.5's Unsubscribe can miss the wake-up of its RECEIPT
	// wait and time out although the UNSUBSCRIBE was sent and answered: the
	// requeue below is what this test checks.
	if err := sub.Unsubscribe(); err != nil && !errors.Is(err, &stomp.ErrUnsubscribeReceiptTimeout) {
		t.Fatal(err)
	}
	waitFor(t, "requeue", func() bool { st := s.Stats(); return st.Queued == 1 && st.Unacked == 0 })
	if got := recv(t, subscribe(t, c, stomp.AckAuto)).Header.Get("messageId"); got != "u" {
		t.Fatalf("got %s, want u", got)
	}
}

// BenchmarkDeliver reports how many messages per second one go-stomp client
// receives from the simulator (publish, TLS, frame, client decode).
func BenchmarkDeliver(b *testing.B) {
	for _, mode := range []stomp.AckMode{stomp.AckAuto, stomp.AckClientIndividual} {
		b.Run(mode.String(), func(b *testing.B) {
			s, err := Start(Config{Secrets: map[string]string{testAK: testSecret}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(s.CACertPEM())
			tc, err := tls.Dial("tcp", s.Addr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
			if err != nil {
				b.Fatal(err)
			}
			p := params("bench")
			p.EncodeBase64 = true
			cred, _ := iotauth.Sign(p, time.Now())
			c, err := stomp.Connect(tc, stomp.ConnOpt.Login(cred.Username, cred.Password), stomp.ConnOpt.Logger(quietLogger{}))
			if err != nil {
				b.Fatal(err)
			}
			defer c.MustDisconnect()
			sub, err := c.Subscribe("/topic/#", mode)
			if err != nil {
				b.Fatal(err)
			}
			body := bytes.Repeat([]byte{0xab}, 256)
			b.ResetTimer()
			start := time.Now()
			go func() {
				for range b.N {
					s.Publish(testGroup, Message{Topic: "/pk/dev/user/bench", Body: body})
				}
			}()
			for range b.N {
				m := <-sub.C
				if m.Err != nil {
					b.Fatal(m.Err)
				}
				if mode != stomp.AckAuto {
					c.Ack(m)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// A go-stomp client that ACKs from its reading goroutine must not stall on
// a backlog with the default MaxUnacked (see Config.MaxUnacked).
func TestDefaultMaxUnackedSuitsGoStompClients(t *testing.T) {
	s := startServer(t, Config{})
	const n = 500
	for range n {
		s.Publish(testGroup, Message{Topic: "/a/b/user/x", Body: []byte("x")})
	}
	c := mustDial(t, s, params("backlog"))
	sub := subscribe(t, c, stomp.AckClientIndividual)
	for i := range n {
		if err := c.Ack(recv(t, sub)); err != nil {
			t.Fatalf("ACK %d: %v", i, err)
		}
	}
	waitFor(t, "every ACK", func() bool { return s.Stats().Acked == n })
}

func TestLoginTimeoutClosesSilentConnections(t *testing.T) {
	s := startServer(t, Config{LoginTimeout: 20 * time.Millisecond})
	// Send nothing, not even a TLS hello: the server must hang up by itself.
	// (A client that completed the handshake first needed the server's
	// handshake done within the 20 ms: under load the deadline fell in it,
	// and the server closed with the client's Finished unread, a reset.)
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("want a server close, got %v", err)
	}
	if st := s.Stats(); st.LoginsOK+st.LoginsFailed != 0 {
		t.Fatalf("stats %+v, want no login attempt", st)
	}
}

// TestKnownGroupsRefuseOtherGroups: with KnownGroups (the CLI's -groups), a
// login naming another consumer group is refused on STOMP and AMQP, as the
// platform refuses a group that does not exist; a known group logs in.
func TestKnownGroupsRefuseOtherGroups(t *testing.T) {
	s := startAMQP(t, Config{KnownGroups: []string{"DEFAULT_GROUP", "g1"}})
	p := params("known")
	p.ConsumerGroupID = "g1"
	if _, err := dialAs(t, s, p); err != nil {
		t.Fatalf("STOMP login to a known group: %v", err)
	}
	p = params("typo")
	p.ConsumerGroupID = "g2"
	_, err := dialAs(t, s, p)
	if err == nil || !strings.Contains(err.Error(), `consumer group does not exist: "g2" (this server has DEFAULT_GROUP, g1)`) {
		t.Errorf("STOMP login to an unknown group: %v, want it refused naming the group", err)
	}
	if _, err := dialAMQP(t, s, p, 120*time.Second); err == nil || !strings.Contains(err.Error(), `consumer group does not exist: "g2"`) {
		t.Errorf("AMQP login to an unknown group: %v, want it refused naming the group", err)
	}
	if st := s.Stats(); st.LoginsFailed != 2 || st.LoginsOK != 1 {
		t.Errorf("stats = %+v, want 1 login and 2 refused", st)
	}
}

// TestInstanceIDIsChecked: with CheckInstance (the CLI always checks, with
// -instance-id), a login must carry the instance's ID in iotInstanceId, as
// the platform documents it (pass it when the instance has one; leave it
// empty for a public instance without one): another value, or none for an
// instance that has one, is refused on STOMP and AMQP.
func TestInstanceIDIsChecked(t *testing.T) {
	for _, tc := range []struct {
		name, instance string
		right          string
		wrong          []string
		wantInMessage  string
	}{
		{"instance with an ID", "iot-sim", "iot-sim", []string{"iot-typo", ""}, `(this instance is "iot-sim")`},
		{"public instance without one", "", "", []string{"iot-sim"}, "(this instance has no ID: leave it empty)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startAMQP(t, Config{CheckInstance: true, InstanceID: tc.instance})
			p := params("right")
			p.IotInstanceID = tc.right
			c, err := dialAs(t, s, p)
			if err != nil {
				t.Fatalf("STOMP login with iotInstanceId %q: %v", tc.right, err)
			}
			c.Disconnect()
			ac, err := dialAMQP(t, s, p, 120*time.Second)
			if err != nil {
				t.Fatalf("AMQP login with iotInstanceId %q: %v", tc.right, err)
			}
			ac.Close()
			for _, w := range tc.wrong {
				p := params("wrong")
				p.IotInstanceID = w
				want := fmt.Sprintf("iotInstanceId %q is not this instance's %s; check iotInstanceId", w, tc.wantInMessage)
				if _, err := dialAs(t, s, p); err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("STOMP login with iotInstanceId %q: %v, want it refused with %q", w, err, want)
				}
				if _, err := dialAMQP(t, s, p, 120*time.Second); err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("AMQP login with iotInstanceId %q: %v, want it refused with %q", w, err, want)
				}
			}
			if st := s.Stats(); st.LoginsOK != 2 || st.LoginsFailed != int64(2*len(tc.wrong)) {
				t.Errorf("stats = %+v, want 2 logins and %d refused", st, 2*len(tc.wrong))
			}
		})
	}
}

// TestDisconnectReceiptComesAfterEveryMessage: with ack auto a MESSAGE
// counts as delivered (and settled) when the server sends it, so a client
// that ends with DISCONNECT and reads until its RECEIPT must get every
// MESSAGE the server counted, and the count is right as the client reads
// the RECEIPT: none may follow it. Repeated, since
// the server's sender runs beside the reader that answers DISCONNECT.
// flood publishes to testGroup in the background until the test ends, so
// that deliveries flow whenever a client reads, however many the rounds
// take (a client reading until its RECEIPT takes thousands per round when
// the server answers its DISCONNECT late: a fixed 100,000 ran out within
// 20 rounds under -cpu 1). The group holds at most floodQueue waiting
// messages: publishing blocks while it is full.
func flood(t *testing.T, s *Server) {
	go func() {
		for i := 0; ; i++ {
			if err := s.PublishContext(t.Context(), testGroup, Message{Topic: "/a/b/user/x", MessageID: fmt.Sprint(i)}); err != nil {
				return
			}
		}
	}()
}

// floodQueue is the QueueSize of the servers flood publishes to.
const floodQueue = 10000

func TestDisconnectReceiptComesAfterEveryMessage(t *testing.T) {
	s := startServer(t, Config{QueueSize: floodQueue})
	flood(t, s)
	got := 0
	for round := range 30 {
		rc := dialFrames(t, s, "0,0")
		// Take a few, then disconnect while messages flow.
		rc.subscribeAuto(t, 1+round%5)
		got += 1 + round%5
		rc.send(t, frame.New(frame.DISCONNECT, frame.Receipt, "bye"))
		for {
			f, err := rc.r.Read()
			if err != nil {
				t.Fatalf("round %d: no RECEIPT: %v", round, err)
			}
			if f == nil {
				continue
			}
			if f.Command == frame.MESSAGE {
				got++
				continue
			}
			if f.Command == frame.RECEIPT {
				// Right at once, not only when the connection is gone:
				// stompsrc's hand-over test reads the count as soon as
				// its source has closed.
				if d := s.Stats().Delivered; d != int64(got) {
					t.Fatalf("round %d: the server counts %d delivered as the client reads the RECEIPT, the client read %d before it", round, d, got)
				}
				break
			}
		}
		rc.tc.Close()
		waitFor(t, "the connection to go", func() bool { return s.Stats().Connections == 0 })
		if st := s.Stats(); st.Delivered != int64(got) {
			t.Fatalf("round %d: the server counts %d delivered, the client read %d before the RECEIPT", round, st.Delivered, got)
		}
	}
}

// TestServerEndComesAfterEveryMessage: when the server ends a STOMP
// connection itself, by closing it (CloseConnections, the platform's 9602)
// or with an ERROR frame (here: the client's heart-beats stopped), a
// client reading until that end has read every MESSAGE the server counts
// as delivered, as soon as it sees the end, and no MESSAGE follows an
// ERROR.
func TestServerEndComesAfterEveryMessage(t *testing.T) {
	s := startServer(t, Config{HeartBeat: 20 * time.Millisecond, QueueSize: floodQueue})
	flood(t, s)
	got := 0
	for round := range 20 {
		byError := round%2 == 1
		heartBeat := "0,0"
		if byError {
			heartBeat = "20,0" // promised, never sent: the server sends ERROR after 40 ms
		}
		rc := dialFrames(t, s, heartBeat)
		if byError {
			rc.subscribeAuto(t, 0)
		} else {
			rc.subscribeAuto(t, 1+round%5)
			got += 1 + round%5
			s.CloseConnections()
		}
		sawError := false
		for {
			f, err := rc.r.Read()
			if err != nil {
				break
			}
			switch {
			case f == nil:
			case f.Command == frame.MESSAGE && sawError:
				t.Fatalf("round %d: a MESSAGE after the ERROR", round)
			case f.Command == frame.MESSAGE:
				got++
			case f.Command == frame.ERROR:
				sawError = true
				if d := s.Stats().Delivered; d != int64(got) {
					t.Fatalf("round %d: the server counts %d delivered as the client reads the ERROR, the client read %d", round, d, got)
				}
				rc.tc.CloseWrite() // the server waits for it (at most a second) before it closes
			}
		}
		if sawError != byError {
			t.Fatalf("round %d: ERROR %t, want %t", round, sawError, byError)
		}
		if d := s.Stats().Delivered; !byError && d != int64(got) {
			t.Fatalf("round %d: the server counts %d delivered as the client sees the connection end, the client read %d", round, d, got)
		}
		waitFor(t, "the connection to go", func() bool { return s.Stats().Connections == 0 })
		if st := s.Stats(); st.Delivered != int64(got) {
			t.Fatalf("round %d: the server counts %d delivered, the client read %d", round, st.Delivered, got)
		}
	}
}
