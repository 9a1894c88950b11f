package iotsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func startAMQP(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.AMQPAddr == "" {
		cfg.AMQPAddr = "127.0.0.1:0"
	}
	return startServer(t, cfg)
}

// callContext bounds one client call of the test (10 s: only a broken
// test waits that long).
func callContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dialAMQP logs in with go-amqp as the bridge does (idle timeout 120 s,
// which go-amqp advertises as 60 000 ms).
func dialAMQP(t *testing.T, s *Server, p iotauth.Params, idle time.Duration) (*amqp.Conn, error) {
	t.Helper()
	cred, err := iotauth.Sign(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx := callContext(t)
	return amqp.Dial(ctx, "amqps://"+s.AMQPAddr(), &amqp.ConnOptions{
		SASLType:    amqp.SASLTypePlain(cred.Username, cred.Password),
		IdleTimeout: idle,
		TLSConfig:   clientTLS(t, s),
	})
}

func receiver(t *testing.T, c *amqp.Conn, credit int32) *amqp.Receiver {
	t.Helper()
	ctx := callContext(t)
	sess, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sess.NewReceiver(ctx, "default", &amqp.ReceiverOptions{Credit: credit})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func receive(t *testing.T, r *amqp.Receiver) *amqp.Message {
	t.Helper()
	ctx := callContext(t)
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAMQPGoAMQPReceivesPlatformShapedMessages(t *testing.T) {
	s := startAMQP(t, Config{})
	c, err := dialAMQP(t, s, params("go-amqp"), 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := receiver(t, c, 10)
	big := bytes.Repeat([]byte{0, 0xff, 'x'}, 100000) // several frames
	msgs := []Message{
		{Topic: "/pk/dev1/user/telemetry", MessageID: "1001", GenerateTime: 1700000000123, Body: []byte(`{"t":1}`)},
		{Topic: "/pk/dev1/user/bin", MessageID: "1002", GenerateTime: 1700000000124, Body: []byte{0, 1, 0xfe, 0xff}},
		{Topic: "/pk/dev1/user/big", MessageID: "1003", GenerateTime: 1700000000125, Body: big},
	}
	for _, m := range msgs {
		s.Publish(testGroup, m)
	}
	ctx := context.Background()
	for _, want := range msgs {
		m := receive(t, r)
		if !bytes.Equal(m.GetData(), want.Body) {
			t.Errorf("body of %s: got %d bytes, want %d", want.MessageID, len(m.GetData()), len(want.Body))
		}
		ap := m.ApplicationProperties
		if ap["topic"] != want.Topic || ap["messageId"] != want.MessageID || ap["generateTime"] != want.GenerateTime {
			t.Errorf("application properties = %#v, want topic %q, messageId %q (string), generateTime %d (long)",
				ap, want.Topic, want.MessageID, want.GenerateTime)
		}
		if err := r.AcceptMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "3 acks", func() bool { return s.Stats().Acked == 3 })
	if st := s.Stats(); st.Delivered != 3 || st.Pending != 0 || st.LoginsOK != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestAMQPLoginRefused(t *testing.T) {
	s := startAMQP(t, Config{})
	p := params("bad")
	p.AccessKeySecret = "wrong"
	_, err := dialAMQP(t, s, p, 120*time.Second)
	if err == nil || !strings.Contains(err.Error(), "SASL") {
		t.Fatalf("login with a wrong secret: err = %v, want a SASL failure", err)
	}
	p = params("unknown")
	p.AccessKeyID = "LTAIother"
	if _, err := dialAMQP(t, s, p, 120*time.Second); err == nil {
		t.Fatal("login with an unknown authId succeeded")
	}
	if st := s.Stats(); st.LoginsFailed != 2 || st.LoginsOK != 0 {
		t.Errorf("stats = %+v, want 2 failed logins", st)
	}
}

// TestAMQPLoginWithAuthorize: with Config.Authorize (a fake STS's issues)
// an AMQP login is checked as a STOMP login is: the issued id, its secret
// and the security token issued with it log in; another token or an id
// the issuer refuses do not.
func TestAMQPLoginWithAuthorize(t *testing.T) {
	s := startAMQP(t, Config{Authorize: func(id string) (string, string, bool) {
		if id != "STS.issued" {
			return "", "", false
		}
		return "sts-secret", "sts-token", true
	}})
	for _, tc := range []struct {
		id, token string
		ok        bool
	}{{"STS.issued", "sts-token", true}, {"STS.issued", "another-token", false}, {"STS.expired", "sts-token", false}} {
		p := params("sts")
		p.AccessKeyID, p.AccessKeySecret, p.SecurityToken = tc.id, "sts-secret", tc.token
		c, err := dialAMQP(t, s, p, 2*time.Minute)
		if (err == nil) != tc.ok {
			t.Errorf("login as %s with token %s: err = %v, want ok %v", tc.id, tc.token, err, tc.ok)
		}
		if err == nil {
			c.Close()
		}
	}
	if st := s.Stats(); st.LoginsOK != 1 || st.LoginsFailed != 2 {
		t.Errorf("stats = %+v, want 1 login and 2 refused", st)
	}
}

// TestAMQPLoginEveryModeAndMethod: aksign and ststoken with each sign
// method log in over AMQP as they do over STOMP.
func TestAMQPLoginEveryModeAndMethod(t *testing.T) {
	s := startAMQP(t, Config{})
	n := 0
	for _, m := range []string{iotauth.HMACMD5, iotauth.HMACSHA1, iotauth.HMACSHA256} {
		for _, token := range []string{"", "STS.token-value"} {
			p := params("modes")
			p.SignMethod, p.SecurityToken = m, token
			c, err := dialAMQP(t, s, p, 2*time.Minute)
			if err != nil {
				t.Fatalf("%s %s: %v", m, p.AuthMode(), err)
			}
			c.Close()
			n++
		}
	}
	if st := s.Stats(); st.LoginsOK != int64(n) || st.LoginsFailed != 0 {
		t.Errorf("stats = %+v, want %d logins", st, n)
	}
}

func TestAMQPIdleTimeoutOutsidePlatformBoundsIsRefused(t *testing.T) {
	s := startAMQP(t, Config{})
	// go-amqp advertises half its IdleTimeout: 40 s → 20 000 ms (too low),
	// 700 s → 350 000 ms (too high); 60 s → 30 000 ms is the lower bound.
	for _, idle := range []time.Duration{40 * time.Second, 700 * time.Second} {
		c, err := dialAMQP(t, s, params("idle"), idle)
		if err == nil {
			_, err = c.NewSession(callContext(t), nil)
			c.Close()
		}
		var ce *amqp.ConnError
		if !errors.As(err, &ce) || ce.RemoteErr == nil || !strings.Contains(ce.RemoteErr.Description, "9601") {
			t.Errorf("idle timeout %s: err = %v, want a close with 9601", idle, err)
		}
	}
	c, err := dialAMQP(t, s, params("idle-ok"), 60*time.Second)
	if err != nil {
		t.Fatalf("30 000 ms (the lower bound) refused: %v", err)
	}
	receiver(t, c, 1)
	c.Close()
}

func TestAMQPServerInitiatedClose(t *testing.T) {
	s := startAMQP(t, Config{})
	c, err := dialAMQP(t, s, params("closed"), 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := receiver(t, c, 5)
	s.Publish(testGroup, Message{Topic: "/t", Body: []byte("x")})
	m := receive(t, r) // held, not settled
	_ = m
	s.CloseConnections()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("go-amqp did not see the close")
	}
	var ce *amqp.ConnError
	if err := c.Err(); !errors.As(err, &ce) || ce.RemoteErr == nil || ce.RemoteErr.Condition != amqp.ErrCondConnectionForced ||
		!strings.Contains(ce.RemoteErr.Description, "9602") {
		t.Errorf("err = %v, want a close with amqp:connection:forced and 9602", err)
	}
	// The unsettled message goes back and reaches the next connection.
	c2, err := dialAMQP(t, s, params("closed"), 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	m2 := receive(t, receiver(t, c2, 5))
	if m2.ApplicationProperties["messageId"] != m.ApplicationProperties["messageId"] {
		t.Errorf("redelivered %v, want %v", m2.ApplicationProperties["messageId"], m.ApplicationProperties["messageId"])
	}
	if st := s.Stats(); st.Redelivered != 1 {
		t.Errorf("stats = %+v, want 1 redelivery", st)
	}
}

// rawAMQP is a hand-driven AMQP client built on the codec, for the rules a
// library client would not let a test break.
type rawAMQP struct {
	t           *testing.T
	nc          *tls.Conn
	br          *bufio.Reader
	lastPayload []byte
}

// dialRawAMQP logs in and opens with idle-time-out idleMS (0: none).
func dialRawAMQP(t *testing.T, s *Server, idleMS uint32) (*rawAMQP, *amqp10.Open) {
	t.Helper()
	nc, err := tls.Dial("tcp", s.AMQPAddr(), clientTLS(t, s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawAMQP{t: t, nc: nc, br: bufio.NewReader(nc)}
	cred, err := iotauth.Sign(params("raw"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.write(amqp10.HeaderSASL[:])
	if h, err := amqp10.ReadProtocolHeader(c.br); err != nil || h != amqp10.HeaderSASL {
		t.Fatalf("SASL header: %v %v", h, err)
	}
	if _, ok := c.next(amqp10.FrameSASL).(*amqp10.SASLMechanisms); !ok {
		t.Fatal("no sasl-mechanisms")
	}
	c.sendType(amqp10.FrameSASL, &amqp10.SASLInit{Mechanism: "PLAIN",
		InitialResponse: []byte("\x00" + cred.Username + "\x00" + cred.Password)}, nil)
	if o, ok := c.next(amqp10.FrameSASL).(*amqp10.SASLOutcome); !ok || o.Code != amqp10.SASLOK {
		t.Fatalf("sasl outcome %#v", o)
	}
	c.write(amqp10.HeaderAMQP[:])
	if h, err := amqp10.ReadProtocolHeader(c.br); err != nil || h != amqp10.HeaderAMQP {
		t.Fatalf("AMQP header: %v %v", h, err)
	}
	c.send(&amqp10.Open{ContainerID: "raw", IdleTimeout: idleMS})
	open, ok := c.next(amqp10.FrameAMQP).(*amqp10.Open)
	if !ok {
		t.Fatal("no open")
	}
	return c, open
}

func (c *rawAMQP) write(b []byte) {
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawAMQP) sendType(typ byte, p amqp10.Performative, payload []byte) {
	b, err := amqp10.AppendFrame(nil, typ, 0, p, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(b)
}

func (c *rawAMQP) send(p amqp10.Performative) { c.sendType(amqp10.FrameAMQP, p, nil) }

// next returns the next non-empty frame's performative.
func (c *rawAMQP) next(typ byte) any {
	c.t.Helper()
	for {
		f, err := amqp10.ReadFrame(c.br, 1<<20)
		if err != nil {
			c.t.Fatalf("read frame: %v", err)
		}
		if f.Type != typ {
			c.t.Fatalf("frame type %d, want %d", f.Type, typ)
		}
		if f.Body != nil {
			c.lastPayload = f.Payload
			return f.Body
		}
	}
}

// expectClose reads until the server's close and returns its error.
func (c *rawAMQP) expectClose() *amqp10.Error {
	c.t.Helper()
	for {
		switch p := c.next(amqp10.FrameAMQP).(type) {
		case *amqp10.Close:
			if p.Error == nil {
				c.t.Fatal("close without an error")
			}
			return p.Error
		case *amqp10.Transfer, *amqp10.Flow, *amqp10.Disposition:
		default:
			c.t.Fatalf("got %s, want close", amqp10.Name(p))
		}
	}
}

// attachReceiver begins a session and attaches a receiver with handle h.
func (c *rawAMQP) begin() {
	c.send(&amqp10.Begin{NextOutgoingID: 0, IncomingWindow: 1000, OutgoingWindow: 1000})
	if _, ok := c.next(amqp10.FrameAMQP).(*amqp10.Begin); !ok {
		c.t.Fatal("no begin")
	}
}

func (c *rawAMQP) attach(h uint32, role bool) *amqp10.Attach {
	c.t.Helper()
	return c.attachMode(h, role, amqp10.SndUnsettled)
}

func (c *rawAMQP) attachMode(h uint32, role bool, snd uint8) *amqp10.Attach {
	c.t.Helper()
	c.send(&amqp10.Attach{Name: "link", Handle: h, Role: role, SndSettleMode: snd,
		Source: &amqp10.Terminus{Address: "default"}, Target: &amqp10.Terminus{}})
	a, ok := c.next(amqp10.FrameAMQP).(*amqp10.Attach)
	if !ok {
		c.t.Fatal("no attach")
	}
	return a
}

// rawReceiver logs in (idle-time-out 60 s), begins a session and attaches
// receiver link 0 with snd-settle-mode snd.
func rawReceiver(t *testing.T, s *Server, snd uint8) *rawAMQP {
	t.Helper()
	c, _ := dialRawAMQP(t, s, 60000)
	c.begin()
	c.attachMode(0, amqp10.RoleReceiver, snd)
	return c
}

func (c *rawAMQP) credit(h, deliveryCount, credit uint32, echo bool) {
	c.send(&amqp10.Flow{NextIncomingID: amqp10.U32(0), IncomingWindow: 1000, NextOutgoingID: 0, OutgoingWindow: 1000,
		Handle: amqp10.U32(h), DeliveryCount: amqp10.U32(deliveryCount), LinkCredit: amqp10.U32(credit), Echo: echo})
}

func (c *rawAMQP) transfer() (*amqp10.Transfer, *amqp10.Message) {
	c.t.Helper()
	tr, ok := c.next(amqp10.FrameAMQP).(*amqp10.Transfer)
	if !ok {
		c.t.Fatal("no transfer")
	}
	m, err := amqp10.DecodeMessage(c.lastPayload)
	if err != nil {
		c.t.Fatal(err)
	}
	return tr, m
}

func (c *rawAMQP) settle(id uint32, state any) {
	c.send(&amqp10.Disposition{Role: amqp10.RoleReceiver, First: id, Settled: true, State: state})
}

func TestAMQPReceiverMustAttachInTime(t *testing.T) {
	s := startAMQP(t, Config{AttachTimeout: 300 * time.Millisecond})
	c, _ := dialRawAMQP(t, s, 60000)
	c.begin() // a session is not enough
	e := c.expectClose()
	if e.Condition != amqp10.ErrConnectionForced || !strings.Contains(e.Description, "no receiver link attached within 300ms") {
		t.Errorf("close error = %v", e)
	}
	// A receiver attached in time keeps its connection: it still delivers
	// once a connection opened after it has been dropped for not attaching.
	c2 := rawReceiver(t, s, amqp10.SndUnsettled)
	c3, _ := dialRawAMQP(t, s, 60000)
	c3.expectClose()
	s.Publish(testGroup, Message{Topic: "/t", Body: []byte("x")})
	c2.credit(0, 0, 1, false)
	if _, m := c2.transfer(); string(m.Data[0]) != "x" {
		t.Errorf("body %q", m.Data[0])
	}
}

func TestAMQPOneReceiverNoSenders(t *testing.T) {
	s := startAMQP(t, Config{})
	c, _ := dialRawAMQP(t, s, 60000)
	c.begin()
	// A sender link (the client publishing) is refused: attach, then detach
	// with the reason.
	c.attach(0, amqp10.RoleSender)
	d, ok := c.next(amqp10.FrameAMQP).(*amqp10.Detach)
	if !ok || d.Error == nil || d.Error.Condition != amqp10.ErrNotAllowed || !strings.Contains(d.Error.Description, "sender links") {
		t.Fatalf("sender attach answered with %#v", d)
	}
	if a := c.attach(1, amqp10.RoleReceiver); a.Role != amqp10.RoleSender {
		t.Fatalf("receiver attach answered with role %v", a.Role)
	}
	c.attach(2, amqp10.RoleReceiver)
	d, ok = c.next(amqp10.FrameAMQP).(*amqp10.Detach)
	if !ok || d.Handle != 2 || d.Error == nil || !strings.Contains(d.Error.Description, "one receiver link per connection") {
		t.Fatalf("second receiver answered with %#v", d)
	}
	// The first receiver still works.
	s.Publish(testGroup, Message{Topic: "/t", Body: []byte("one")})
	c.credit(1, 0, 1, false)
	if tr, _ := c.transfer(); tr.Handle != 1 {
		t.Errorf("transfer on handle %d, want 1", tr.Handle)
	}
	// A transfer from the client ends the connection.
	c.sendType(amqp10.FrameAMQP, &amqp10.Transfer{Handle: 1, DeliveryID: amqp10.U32(0), DeliveryTag: []byte{1}}, []byte{0x00, 0x53, 0x75, 0xa0, 0})
	if e := c.expectClose(); e.Condition != amqp10.ErrNotAllowed || !strings.Contains(e.Description, "no sender links") {
		t.Errorf("close error = %v", e)
	}
}

func TestAMQPCreditIsRespected(t *testing.T) {
	s := startAMQP(t, Config{})
	for i := range 5 {
		s.Publish(testGroup, Message{Topic: "/t", MessageID: string(rune('a' + i)), Body: []byte{byte(i)}})
	}
	c := rawReceiver(t, s, amqp10.SndUnsettled)
	c.credit(0, 0, 2, false)
	c.transfer()
	c.transfer()
	// Ask for the link state: 2 delivered, no credit left, 3 available.
	c.credit(0, 2, 0, true)
	fl, ok := c.next(amqp10.FrameAMQP).(*amqp10.Flow)
	if !ok || fl.Handle == nil || *fl.DeliveryCount != 2 || *fl.LinkCredit != 0 || fl.Available == nil || *fl.Available != 3 {
		t.Fatalf("echoed flow = %#v, want delivery-count 2, credit 0, available 3", fl)
	}
	if st := s.Stats(); st.Delivered != 2 || st.Queued != 3 {
		t.Errorf("stats = %+v, want 2 delivered and 3 queued", st)
	}
	c.credit(0, 2, 3, false)
	for range 3 {
		c.transfer()
	}
	if st := s.Stats(); st.Delivered != 5 || st.Unacked != 5 {
		t.Errorf("stats = %+v, want 5 delivered, 5 unacked", st)
	}
}

func TestAMQPOutcomes(t *testing.T) {
	s := startAMQP(t, Config{})
	c := rawReceiver(t, s, amqp10.SndUnsettled)
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "m1", Body: []byte("x")})
	c.credit(0, 0, 100, false)
	id := func(m *amqp10.Message) any { v, _ := m.Property("messageId"); return v }
	// released (9651), modified and rejected (9652) all give the message
	// back: it comes again with the same messageId.
	outcomes := []any{&amqp10.Released{}, &amqp10.Modified{DeliveryFailed: true},
		&amqp10.Rejected{Error: &amqp10.Error{Condition: amqp10.ErrDecode}}, &amqp10.Accepted{}}
	for i, o := range outcomes {
		tr, m := c.transfer()
		if id(m) != "m1" {
			t.Fatalf("delivery %d: messageId %v", i, id(m))
		}
		c.settle(*tr.DeliveryID, o)
	}
	waitFor(t, "the accept", func() bool { return s.Stats().Acked == 1 })
	st := s.Stats()
	if st.Released != 1 || st.Modified != 1 || st.Rejected != 1 || st.Nacked != 3 || st.Redelivered != 3 || st.Pending != 0 {
		t.Errorf("stats = %+v", st)
	}
	// An unsettled disposition (rcv-settle-mode second) is settled by the
	// server.
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "m2", Body: []byte("y")})
	tr, _ := c.transfer()
	c.send(&amqp10.Disposition{Role: amqp10.RoleReceiver, First: *tr.DeliveryID, State: &amqp10.Accepted{}})
	d, ok := c.next(amqp10.FrameAMQP).(*amqp10.Disposition)
	if !ok || !d.Settled || d.Role != amqp10.RoleSender {
		t.Errorf("answer to an unsettled accept: %#v", d)
	}
}

func TestAMQPLateAcceptAfterAckTimeoutIsHarmless(t *testing.T) {
	s := startAMQP(t, Config{AckTimeout: 20 * time.Millisecond})
	c := rawReceiver(t, s, amqp10.SndUnsettled)
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "late", Body: []byte("x")})
	c.credit(0, 0, 2, false)
	first, _ := c.transfer()
	_, m := c.transfer() // the same message, after the ACK timeout
	if v, _ := m.Property("messageId"); v != "late" {
		t.Fatalf("messageId %v", v)
	}
	c.settle(*first.DeliveryID, &amqp10.Accepted{}) // late
	// The echoed flow comes after the disposition was handled.
	c.credit(0, 2, 0, true)
	if _, ok := c.next(amqp10.FrameAMQP).(*amqp10.Flow); !ok {
		t.Fatal("no flow echoed")
	}
	// The late accept settled nothing and lost nothing: the message is
	// still unacked or back in the queue, and the connection lives on.
	if st := s.Stats(); st.Acked != 0 || st.Pending != 1 || st.Expired < 1 || st.Connections != 1 {
		t.Errorf("stats = %+v, want no ack, 1 pending, an expiry, the connection open", st)
	}
}

func TestAMQPHeartBeatsAndSilentClient(t *testing.T) {
	s := startAMQP(t, Config{MinIdleTimeout: 100 * time.Millisecond})
	c, open := dialRawAMQP(t, s, 200)
	if open.IdleTimeout != 200 {
		t.Errorf("server idle-time-out %d ms, want the client's 200", open.IdleTimeout)
	}
	c.begin()
	c.attach(0, amqp10.RoleReceiver)
	// The server beats (empty frames) while it has nothing to send...
	f, err := amqp10.ReadFrame(c.br, 1<<20)
	if err != nil || f.Body != nil {
		t.Fatalf("want an empty frame (heart-beat): %#v %v", f, err)
	}
	// ...and drops this client, which sends nothing, after its idle-time-out.
	if e := c.expectClose(); e.Condition != amqp10.ErrResourceLimit || !strings.Contains(e.Description, "no frame from the client") {
		t.Errorf("close error = %v", e)
	}
}

func TestAMQPRefusesNonSASLAndGarbage(t *testing.T) {
	s := startAMQP(t, Config{})
	nc, err := tls.Dial("tcp", s.AMQPAddr(), clientTLS(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(amqp10.HeaderAMQP[:])
	h, err := amqp10.ReadProtocolHeader(nc)
	if err != nil || h != amqp10.HeaderSASL {
		t.Errorf("answer to a plain AMQP header: %v %v, want the SASL header", h, err)
	}
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the header: %v, want EOF", err)
	}
	// A malformed frame after open closes with a framing error.
	c, _ := dialRawAMQP(t, s, 60000)
	c.write([]byte{0, 0, 0, 9, 2, 0, 0, 0, 0x01})
	if e := c.expectClose(); e.Condition != amqp10.ErrFramingError {
		t.Errorf("close error = %v", e)
	}
}

// TestAMQPQpidProtonReceivesAndSettles proves the listener against a second,
// independent AMQP 1.0 client: python3-qpid-proton (Debian package
// python3-qpid-proton, which scripts/test.sh installs).
func TestAMQPQpidProtonReceivesAndSettles(t *testing.T) {
	python := protonPython()
	if python == "" {
		msg := "python3-qpid-proton is not installed (apt-get install python3-qpid-proton, or run scripts/test.sh as root)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	s := startAMQP(t, Config{})
	ca := testfile.Write(t, t.TempDir(), "ca.pem", string(s.CACertPEM()))
	cred, err := iotauth.Sign(params("proton"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{
		{Topic: "/pk/dev/user/a", MessageID: "p1", GenerateTime: 1700000000001, Body: []byte(`{"n":1}`)},
		{Topic: "/pk/dev/user/b", MessageID: "p2", GenerateTime: 1700000000002, Body: []byte{0, 0xff, 0x80}},
		{Topic: "/pk/dev/user/c", MessageID: "p3", GenerateTime: 1700000000003, Body: bytes.Repeat([]byte("z"), 70000)},
	}
	for _, m := range msgs {
		s.Publish(testGroup, m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "testdata/proton_receive.py")
	// accept p1, release p2, reject p3, then accept both again.
	cmd.Env = append(os.Environ(), "IOTSIM_ADDR="+s.AMQPAddr(), "IOTSIM_CA="+ca, "IOTSIM_USER="+cred.Username,
		"IOTSIM_PASS="+cred.Password, "COUNT=5", "OUTCOMES=accept,release,reject,accept")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("proton client: %v\n%s\n%s", err, out, stderr.String())
	}
	var got []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("proton output %q: %v", line, err)
		}
		got = append(got, m)
	}
	if len(got) != 5 {
		t.Fatalf("proton received %d messages, want 5:\n%s", len(got), out)
	}
	byID := map[string]Message{}
	for _, m := range msgs {
		byID[m.MessageID] = m
	}
	seen := map[string]int{}
	for _, g := range got {
		id, _ := g["messageId"].(string)
		want, ok := byID[id]
		if !ok {
			t.Fatalf("unknown message %v", g)
		}
		seen[id]++
		if g["body_hex"] != hex.EncodeToString(want.Body) || g["topic"] != want.Topic ||
			g["generateTime"] != float64(want.GenerateTime) {
			t.Errorf("message %s arrived as %v", id, g)
		}
		// Python's view of the AMQP types: string, string, long.
		if g["topic_type"] != "str" || g["messageId_type"] != "str" || g["generateTime_type"] != "long" && g["generateTime_type"] != "int" {
			t.Errorf("property types %v %v %v, want str, str, long", g["topic_type"], g["messageId_type"], g["generateTime_type"])
		}
	}
	if seen["p1"] != 1 || seen["p2"] != 2 || seen["p3"] != 2 {
		t.Errorf("deliveries per message = %v, want p1 once, p2 and p3 twice (released, rejected)", seen)
	}
	waitFor(t, "the settlements", func() bool { return s.Stats().Acked == 3 })
	if st := s.Stats(); st.Released != 1 || st.Rejected != 1 || st.Pending != 0 || st.Redelivered != 2 {
		t.Errorf("stats = %+v", st)
	}
}

// protonPython returns a Python 3 that can import proton: Debian's
// /usr/bin/python3 first (where the package installs it, even when another
// python3 comes first on PATH), else python3 on PATH; "" when none can.
func protonPython() string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import proton").Run() == nil {
			return p
		}
	}
	return ""
}

// TestAMQPPresettledLink: a receiver that asks for settled deliveries (the
// AMQP form of ack auto) gets them settled, and each counts as acked on send.
func TestAMQPPresettledLink(t *testing.T) {
	s := startAMQP(t, Config{})
	c, _ := dialRawAMQP(t, s, 60000)
	c.begin()
	if a := c.attachMode(0, amqp10.RoleReceiver, amqp10.SndSettled); a.SndSettleMode != amqp10.SndSettled {
		t.Fatalf("attach answered with snd-settle-mode %d", a.SndSettleMode)
	}
	s.Publish(testGroup, Message{Topic: "/t", Body: []byte("x")})
	c.credit(0, 0, 10, false)
	if tr, _ := c.transfer(); !tr.Settled {
		t.Errorf("transfer %#v is not settled", tr)
	}
	if st := s.Stats(); st.Acked != 1 || st.Unacked != 0 {
		t.Errorf("stats = %+v, want 1 acked on send", st)
	}
}

// TestAMQPEndingReplyComesAfterEveryTransfer: a client that ends its link,
// session or connection while pre-settled transfers flow reads every
// transfer the server counted as delivered before the server's answer
// (detach, end, close), and none after it: the server counts only what it
// wrote, and writes nothing once it has answered. A client reading until
// that answer (as the bridge's AMQP source does when it stops) would
// otherwise lose messages the platform took as settled. The same holds for
// the close the server sends when it closes the connection itself (9602).
func TestAMQPEndingReplyComesAfterEveryTransfer(t *testing.T) {
	s := startAMQP(t, Config{QueueSize: floodQueue})
	flood(t, s)
	isClose := func(p any) bool { _, ok := p.(*amqp10.Close); return ok }
	endings := []struct {
		name  string
		end   func(c *rawAMQP)
		reply func(any) bool
		final bool // the answer ends the connection
	}{
		{"detach", func(c *rawAMQP) { c.send(&amqp10.Detach{Handle: 0, Closed: true}) },
			func(p any) bool { _, ok := p.(*amqp10.Detach); return ok }, false},
		{"end", func(c *rawAMQP) { c.send(&amqp10.End{}) }, func(p any) bool { _, ok := p.(*amqp10.End); return ok }, false},
		{"close", func(c *rawAMQP) { c.send(&amqp10.Close{}) }, isClose, true},
		{"server close (9602)", func(*rawAMQP) { s.CloseConnections() }, isClose, true},
	}
	got := 0
	for round := range 40 {
		ending := endings[round%len(endings)]
		c := rawReceiver(t, s, amqp10.SndSettled)
		c.credit(0, 0, 900, false)
		// Take a few, then end while transfers flow.
		for n := 0; n < 1+round%5; n++ {
			c.transfer()
			got++
		}
		ending.end(c)
		for {
			p := c.next(amqp10.FrameAMQP)
			if _, ok := p.(*amqp10.Transfer); ok {
				got++
				continue
			}
			if !ending.reply(p) {
				t.Fatalf("round %d (%s): got %s before the answer", round, ending.name, amqp10.Name(p))
			}
			// Right at once, not only when the connection is gone.
			if d := s.Stats().Delivered; d != int64(got) {
				t.Fatalf("round %d (%s): the server counts %d delivered as the client reads its answer, the client read %d before it",
					round, ending.name, d, got)
			}
			break
		}
		if !ending.final {
			// Nothing comes after the answer: the next frame is the close.
			c.send(&amqp10.Close{})
			if p := c.next(amqp10.FrameAMQP); !isClose(p) {
				t.Fatalf("round %d (%s): got %s after the answer, want the close", round, ending.name, amqp10.Name(p))
			}
		}
		c.nc.Close()
		waitFor(t, "the connection to go", func() bool { return s.Stats().Connections == 0 })
		if st := s.Stats(); st.Delivered != int64(got) {
			t.Fatalf("round %d (%s): the server counts %d delivered, the client read %d", round, ending.name, st.Delivered, got)
		}
	}
}
