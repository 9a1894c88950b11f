package amqp10

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// rawOpen is an open performative built field by field, for values the
// Open type cannot express (channel-max 0 is "absent" there).
type rawOpen []any

func (o rawOpen) described() Described { return Described{uint64(descOpen), []any(o)} }

// expectFlow reads the client's next non-empty frame, which must be a flow
// of the link with this delivery-count and link-credit.
func expectFlow(t *testing.T, p *peer, count, credit uint32, why string) *Flow {
	t.Helper()
	f := p.nextNonEmpty()
	fl, ok := f.Body.(*Flow)
	if !ok || fl.Handle == nil || fl.DeliveryCount == nil || fl.LinkCredit == nil ||
		*fl.DeliveryCount != count || *fl.LinkCredit != credit {
		t.Fatalf("%s: got %s %+v, want a flow with delivery-count %d and link-credit %d", why, Name(f.Body), f.Body, count, credit)
	}
	return fl
}

// credited starts a pair, issues credit and checks the client's flow
// (delivery-count = the server's initial-delivery-count, link-credit =
// credit).
func credited(t *testing.T, o serverOpts, cfg ReceiverConfig, credit uint32) (*Receiver, *peer, *countingConn) {
	t.Helper()
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	r, p, cc, err := startPair(t, o, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.IssueCredit(credit); err != nil {
		t.Fatal(err)
	}
	expectFlow(t, p, o.initial, credit, "credit")
	return r, p, cc
}

// TestReceiverDeliveryCountIsASerialNumber: the delivery-count wraps past
// 2^32-1 like any serial number, and a flow after a partial refill
// carries the credit still left plus the new credit (the sender computes
// its credit as delivery-count + link-credit - its own count).
func TestReceiverDeliveryCountIsASerialNumber(t *testing.T) {
	r, p, _ := credited(t, serverOpts{initial: 0xfffffffe}, ReceiverConfig{}, 4)
	m := message(t, "m", []byte("x"))
	for id := range uint32(3) {
		p.transfer(U32(id), false, false, m)
	}
	for range 3 {
		receive(t, r)
	}
	if err := r.IssueCredit(5); err != nil {
		t.Fatal(err)
	}
	expectFlow(t, p, 1, 6, "refill after 3 of 4 deliveries (the count wrapped)")
}

// TestReceiverAnswersEchoAndIgnoresServerState: a flow or disposition from
// the server changes nothing the client sends; a flow asking for an echo
// (of the link or of the session only) is answered with the client's
// state; deliveries keep coming.
func TestReceiverAnswersEchoAndIgnoresServerState(t *testing.T) {
	r, p, _ := credited(t, serverOpts{initial: 5}, ReceiverConfig{}, 2)
	p.transfer(U32(0), false, false, message(t, "a", nil))
	if d := receive(t, r); idOf(d) != "a" {
		t.Fatalf("got %v, want a", idOf(d))
	}
	// The server's own view: settled by it, its link state, no echo.
	p.send(&Disposition{Role: RoleSender, First: 0, Settled: true, State: &Released{}})
	p.send(&Flow{NextIncomingID: U32(0), IncomingWindow: 100, NextOutgoingID: 1, OutgoingWindow: 100,
		Handle: U32(3), DeliveryCount: U32(6), LinkCredit: U32(1), Available: U32(10)})
	p.send(&Flow{NextIncomingID: U32(0), IncomingWindow: 100, NextOutgoingID: 1, OutgoingWindow: 100,
		Handle: U32(3), DeliveryCount: U32(6), LinkCredit: U32(1), Echo: true})
	expectFlow(t, p, 6, 1, "answer to the link's echo")
	p.send(&Flow{NextIncomingID: U32(0), IncomingWindow: 100, NextOutgoingID: 1, OutgoingWindow: 100, Echo: true})
	fl := expectFlow(t, p, 6, 1, "answer to the session's echo")
	if fl.NextIncomingID == nil || *fl.NextIncomingID != 1 {
		t.Errorf("next-incoming-id %v, want 1", fl.NextIncomingID)
	}
	p.transfer(U32(1), false, false, message(t, "b", nil))
	if d := receive(t, r); idOf(d) != "b" {
		t.Fatalf("got %v, want b", idOf(d))
	}
}

// TestReceiverSmallServerLimits: a server whose open says max-frame-size
// 512 and channel-max 0 (only channel 0) is served: every frame the
// client writes fits 512 bytes, settlements included.
func TestReceiverSmallServerLimits(t *testing.T) {
	r, p, _ := credited(t, serverOpts{open: rawOpen{"server", nil, uint32(512), uint16(0)}}, ReceiverConfig{}, 40)
	var ds []*Delivery
	for id := range uint32(40) {
		p.transfer(U32(id), false, false, message(t, "m", nil))
		ds = append(ds, receive(t, r))
	}
	r.Hold()
	for i, d := range ds { // every other one accepted: 40 dispositions
		if i%2 == 0 {
			_ = r.Accept(d)
		} else {
			_ = r.Release(d)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		b, f, err := readRawFrame(p.br, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > 512 || f.Channel != 0 {
			t.Fatalf("a frame of %d bytes on channel %d; the server allows 512 on channel 0", len(b), f.Channel)
		}
	}
}

// TestReceiverSettlementAfterTheEnd: once the connection has ended, a
// settlement fails and writes nothing; a delivery of one connection is
// never settled on another (its delivery-id means another message there).
func TestReceiverSettlementAfterTheEnd(t *testing.T) {
	r1, p1, cc1 := credited(t, serverOpts{}, ReceiverConfig{}, 1)
	p1.transfer(U32(0), false, false, message(t, "old", nil))
	d := receive(t, r1)
	p1.send(&Close{})
	<-r1.Done()
	before := cc1.writes.Load()
	if err := r1.Accept(d); err == nil {
		t.Error("Accept after the connection ended: no error")
	}
	r1.Hold()
	if err := r1.Release(d); err == nil {
		t.Error("Release after the connection ended: no error")
	}
	_ = r1.Flush()
	if n := cc1.writes.Load() - before; n != 0 {
		t.Errorf("%d socket writes after the end", n)
	}

	r2, p2, cc2 := credited(t, serverOpts{}, ReceiverConfig{}, 1)
	p2.transfer(U32(0), false, false, message(t, "new", nil))
	receive(t, r2)
	before = cc2.writes.Load()
	if err := r2.Accept(d); err == nil || !strings.Contains(err.Error(), "another connection") {
		t.Errorf("Accept of the old connection's delivery 0 on the new one: %v, want an error naming another connection", err)
	}
	if n := cc2.writes.Load() - before; n != 0 {
		t.Errorf("%d socket writes for another connection's delivery", n)
	}
}

// TestReceiverCloseLeavesNothingRunning: Close while Receive waits ends
// Receive with an error; a second Close and a Flush after it return at
// once; no goroutine of the client is left.
func TestReceiverCloseLeavesNothingRunning(t *testing.T) {
	r, p, _, err := startPair(t, serverOpts{idle: 60000}, ReceiverConfig{IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := r.Receive(context.Background())
		got <- err
	}()
	go func() { // the server answers the detach, end and close
		for {
			f, err := ReadFrame(p.br, 1<<20)
			if err != nil {
				return
			}
			if _, ok := f.Body.(*Close); ok {
				p.send(&Close{})
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testLimit)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-got; err == nil {
		t.Error("Receive waiting across Close: no error")
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_ = r.Flush()
	waitNoGoroutine(t, "amqp10.(*Receiver)")
}

// waitNoGoroutine waits until no goroutine's stack names fn.
func waitNoGoroutine(t *testing.T, fn string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var stacks string
	waitfor.Until(t, "no goroutine of "+fn, testLimit, func() bool {
		stacks = string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, fn)
	}, func() string { return "a goroutine of " + fn + " is still running:\n" + stacks })
}

// TestReceiverMultiFrameEdges: a delivery-id repeated on a continuation
// is allowed; settled on the last frame only makes the delivery settled
// (nothing is sent for it); a delivery aborted on its first frame gives
// its credit back and the next delivery comes whole.
func TestReceiverMultiFrameEdges(t *testing.T) {
	r, p, cc := credited(t, serverOpts{}, ReceiverConfig{}, 3)
	whole := message(t, "split", []byte(strings.Repeat("z", 100)))
	p.transfer(U32(0), true, false, whole[:50])
	b, err := AppendFrame(nil, FrameAMQP, 0, &Transfer{Handle: 3, DeliveryID: U32(0), Settled: true}, whole[50:])
	if err != nil {
		t.Fatal(err)
	}
	p.raw(b)
	p.transfer(U32(1), true, true, nil) // aborted at once
	p.transfer(U32(2), false, false, message(t, "after", nil))
	d := receive(t, r)
	if idOf(d) != "split" || !d.Settled || len(d.Data[0]) != 100 {
		t.Fatalf("got %v settled %v, want the whole split message, settled", idOf(d), d.Settled)
	}
	expectFlow(t, p, 2, 2, "credit of the aborted delivery given back")
	before := cc.writes.Load()
	if err := r.Accept(d); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load() - before; n != 0 {
		t.Errorf("%d writes settling a delivery the server settled", n)
	}
	if d := receive(t, r); idOf(d) != "after" || d.ID != 2 {
		t.Fatalf("got %v id %d, want after id 2", idOf(d), d.ID)
	}
}

// TestReceiverDeliveriesOwnTheirBytes: a delivery's body and properties
// stay as they came while the reader goes on reading frames into its
// reused buffers (a single-frame and a multi-frame delivery, then others
// of the same sizes).
func TestReceiverDeliveriesOwnTheirBytes(t *testing.T) {
	r, p, _ := credited(t, serverOpts{}, ReceiverConfig{}, 4)
	body := func(c string) []byte { return []byte(strings.Repeat(c, 300)) }
	a, b := message(t, "aaaa", body("a")), message(t, "bbbb", body("b"))
	c, d := message(t, "cccc", body("c")), message(t, "dddd", body("d"))
	p.transfer(U32(0), false, false, a)
	p.transfer(U32(1), true, false, b[:100])
	p.transfer(nil, false, false, b[100:])
	p.transfer(U32(2), false, false, c)
	p.transfer(U32(3), true, false, d[:100])
	p.transfer(nil, false, false, d[100:])
	// The echo's answer comes after the reader has taken every frame before.
	p.send(&Flow{NextIncomingID: U32(0), IncomingWindow: 100, NextOutgoingID: 6, OutgoingWindow: 100, Echo: true})
	expectFlow(t, p, 4, 0, "echo after the four deliveries")
	for _, want := range []string{"a", "b", "c", "d"} {
		got := receive(t, r)
		if idOf(got) != strings.Repeat(want, 4) || string(got.Data[0]) != string(body(want)) {
			t.Errorf("delivery %d: messageId %v, body %.20q...; want %s", got.ID, idOf(got), got.Data[0], strings.Repeat(want, 4))
		}
	}
}

// TestReceiverEverySASLOutcomeIsTyped: every refusing outcome code (auth,
// sys, sys-perm, sys-temp), with or without the server's text, is a
// *SASLError with that code; nothing is left open.
func TestReceiverEverySASLOutcomeIsTyped(t *testing.T) {
	for code := uint8(1); code <= 4; code++ {
		for _, data := range []string{"", "why"} {
			r, _, _, err := startPair(t, serverOpts{saslCode: code, saslData: data}, ReceiverConfig{IdleTimeout: 30 * time.Second})
			var se *SASLError
			if r != nil || !errors.As(err, &se) || se.Code != code || string(se.AdditionalData) != data {
				t.Errorf("code %d data %q: receiver %v, err %v; want a SASLError with both", code, data, r != nil, err)
			}
			// The text ends with the server's text, or with the code's
			// meaning when there is none (RabbitMQ's refusal): never ": ".
			if err != nil && (strings.HasSuffix(err.Error(), ": ") || data != "" && !strings.HasSuffix(err.Error(), "): "+data)) {
				t.Errorf("code %d data %q: error text %q", code, data, err)
			}
		}
	}
}

// TestReceiverMalformedMessageIsADelivery: a message whose sections do not
// decode (a data section holding a string; an application-property key that
// is not a string; a multi-frame one out of order; a truncated binary)
// comes as a delivery with the reason and its bytes, to be dead-lettered
// and settled, and the connection goes on: ending it would have the server
// push the same message again, for ever. Strings that are not UTF-8 and
// symbols that are not ASCII are no such reason: they are taken as their
// bytes, as go-amqp took them (this used to refuse the whole message).
func TestReceiverMalformedMessageIsADelivery(t *testing.T) {
	r, p, _ := credited(t, serverOpts{}, ReceiverConfig{}, 6)
	badSection := []byte{0x00, 0x53, 0x75, 0xa1, 1, 'x'}
	intKey := []byte{0x00, 0x53, 0x74, 0xc1, 4, 2, 0x54, 1, 0x40}                 // application-properties {1: null}
	outOfOrder := append(message(t, "m", []byte("body")), 0x00, 0x53, 0x70, 0x45) // a header after the data
	truncated := []byte{0x00, 0x53, 0x75, 0xa0, 5, 'x'}                           // a binary of 5 bytes holding 1
	oddText, err := AppendMessage(nil, &Message{MessageAnnotations: Map{{Symbol("x-\xe9"), "v\xff"}},
		Properties: []any{"id\xff"}, ApplicationProperties: Map{{"messageId", "odd"}, {"kind", Symbol("caf\xe9")},
			{"note", "\xff\xfe"}}, Data: [][]byte{[]byte("odd body")}})
	if err != nil {
		t.Fatal(err)
	}
	p.transfer(U32(0), false, false, badSection)
	p.transfer(U32(1), false, false, intKey)
	p.transfer(U32(2), true, false, outOfOrder[:5])
	p.transfer(nil, false, false, outOfOrder[5:])
	p.transfer(U32(3), false, false, truncated)
	p.transfer(U32(4), false, false, oddText)
	p.transfer(U32(5), false, false, message(t, "good", nil))
	for i, tc := range []struct {
		raw  []byte
		want string
	}{{badSection, "message section 0x75"}, {intKey, "key 1 is a int"}, {outOfOrder, "out of order"}, {truncated, "needs 5 bytes"}} {
		d := receive(t, r)
		if d.ID != uint32(i) || d.Malformed == nil || !strings.Contains(d.Malformed.Error(), tc.want) ||
			!strings.Contains(d.Malformed.Error(), fmt.Sprintf("delivery %d:", i)) || string(d.Raw) != string(tc.raw) {
			t.Errorf("delivery %d: malformed %v, raw %x; want the reason (%q) and the bytes %x", d.ID, d.Malformed, d.Raw, tc.want, tc.raw)
		}
		if err := r.Accept(d); err != nil {
			t.Errorf("accept delivery %d: %v", d.ID, err)
		}
	}
	d := receive(t, r)
	kind, _ := d.Property("kind")
	note, _ := d.Property("note")
	if d.Malformed != nil || idOf(d) != "odd" || kind != Symbol("caf\xe9") || note != "\xff\xfe" ||
		len(d.Properties) != 1 || d.Properties[0] != "id\xff" || len(d.MessageAnnotations) != 1 ||
		d.MessageAnnotations[0] != (KV{Symbol("x-\xe9"), "v\xff"}) || string(d.Data[0]) != "odd body" {
		t.Errorf("odd text: malformed %v, message %+v; want every string and symbol as its bytes", d.Malformed, d.Message)
	}
	if err := r.Accept(d); err != nil {
		t.Errorf("accept the odd text one: %v", err)
	}
	if d := receive(t, r); idOf(d) != "good" || d.Malformed != nil {
		t.Errorf("after the malformed ones: %v (%v), want good", idOf(d), d.Malformed)
	}
	for range 5 {
		if ds, ok := p.nextNonEmpty().Body.(*Disposition); !ok || !ds.Settled {
			t.Errorf("want a settled disposition for each malformed delivery and the odd one, got %+v", ds)
		}
	}
	select {
	case <-r.Done():
		t.Errorf("the connection ended: %v", r.Err())
	default:
	}
}

// TestReceiverNeverStallsAStrictServer: a server that sends only while the
// session's incoming window the client last announced (next-incoming-id +
// incoming-window - its next-outgoing-id) is open, and otherwise waits for
// the client's next flow, delivers everything the credit allows: 3-frame
// messages, so frames and deliveries count apart, across several windows.
func TestReceiverNeverStallsAStrictServer(t *testing.T) {
	const n, frames = 4000, 3
	r, p, _ := credited(t, serverOpts{}, ReceiverConfig{Prefetch: n}, n)
	m := message(t, "m", []byte(strings.Repeat("w", 30)))
	cut := len(m) / frames
	go func() {
		// The server's next-outgoing-id, and where the window ends: the
		// credit's flow said next-incoming-id 0 and the whole window.
		next, limit := uint32(0), uint32(incomingWindow)
		open := func(f Frame) {
			if fl, ok := f.Body.(*Flow); ok && fl.NextIncomingID != nil {
				limit = *fl.NextIncomingID + fl.IncomingWindow
			}
		}
		for id := range uint32(n) {
			for i := range frames {
				for int32(limit-next) <= 0 { // closed: wait for a flow that opens it
					f, err := ReadFrame(p.br, 1<<20)
					if err != nil {
						return
					}
					open(f)
				}
				part, more := m[i*cut:(i+1)*cut], i < frames-1
				if !more {
					part = m[i*cut:]
				}
				var did *uint32
				if i == 0 {
					did = U32(id)
				}
				p.transfer(did, more, false, part)
				next++
			}
		}
	}()
	for i := range n {
		d := receive(t, r)
		if d.ID != uint32(i) || idOf(d) != "m" {
			t.Fatalf("delivery %d: id %d, messageId %v", i, d.ID, idOf(d))
		}
	}
}

// TestReceiverOversizeMessageIsADelivery: a message larger than
// MaxMessageSize is read to its end without being kept and comes as a
// malformed delivery, taking its credit like any other; an abort after an
// oversize start forgets it; the next message comes whole on the same
// connection.
func TestReceiverOversizeMessageIsADelivery(t *testing.T) {
	r, p, _ := credited(t, serverOpts{}, ReceiverConfig{MaxMessageSize: 1000}, 4)
	big := message(t, "big", []byte(strings.Repeat("b", 1500)))
	p.transfer(U32(0), true, false, big[:600])
	p.transfer(nil, true, false, big[600:1200])
	p.transfer(nil, false, false, big[1200:])
	p.transfer(U32(1), true, false, big[:600])
	p.transfer(nil, true, false, big[600:1200])
	p.transfer(nil, false, true, nil) // aborted
	fits := message(t, "fits", []byte(strings.Repeat("f", 800)))
	p.transfer(U32(2), true, false, fits[:500])
	p.transfer(nil, false, false, fits[500:])
	d := receive(t, r)
	if d.ID != 0 || d.Malformed == nil || !strings.Contains(d.Malformed.Error(), "delivery 0") ||
		!strings.Contains(d.Malformed.Error(), "larger than 1000 bytes") || d.Raw != nil {
		t.Errorf("oversize delivery: id %d, malformed %v, %d raw bytes; want id 0, larger than 1000 bytes, none kept", d.ID, d.Malformed, len(d.Raw))
	}
	if err := r.Accept(d); err != nil {
		t.Fatal(err)
	}
	var flow, settled bool // the reader's give-back and the Accept, in either order
	for range 2 {
		switch f := p.nextNonEmpty().Body.(type) {
		case *Flow:
			flow = *f.DeliveryCount == 2 && *f.LinkCredit == 3
		case *Disposition:
			settled = f.First == 0 && f.Settled
		}
	}
	if !flow || !settled {
		t.Errorf("flow giving the aborted delivery's credit back (count 2, credit 3): %v; oversize delivery settled: %v", flow, settled)
	}
	if d := receive(t, r); d.ID != 2 || idOf(d) != "fits" || d.Malformed != nil || len(d.Data[0]) != 800 {
		t.Errorf("after it: id %d, %v (%v), want fits whole", d.ID, idOf(d), d.Malformed)
	}
}

// FuzzReceiverTransfers drives the reader's transfer state machine (first
// frame, continuation, abort, settled, oversize) with any sequence of
// frames: it never panics, keeps at most MaxMessageSize bytes of a
// message, refuses only what the specification forbids (no delivery-id on
// a first frame, another delivery-id on a continuation), and hands over
// every completed delivery with the delivery-id of its first frame.
func FuzzReceiverTransfers(f *testing.F) {
	f.Add([]byte{1, 0, 40, 0, 0, 10})
	f.Add([]byte{3, 0, 200, 2, 0, 200, 2, 0, 200, 0, 0, 1, 1, 1, 5})
	f.Add([]byte{3, 7, 10, 4, 0, 0, 9, 8, 30})
	msg, err := AppendMessage(nil, &Message{ApplicationProperties: Map{{"messageId", "x"}}, Data: [][]byte{make([]byte, 250)}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		go func() { _, _ = io.Copy(io.Discard, c2) }()
		const limit = 300
		r := &Receiver{nc: c1, cfg: ReceiverConfig{MaxMessageSize: limit, WriteTimeout: testLimit},
			msgs: make(chan *Delivery, len(script)+1), stop: make(chan struct{}), done: make(chan struct{}),
			windowLeft: incomingWindow, handle: 3}
		var firstID uint32
		inDelivery := false
		for i := 0; i+2 < len(script); i += 3 {
			flags, id, n := script[i], uint32(script[i+1]), int(script[i+2])
			tr := &Transfer{Handle: 3, More: flags&2 != 0, Aborted: flags&4 != 0, Settled: flags&8 != 0}
			if flags&1 != 0 {
				tr.DeliveryID = &id
			}
			start := int(id) % len(msg)
			payload := msg[start:min(start+n, len(msg))]
			err := r.transfer(tr, payload)
			switch {
			case err != nil:
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("frame %d: error %v is not ErrMalformed", i/3, err)
				}
				forbidden := (!inDelivery && tr.DeliveryID == nil) || (inDelivery && tr.DeliveryID != nil && id != firstID)
				if !forbidden {
					t.Fatalf("frame %d refused, but it is allowed: %v", i/3, err)
				}
				return // the connection would end here
			case !inDelivery && tr.DeliveryID == nil:
				t.Fatalf("frame %d: a first frame without delivery-id taken", i/3)
			case inDelivery && tr.DeliveryID != nil && id != firstID:
				t.Fatalf("frame %d: a continuation with another delivery-id taken", i/3)
			}
			if !inDelivery {
				firstID = id
			}
			inDelivery = tr.More && !tr.Aborted
			if len(r.partial) > limit {
				t.Fatalf("frame %d: %d bytes kept, more than %d", i/3, len(r.partial), limit)
			}
			select {
			case d := <-r.msgs:
				if d.ID != firstID || inDelivery {
					t.Fatalf("frame %d: delivery %d handed over (first frame's id %d, more %v)", i/3, d.ID, firstID, inDelivery)
				}
				if d.Malformed == nil && len(d.Raw) != 0 || len(d.Raw) > limit {
					t.Fatalf("frame %d: delivery %d with %d raw bytes (malformed %v)", i/3, d.ID, len(d.Raw), d.Malformed)
				}
			default:
			}
		}
	})
}

// TestReceiverEndsWithoutAttach: a Receiver that logged in but never
// attached (Dial, then the caller gives up) is ended by Abort and by Close
// at once: the socket is closed and neither waits for a reader that never
// started.
func TestReceiverEndsWithoutAttach(t *testing.T) {
	for _, end := range []string{"abort", "close"} {
		t.Run(end, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			closed := make(chan error, 1)
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					closed <- err
					return
				}
				defer nc.Close()
				p := &peer{t: t, nc: nc, br: bufio.NewReader(nc)}
				_ = nc.SetDeadline(time.Now().Add(testLimit))
				var h [8]byte
				_, _ = io.ReadFull(p.br, h[:])
				p.raw(HeaderSASL[:])
				p.sendType(FrameSASL, &SASLMechanisms{Mechanisms: []Symbol{"PLAIN"}})
				p.next()
				p.sendType(FrameSASL, &SASLOutcome{Code: SASLOK})
				_, _ = io.ReadFull(p.br, h[:])
				p.raw(HeaderAMQP[:])
				p.next()
				p.send(&Open{ContainerID: "server"})
				_, err = ReadFrame(p.br, 1<<20) // the client's end: EOF
				closed <- err
			}()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testLimit)
			defer cancel()
			r, err := Dial(ctx, nc, ReceiverConfig{ContainerID: "edge-1", IdleTimeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if end == "abort" {
				r.Abort()
			} else if err := r.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := <-closed; !errors.Is(err, io.EOF) {
				t.Errorf("the server read %v, want the socket closed (EOF)", err)
			}
		})
	}
}

// TestReceiverBeatsWithinItsOwnIdleTimeout: the client also sends a frame
// within half the idle-time-out its own open carries, whatever the server
// announced (none, or a longer one): the platform closes a connection that
// carried no frame for the client's idle-time-out (iot-subscription
// protocol: "if no frame is seen on the connection for that long the
// platform closes it"), and a quiet consumer group has no other traffic.
func TestReceiverBeatsWithinItsOwnIdleTimeout(t *testing.T) {
	for _, serverIdle := range []uint32{0, 600000} {
		t.Run(fmt.Sprint(serverIdle), func(t *testing.T) {
			r, p, _, err := startPair(t, serverOpts{idle: serverIdle, clientIdle: 200}, ReceiverConfig{IdleTimeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			for empty := 0; empty < 3; { // nothing else is written: no credit, no settlement
				if f := p.next(); f.Body == nil {
					empty++
				}
			}
			r.Abort()
		})
	}
}
