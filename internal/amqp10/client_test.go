package amqp10

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// testLimit bounds every wait of these tests; nothing depends on it.
const testLimit = 20 * time.Second

// peer is the server end of a Receiver under test, scripted by the test.
type peer struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

// countingConn counts the client's socket writes; fail makes them fail.
type countingConn struct {
	net.Conn
	writes atomic.Int64
	fail   atomic.Bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	if c.fail.Load() {
		return 0, errors.New("injected write failure")
	}
	return c.Conn.Write(p)
}

// serverOpts shape the scripted server's handshake.
type serverOpts struct {
	saslCode uint8        // the SASL outcome
	saslData string       // its additional data
	idle     uint32       // the server's idle-time-out (ms) in its open
	initial  uint32       // the link's initial-delivery-count
	open     Performative // the server's open, if not the usual one
	// clientIdle is the idle-time-out (ms) the client's open must carry
	// (0: 30000).
	clientIdle uint32
	sndSettle  uint8 // the snd-settle-mode of the server's attach
}

// startPair connects a Receiver to a scripted server over loopback TCP and
// runs the handshake up to the attach. It returns the receiver (nil when
// the login failed, with err), the server end and the client's socket.
func startPair(t *testing.T, o serverOpts, cfg ReceiverConfig) (*Receiver, *peer, *countingConn, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := make(chan *peer, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			srv <- nil
			return
		}
		p := &peer{t: t, nc: nc, br: bufio.NewReader(nc)}
		_ = nc.SetDeadline(time.Now().Add(testLimit))
		p.handshake(o)
		srv <- p
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	if cfg.ContainerID == "" {
		cfg.ContainerID = "edge-1"
	}
	cfg.Username, cfg.Password = "user", "secret"
	r, err := Dial(ctx, cc, cfg)
	if err == nil {
		err = r.Attach(ctx, "queue-a")
	}
	p := <-srv
	if p == nil {
		t.Fatal("the server accepted nothing")
	}
	t.Cleanup(func() {
		p.nc.Close()
		if r != nil && err == nil {
			r.Abort()
		}
	})
	if err != nil {
		return nil, p, cc, err
	}
	return r, p, cc, nil
}

// handshake is the server's side of login, open, begin and attach; it
// stops after a refused login.
func (p *peer) handshake(o serverOpts) {
	var h [8]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil || h != HeaderSASL {
		p.t.Errorf("SASL header %q, %v", h, err)
		return
	}
	p.raw(HeaderSASL[:])
	p.sendType(FrameSASL, &SASLMechanisms{Mechanisms: []Symbol{"ANONYMOUS", "PLAIN"}})
	init, ok := p.next().Body.(*SASLInit)
	if !ok || init.Mechanism != "PLAIN" || string(init.InitialResponse) != "\x00user\x00secret" {
		p.t.Errorf("sasl-init %+v", init)
	}
	var data []byte
	if o.saslData != "" {
		data = []byte(o.saslData)
	}
	p.sendType(FrameSASL, &SASLOutcome{Code: o.saslCode, AdditionalData: data})
	if o.saslCode != SASLOK {
		return
	}
	if _, err := io.ReadFull(p.br, h[:]); err != nil || h != HeaderAMQP {
		p.t.Errorf("AMQP header %q, %v", h, err)
		return
	}
	p.raw(HeaderAMQP[:])
	open, ok := p.next().Body.(*Open)
	if o.clientIdle == 0 {
		o.clientIdle = 30000
	}
	if !ok || open.ContainerID != "edge-1" || open.IdleTimeout != o.clientIdle {
		p.t.Errorf("open %+v, want container-id edge-1 and idle-time-out %d", open, o.clientIdle)
	}
	if o.open == nil {
		o.open = &Open{ContainerID: "server", MaxFrameSize: 1 << 20, IdleTimeout: o.idle}
	}
	p.send(o.open)
	if _, ok := p.next().Body.(*Begin); !ok {
		p.t.Error("no begin")
	}
	a, ok := p.next().Body.(*Attach)
	if !ok || a.Role != RoleReceiver || a.SndSettleMode != SndUnsettled || a.RcvSettleMode != 0 ||
		a.Source == nil || a.Source.Address != "queue-a" {
		p.t.Errorf("attach %+v, want a receiver of queue-a, rcv-settle-mode first, snd-settle-mode unsettled", a)
		return
	}
	p.send(&Begin{RemoteChannel: new(uint16), NextOutgoingID: 0, IncomingWindow: 100, OutgoingWindow: 100000})
	p.send(&Attach{Name: a.Name, Handle: 3, Role: RoleSender, Source: a.Source, Target: a.Target,
		InitialDeliveryCount: U32(o.initial), SndSettleMode: o.sndSettle})
}

func (p *peer) raw(b []byte) {
	if _, err := p.nc.Write(b); err != nil {
		p.t.Errorf("server write: %v", err)
	}
}

func (p *peer) sendType(typ byte, body Performative) {
	b, err := AppendFrame(nil, typ, 0, body, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	p.raw(b)
}

func (p *peer) send(body Performative) { p.sendType(FrameAMQP, body) }

// transfer sends one transfer frame of delivery id (nil: a continuation).
func (p *peer) transfer(id *uint32, more, aborted bool, payload []byte) {
	b, err := AppendFrame(nil, FrameAMQP, 0, &Transfer{Handle: 3, DeliveryID: id, DeliveryTag: tagOf(id),
		MessageFormat: U32(0), More: more, Aborted: aborted}, payload)
	if err != nil {
		p.t.Fatal(err)
	}
	p.raw(b)
}

func tagOf(id *uint32) []byte {
	if id == nil {
		return nil
	}
	return []byte(fmt.Sprint(*id))
}

// next reads the client's next frame (the test fails on an error).
func (p *peer) next() Frame {
	f, err := ReadFrame(p.br, 1<<20)
	if err != nil {
		p.t.Fatalf("server read: %v", err)
	}
	return f
}

// nextNonEmpty skips the client's empty frames.
func (p *peer) nextNonEmpty() Frame {
	for {
		if f := p.next(); f.Body != nil {
			return f
		}
	}
}

// message encodes a message with one data section and a messageId.
func message(t *testing.T, id string, body []byte) []byte {
	t.Helper()
	b, err := AppendMessage(nil, &Message{ApplicationProperties: Map{{"messageId", id}}, Data: [][]byte{body}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startWithCredit starts a pair with a 30 s idle time-out, issues credit
// and reads the flow that grants it: the server may send n transfers.
func startWithCredit(t *testing.T, cfg ReceiverConfig, n uint32) (*Receiver, *peer, *countingConn) {
	t.Helper()
	cfg.IdleTimeout = 30 * time.Second
	r, p, cc, err := startPair(t, serverOpts{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.IssueCredit(n)
	p.nextNonEmpty()
	return r, p, cc
}

// transferEach sends one unsettled transfer a message id, with the
// delivery-ids 0, 1, ... in order.
func (p *peer) transferEach(ids ...string) {
	for i, id := range ids {
		p.transfer(U32(uint32(i)), false, false, message(p.t, id, nil))
	}
}

func receive(t *testing.T, r *Receiver) *Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	d, err := r.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return d
}

func idOf(d *Delivery) any { v, _ := d.Property("messageId"); return v }

// TestReceiverCreditAndMultiFrameTransfer: IssueCredit sends a flow with
// the link's delivery-count and credit; a message split over several
// transfer frames (more) comes whole; an aborted delivery is dropped and
// its credit given back, so the count the caller keeps stays right.
func TestReceiverCreditAndMultiFrameTransfer(t *testing.T) {
	r, p, _, err := startPair(t, serverOpts{initial: 7}, ReceiverConfig{IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.IssueCredit(3); err != nil {
		t.Fatal(err)
	}
	fl, ok := p.nextNonEmpty().Body.(*Flow)
	if !ok || fl.Handle == nil || *fl.Handle != 0 || *fl.DeliveryCount != 7 || *fl.LinkCredit != 3 ||
		fl.NextIncomingID == nil || *fl.NextIncomingID != 0 || fl.IncomingWindow == 0 {
		t.Fatalf("flow %+v, want delivery-count 7, link-credit 3 and an open incoming window", fl)
	}

	whole := message(t, "big", []byte(strings.Repeat("x", 3000)))
	p.transfer(U32(0), true, false, whole[:1000])
	p.transfer(nil, true, false, whole[1000:2000])
	p.transfer(U32(0), false, false, whole[2000:])
	p.transfer(U32(1), true, false, whole[:10])
	p.transfer(nil, false, true, nil) // aborted
	p.transfer(U32(2), false, false, message(t, "small", []byte("y")))

	d := receive(t, r)
	if d.ID != 0 || idOf(d) != "big" || len(d.Data) != 1 || len(d.Data[0]) != 3000 {
		t.Errorf("first delivery: id %d, messageId %v, data %d bytes; want id 0, big, 3000 bytes", d.ID, idOf(d), len(d.Data[0]))
	}
	// The aborted delivery took a credit: the client gives it back.
	fl, ok = p.nextNonEmpty().Body.(*Flow)
	if !ok || *fl.DeliveryCount != 9 || *fl.LinkCredit != 2 {
		t.Errorf("flow after the aborted delivery %+v, want delivery-count 9 and link-credit 2 (one given back)", fl)
	}
	if d := receive(t, r); d.ID != 2 || idOf(d) != "small" {
		t.Errorf("second delivery: id %d, messageId %v; want the one after the aborted one", d.ID, idOf(d))
	}
}

// TestReceiverSettlesRangesInOneWrite: the settlements gathered between
// Hold and Flush go out as dispositions of runs of delivery-ids (first ..
// last, settled), split where the outcome changes and where the ids wrap,
// in one socket write; a settled transfer is not settled again.
func TestReceiverSettlesRangesInOneWrite(t *testing.T) {
	r, p, cc := startWithCredit(t, ReceiverConfig{}, 10)
	ids := []uint32{0xfffffffe, 0xffffffff, 0, 1, 2, 3}
	for _, id := range ids {
		p.transfer(U32(id), false, false, message(t, fmt.Sprint(id), nil))
	}
	b, _ := AppendFrame(nil, FrameAMQP, 0, &Transfer{Handle: 3, DeliveryID: U32(4), DeliveryTag: []byte("4"), Settled: true},
		message(t, "4", nil))
	p.raw(b)
	var ds []*Delivery
	for range len(ids) + 1 {
		ds = append(ds, receive(t, r))
	}
	if !ds[6].Settled {
		t.Fatal("a settled transfer came unsettled")
	}
	before := cc.writes.Load()
	r.Hold()
	for i, d := range ds {
		var err error
		if i == 3 { // delivery-id 1
			err = r.Release(d)
		} else {
			err = r.Accept(d)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := cc.writes.Load() - before; n != 0 {
		t.Fatalf("%d writes during the hold", n)
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load() - before; n != 1 {
		t.Errorf("%d socket writes for one round, want 1", n)
	}
	type rng struct {
		first, last uint32
		accepted    bool
	}
	want := []rng{{0, 0, true}, {1, 1, false}, {2, 3, true}, {0xfffffffe, 0xffffffff, true}}
	for _, w := range want {
		d, ok := p.nextNonEmpty().Body.(*Disposition)
		if !ok {
			t.Fatalf("want a disposition")
		}
		last := d.First
		if d.Last != nil {
			last = *d.Last
		}
		_, acc := d.State.(*Accepted)
		if _, rel := d.State.(*Released); (!acc && !rel) || d.Role != RoleReceiver || !d.Settled ||
			d.First != w.first || last != w.last || acc != w.accepted {
			t.Errorf("disposition %d..%d settled %v state %T, want %+v", d.First, last, d.Settled, d.State, w)
		}
	}
	// Without a hold a settlement is written at once.
	p.transfer(U32(5), false, false, message(t, "5", nil))
	if err := r.Accept(receive(t, r)); err != nil {
		t.Fatal(err)
	}
	if d, ok := p.nextNonEmpty().Body.(*Disposition); !ok || d.First != 5 {
		t.Errorf("unheld accept: %+v", d)
	}
}

// TestReceiverFailedFlushClosesAndSticks: a write that fails closes the
// connection, and every later settlement fails with it (nothing counts as
// settled that was not written).
func TestReceiverFailedFlushClosesAndSticks(t *testing.T) {
	r, p, cc := startWithCredit(t, ReceiverConfig{}, 2)
	p.transferEach("a", "b")
	d0, d1 := receive(t, r), receive(t, r)
	cc.fail.Store(true)
	r.Hold()
	if err := r.Accept(d0); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); err == nil {
		t.Fatal("Flush succeeded over a failing socket")
	}
	if err := r.Accept(d1); err == nil {
		t.Error("a settlement after a failed flush succeeded")
	}
	select {
	case <-r.Done():
	case <-time.After(testLimit):
		t.Fatal("the connection did not end after the failed write")
	}
	if _, err := p.br.ReadByte(); err == nil {
		t.Error("the server can still read: the socket was not closed")
	}
}

// TestReceiverRefusesAnotherProtocolHeader: a server that answers the
// SASL or the AMQP protocol header with another one is refused as
// malformed, naming the header.
func TestReceiverRefusesAnotherProtocolHeader(t *testing.T) {
	for _, tc := range []struct {
		name       string
		sasl, amqp [8]byte // what the server answers
		want       string
	}{
		{"SASL", HeaderAMQP, HeaderAMQP, `the server answered the SASL protocol header with "AMQP\x00\x01\x00\x00"`},
		{"AMQP", HeaderSASL, HeaderSASL, `the server answered the AMQP protocol header with "AMQP\x03\x01\x00\x00"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			served := make(chan struct{})
			go func() {
				defer close(served)
				defer server.Close()
				p := &peer{t: t, nc: server, br: bufio.NewReader(server)}
				var h [8]byte
				if _, err := io.ReadFull(p.br, h[:]); err != nil {
					return
				}
				p.raw(tc.sasl[:])
				if tc.sasl != HeaderSASL {
					return
				}
				p.sendType(FrameSASL, &SASLMechanisms{Mechanisms: []Symbol{"PLAIN"}})
				if _, err := ReadFrame(p.br, 1<<20); err != nil {
					return
				}
				p.sendType(FrameSASL, &SASLOutcome{Code: SASLOK})
				if _, err := io.ReadFull(p.br, h[:]); err != nil {
					return
				}
				p.raw(tc.amqp[:])
			}()
			ctx, cancel := context.WithTimeout(context.Background(), testLimit)
			defer cancel()
			_, err := Dial(ctx, client, ReceiverConfig{ContainerID: "edge-1", Username: "user", Password: "secret",
				IdleTimeout: 30 * time.Second})
			client.Close()
			<-served
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Dial: %v; want ErrMalformed saying %s", err, tc.want)
			}
		})
	}
}

// TestRemoteEndTexts: a session or link the peer ended reads as the peer's
// error, or says what ended when the peer gave none.
func TestRemoteEndTexts(t *testing.T) {
	e := &Error{Condition: ErrNotAllowed, Description: "no"}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&SessionError{}, "amqp: session ended by the server"},
		{&SessionError{RemoteErr: e}, "amqp:not-allowed: no"},
		{&LinkError{}, "amqp: link detached by the server"},
		{&LinkError{RemoteErr: e}, "amqp:not-allowed: no"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestReceiverRemoteEndsWithError: a detach, end or close from the server
// ends the connection with the server's error, typed, also while nobody
// calls Receive (the pipeline blocks); what was received before is still
// taken first.
func TestReceiverRemoteEndsWithError(t *testing.T) {
	e := &Error{Condition: "amqp:connection:forced", Description: "9602 server closed the connection"}
	tests := []struct {
		name string
		send Performative
		is   func(error) bool
	}{
		{"detach", &Detach{Handle: 3, Closed: true, Error: e}, func(err error) bool { var x *LinkError; return errors.As(err, &x) && x.RemoteErr != nil }},
		{"end", &End{Error: e}, func(err error) bool { var x *SessionError; return errors.As(err, &x) && x.RemoteErr != nil }},
		{"close", &Close{Error: e}, func(err error) bool { var x *ConnError; return errors.As(err, &x) && x.RemoteErr != nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, p, _ := startWithCredit(t, ReceiverConfig{}, 1)
			p.transferEach("before")
			p.send(tc.send)
			select {
			case <-r.Done():
			case <-time.After(testLimit):
				t.Fatal("the connection did not end on the server's " + tc.name)
			}
			if !tc.is(r.Err()) || !strings.Contains(r.Err().Error(), "9602") {
				t.Errorf("Err() = %v (%T), want the server's %s error", r.Err(), r.Err(), tc.name)
			}
			if d := receive(t, r); idOf(d) != "before" {
				t.Errorf("got %v, want the message received before", idOf(d))
			}
			if _, err := r.Receive(context.Background()); !tc.is(err) {
				t.Errorf("Receive after the end: %v, want the server's error", err)
			}
		})
	}
}

// TestReceiverHeartbeats: the client sends an empty frame whenever it
// wrote nothing for half the server's idle-time-out, while nobody calls
// Receive; and it keeps reading meanwhile (the server's frames are taken).
func TestReceiverHeartbeats(t *testing.T) {
	r, p, _, err := startPair(t, serverOpts{idle: 100}, ReceiverConfig{IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	empty := 0
	for empty < 3 {
		if f := p.next(); f.Body == nil {
			empty++
		}
	}
	_ = p.nc.SetWriteDeadline(time.Now().Add(testLimit))
	for range 50 { // frames the client must keep reading, Receive or not
		p.raw([]byte{0, 0, 0, 8, 2, 0, 0, 0})
	}
	p.send(&Close{})
	select {
	case <-r.Done():
	case <-time.After(testLimit):
		t.Fatal("the client stopped reading while Receive was not called")
	}
}

// TestReceiverHeartbeatsWhenThePeerAnnouncesNoIdleTimeout: a server whose
// open carries no idle-time-out still gets a frame every half of the
// client's own (the platform drops a connection that carried nothing for
// the client's idle-time-out, whatever its open announced).
func TestReceiverHeartbeatsWhenThePeerAnnouncesNoIdleTimeout(t *testing.T) {
	_, p, _, err := startPair(t, serverOpts{idle: 0, clientIdle: 200}, ReceiverConfig{IdleTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for empty := 0; empty < 3; {
		if f := p.next(); f.Body == nil {
			empty++
		}
	}
}

// TestReceiverBadFrames: a frame the client cannot take ends the
// connection with an error naming the frame or field, and the socket is
// closed (the server redelivers what is unsettled).
func TestReceiverBadFrames(t *testing.T) {
	tr := func(tr *Transfer, payload []byte) []byte {
		b, err := AppendFrame(nil, FrameAMQP, 0, tr, payload)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		bytes func(*testing.T) []byte
		want  string
	}{
		{"garbage body", func(*testing.T) []byte { return []byte{0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0xff} }, "frame body"},
		{"unknown frame type", func(*testing.T) []byte { return []byte{0, 0, 0, 8, 2, 7, 0, 0} }, "unknown frame type 7"},
		{"too large", func(*testing.T) []byte { return []byte{0x7f, 0, 0, 0, 2, 0, 0, 0} }, "exceeds the max-frame-size"},
		{"wrong handle", func(t *testing.T) []byte {
			return tr(&Transfer{Handle: 9, DeliveryID: U32(0), DeliveryTag: []byte("0")}, message(t, "x", nil))
		}, "transfer on handle 9"},
		{"no delivery-id", func(t *testing.T) []byte { return tr(&Transfer{Handle: 3}, message(t, "x", nil)) }, "delivery-id"},
		{"continuation of another delivery", func(t *testing.T) []byte {
			m := message(t, "x", nil)
			return append(tr(&Transfer{Handle: 3, DeliveryID: U32(0), DeliveryTag: []byte("0"), More: true}, m[:3]),
				tr(&Transfer{Handle: 3, DeliveryID: U32(1)}, m[3:])...)
		}, "continues delivery 0 with delivery-id 1"},
		{"continuation with another message-format", func(t *testing.T) []byte {
			m := message(t, "x", nil)
			return append(tr(&Transfer{Handle: 3, DeliveryID: U32(0), DeliveryTag: []byte("0"), MessageFormat: U32(0), More: true}, m[:3]),
				tr(&Transfer{Handle: 3, DeliveryID: U32(0), DeliveryTag: []byte("0"), MessageFormat: U32(7)}, m[3:])...)
		}, "continues delivery 0 (message-format 0) with message-format 7"},
		{"continuation with another delivery-tag", func(t *testing.T) []byte {
			m := message(t, "x", nil)
			return append(tr(&Transfer{Handle: 3, DeliveryID: U32(0), DeliveryTag: []byte("0"), More: true}, m[:3]),
				tr(&Transfer{Handle: 3, DeliveryTag: []byte("1")}, m[3:])...)
		}, "continues delivery 0 (delivery-tag 30) with delivery-tag 31"},
		{"another channel", func(t *testing.T) []byte {
			b, _ := AppendFrame(nil, FrameAMQP, 4, &Transfer{Handle: 3, DeliveryID: U32(0), DeliveryTag: []byte("0")}, message(t, "x", nil))
			return b
		}, "transfer frame on channel 4, but the session is on channel 0"},
		{"open on an open link", func(*testing.T) []byte {
			b, _ := AppendFrame(nil, FrameAMQP, 0, &Open{ContainerID: "x"}, nil)
			return b
		}, "unexpected open"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, p, _ := startWithCredit(t, ReceiverConfig{}, 5)
			p.raw(tc.bytes(t))
			ctx, cancel := context.WithTimeout(context.Background(), testLimit)
			defer cancel()
			if _, err := r.Receive(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Receive: %v, want an error with %q", err, tc.want)
			}
			select {
			case <-r.Done():
			case <-time.After(testLimit):
				t.Fatal("the connection did not end on the bad frame")
			}
			for {
				_, err := ReadFrame(p.br, 1<<20)
				if err == nil {
					continue
				}
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					// The server's read deadline (testLimit), not the end of the socket.
					t.Fatalf("the client did not close the socket: %v", err)
				}
				break // the socket was closed
			}
		})
	}
}

// TestReceiverSASLRefused: a refused login is a *SASLError carrying the
// server's code and text.
func TestReceiverSASLRefused(t *testing.T) {
	_, _, _, err := startPair(t, serverOpts{saslCode: SASLSysTemp, saslData: "throttled"}, ReceiverConfig{IdleTimeout: 30 * time.Second})
	var se *SASLError
	if !errors.As(err, &se) || se.Code != SASLSysTemp || !strings.Contains(err.Error(), "throttled") ||
		!strings.Contains(err.Error(), "SASL PLAIN login failed with code 0x4 (sys-temp: a transient system error at the server, not the credentials)") {
		t.Errorf("err = %v, want a SASLError with code 4 and the server's text", err)
	}
}

// TestReceiverRefusesAtMostOnce: a server that answers the attach with
// snd-settle-mode settled would send every delivery pre-settled (lost for
// good if lost on the way): Attach fails with ErrAtMostOnce, naming it, and
// drops the socket, like any refused attach. Mixed (each delivery says) and
// unsettled attach.
func TestReceiverRefusesAtMostOnce(t *testing.T) {
	_, p, _, err := startPair(t, serverOpts{sndSettle: SndSettled}, ReceiverConfig{IdleTimeout: 30 * time.Second})
	if !errors.Is(err, ErrAtMostOnce) || !strings.Contains(err.Error(), "pre-settled (at-most-once)") ||
		!strings.Contains(err.Error(), "the bridge needs unsettled") {
		t.Errorf("attach answered settled: err = %v, want ErrAtMostOnce", err)
	}
	if _, rerr := io.ReadAll(p.br); rerr != nil {
		t.Errorf("the server's read after the refused attach: %v, want the socket closed", rerr)
	}
	for _, mode := range []uint8{SndMixed, SndUnsettled} {
		if _, _, _, err := startPair(t, serverOpts{sndSettle: mode}, ReceiverConfig{IdleTimeout: 30 * time.Second}); err != nil {
			t.Errorf("attach answered snd-settle-mode %d: %v", mode, err)
		}
	}
}

// TestReceiverCloseHandshake: Close releases what was received but not
// taken, detaches (closed), ends and closes, and returns once the server
// answers the close; a server that does not answer is cut off when ctx
// ends. Abort closes the socket without any of that.
func TestReceiverCloseHandshake(t *testing.T) {
	for _, answer := range []bool{true, false} {
		t.Run(fmt.Sprintf("answer=%v", answer), func(t *testing.T) {
			r, p, _ := startWithCredit(t, ReceiverConfig{}, 2)
			p.transferEach("taken", "prefetched")
			receive(t, r)
			// The reader has the second one once a later frame was read
			// after it: wait for it in the queue.
			waitfor.Until(t, "the prefetched delivery in the queue", testLimit, func() bool { return len(r.msgs) > 0 })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := make(chan error, 1)
			go func() { res <- r.Close(ctx) }()
			d, ok := p.nextNonEmpty().Body.(*Disposition)
			if _, rel := d.State.(*Released); !ok || d.First != 1 || !rel {
				t.Errorf("Close sent %+v first, want the release of delivery 1", d)
			}
			if dt, ok := p.nextNonEmpty().Body.(*Detach); !ok || !dt.Closed {
				t.Errorf("want a closing detach, got %+v", dt)
			}
			if _, ok := p.nextNonEmpty().Body.(*End); !ok {
				t.Error("want an end")
			}
			if _, ok := p.nextNonEmpty().Body.(*Close); !ok {
				t.Error("want a close")
			}
			if answer {
				p.send(&Detach{Handle: 3, Closed: true})
				p.send(&End{})
				p.send(&Close{})
				if err := <-res; err != nil {
					t.Errorf("Close = %v", err)
				}
				if err := r.Err(); err != nil {
					t.Errorf("Err after a clean close = %v", err)
				}
				return
			}
			cancel()
			if err := <-res; !errors.Is(err, context.Canceled) {
				t.Errorf("Close without an answer = %v, want the context's error", err)
			}
		})
	}
	t.Run("abort", func(t *testing.T) {
		r, p, _, err := startPair(t, serverOpts{}, ReceiverConfig{IdleTimeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f, err := ReadFrame(p.br, 1<<20)
				if err != nil {
					return
				}
				if f.Body != nil {
					t.Errorf("Abort sent %s", Name(f.Body))
				}
			}
		}()
		r.Abort()
		wg.Wait()
	})
}

// TestReceiverReopensTheSessionWindow: the client opens the session's
// incoming window again before the server runs out of it.
func TestReceiverReopensTheSessionWindow(t *testing.T) {
	r, p, _ := startWithCredit(t, ReceiverConfig{Prefetch: incomingWindow}, incomingWindow)
	m := message(t, "m", nil)
	go func() {
		for i := range incomingWindow/2 + 1 {
			p.transfer(U32(uint32(i)), false, false, m)
		}
	}()
	fl, ok := p.nextNonEmpty().Body.(*Flow)
	if !ok || *fl.NextIncomingID != incomingWindow/2+1 || fl.IncomingWindow != incomingWindow {
		t.Errorf("flow %+v, want next-incoming-id %d and the whole window open again", fl, incomingWindow/2+1)
	}
	for range incomingWindow/2 + 1 {
		receive(t, r)
	}
}

// TestParseTransferAgreesWithTheGeneralPath: the reader's transfer decoder
// gives what ParseFrame gives, for every encoding of the fields it takes,
// and leaves anything else (a delivery state, rcv-settle-mode, a bad
// field) to ParseFrame.
func TestParseTransferAgreesWithTheGeneralPath(t *testing.T) {
	payload := []byte{0x00, 0x53, 0x75, 0xa0, 1, 'x'}
	fast := []*Transfer{
		{Handle: 0, DeliveryID: U32(0), DeliveryTag: []byte{}, MessageFormat: U32(0)},
		{Handle: 3, DeliveryID: U32(200), DeliveryTag: []byte("t")},
		{Handle: 70000, DeliveryID: U32(0xffffffff), DeliveryTag: make([]byte, 300), MessageFormat: U32(1 << 20), Settled: true, More: true},
		{Handle: 1, More: true},
		{Handle: 1, Aborted: true},
	}
	check := func(b []byte, want bool) {
		t.Helper()
		body := b[8:]
		var got Transfer
		n, ok := parseTransfer(body, &got)
		if ok != want {
			t.Fatalf("parseTransfer ok = %v, want %v", ok, want)
		}
		if !ok {
			return
		}
		f, err := ParseFrame(b, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		gen := f.Body.(*Transfer)
		if got.Handle != gen.Handle || fmt.Sprint(got.DeliveryID == nil) != fmt.Sprint(gen.DeliveryID == nil) ||
			(got.DeliveryID != nil && *got.DeliveryID != *gen.DeliveryID) ||
			string(got.DeliveryTag) != string(gen.DeliveryTag) || (got.DeliveryTag == nil) != (gen.DeliveryTag == nil) ||
			(got.MessageFormat == nil) != (gen.MessageFormat == nil) || got.Settled != gen.Settled ||
			got.More != gen.More || got.Aborted != gen.Aborted || string(body[n:]) != string(f.Payload) {
			t.Errorf("parseTransfer = %+v payload %q, ParseFrame = %+v payload %q", got, body[n:], *gen, f.Payload)
		}
	}
	for _, tr := range fast {
		b, err := AppendFrame(nil, FrameAMQP, 0, tr, payload)
		if err != nil {
			t.Fatal(err)
		}
		check(b, true)
	}
	// The same transfer with the wide list encoding and explicit nulls and
	// falses, as another peer may write it.
	wide := Described{uint64(descTransfer), []any{uint32(2), nil, []byte("q"), nil, false, true, nil, nil, false, false, false}}
	b, _ := AppendFrame(nil, FrameAMQP, 0, rawPerformative{wide}, payload)
	check(b, true)
	for _, tr := range []*Transfer{
		{Handle: 1, DeliveryID: U32(1), State: &Accepted{}},
	} {
		b, _ := AppendFrame(nil, FrameAMQP, 0, tr, payload)
		check(b, false)
	}
	rcv := Described{uint64(descTransfer), []any{uint32(2), nil, nil, nil, nil, nil, uint8(1)}}
	b, _ = AppendFrame(nil, FrameAMQP, 0, rawPerformative{rcv}, nil)
	check(b, false)
	bad := Described{uint64(descTransfer), []any{"not a handle"}}
	b, _ = AppendFrame(nil, FrameAMQP, 0, rawPerformative{bad}, nil)
	check(b, false)
}

// rawPerformative encodes a described value as it is.
type rawPerformative struct{ d Described }

func (r rawPerformative) described() Described { return r.d }

// FuzzParseTransfer: no input makes parseTransfer panic, and what it takes
// the general path takes as the same transfer.
func FuzzParseTransfer(f *testing.F) {
	tr, _ := AppendFrame(nil, FrameAMQP, 0, &Transfer{Handle: 3, DeliveryID: U32(7), DeliveryTag: []byte("7"), More: true}, []byte{1})
	f.Add(tr[8:])
	f.Fuzz(func(t *testing.T, body []byte) {
		var got Transfer
		n, ok := parseTransfer(body, &got)
		if !ok {
			return
		}
		b := append([]byte{0, 0, 0, 0, 2, 0, 0, 0}, body...)
		binary.BigEndian.PutUint32(b, uint32(len(b)))
		fr, err := ParseFrame(b, math.MaxUint32)
		if err != nil {
			t.Fatalf("parseTransfer took what ParseFrame refuses: %v", err)
		}
		gen, isT := fr.Body.(*Transfer)
		if !isT || gen.Handle != got.Handle || gen.More != got.More || gen.Aborted != got.Aborted ||
			gen.Settled != got.Settled || (gen.DeliveryID == nil) != (got.DeliveryID == nil) ||
			(gen.DeliveryID != nil && *gen.DeliveryID != *got.DeliveryID) || string(fr.Payload) != string(body[n:]) {
			t.Fatalf("parseTransfer %+v, ParseFrame %+v", got, fr.Body)
		}
	})
}
