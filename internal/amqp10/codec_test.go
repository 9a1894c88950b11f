package amqp10

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestValueRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 300)
	values := []any{
		nil, true, false,
		uint8(0), uint8(255), uint16(0), uint16(65535),
		uint32(0), uint32(7), uint32(255), uint32(256), uint32(math.MaxUint32),
		uint64(0), uint64(200), uint64(math.MaxUint64),
		int8(-128), int16(-300), int32(-1), int32(127), int32(-129), int32(math.MaxInt32),
		int64(-5), int64(math.MinInt64), int64(1700000000123),
		float32(1.5), float64(-2.25), Char('é'),
		time.UnixMilli(1700000000123).UTC(),
		UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		[]byte{}, []byte{0, 0xff, 0x80}, bytes.Repeat([]byte{7}, 1000),
		"", "héllo", long, Symbol("amqp:accepted:list"), Symbol(long),
		[]any{}, []any{uint32(1), "a", nil, []any{true}},
		make([]any, 300),
		Map{}, Map{{"topic", "/a/b"}, {"generateTime", int64(1700000000123)}, {uint64(3), []byte{1}}},
		Array{Symbol("PLAIN"), Symbol("ANONYMOUS")},
		Array{uint32(1), uint32(0), uint32(70000)},
		Array{int64(-1), int64(1 << 40)},
		Array{"x", long},
		Array{true, false},
		Array{[]any{}, []any{uint8(1)}},
		Described{uint64(0x24), []any{}},
		Described{Symbol("com:x"), Map{{"k", "v"}}},
	}
	for _, v := range values {
		b, err := Append(nil, v)
		if err != nil {
			t.Fatalf("Append(%#v): %v", v, err)
		}
		got, n, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Append(%#v)) = %v", v, err)
		}
		if n != len(b) {
			t.Errorf("Decode(%#v) took %d of %d bytes", v, n, len(b))
		}
		want := v
		if a, ok := v.(Array); ok && len(a) > 0 {
			if _, isList := a[0].([]any); isList {
				// lists in arrays come back as lists, equal
				want = a
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip of %#v gave %#v", v, got)
		}
	}
}

func TestAppendRefusesUnknownTypesAndMixedArrays(t *testing.T) {
	if _, err := Append(nil, struct{}{}); err == nil {
		t.Error("Append(struct{}{}) succeeded")
	}
	if _, err := Append(nil, Array{Symbol("a"), "b"}); err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("mixed array: err = %v", err)
	}
	if _, err := AppendMessage(nil, &Message{ApplicationProperties: Map{{uint32(1), "x"}}}); err == nil {
		t.Error("a non-string application property key was encoded")
	}
}

func mustFrame(t *testing.T, typ byte, ch uint16, p Performative, payload []byte) []byte {
	t.Helper()
	b, err := AppendFrame(nil, typ, ch, p, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPerformativeRoundTrip(t *testing.T) {
	rc := uint16(3)
	perfs := []Performative{
		&Open{ContainerID: "c1", Hostname: "localhost", MaxFrameSize: 65536, ChannelMax: 7, IdleTimeout: 60000,
			OfferedCaps: Array{Symbol("ANONYMOUS-RELAY")}, Properties: Map{{Symbol("product"), "x"}}},
		&Open{ContainerID: "c2"},
		&Begin{RemoteChannel: &rc, NextOutgoingID: 1, IncomingWindow: 5000, OutgoingWindow: 100, HandleMax: U32(9)},
		&Begin{NextOutgoingID: 0, IncomingWindow: 0, OutgoingWindow: 0},
		&Attach{Name: "r", Handle: 1, Role: RoleReceiver, SndSettleMode: SndMixed,
			Source: &Terminus{Address: "default", Fields: []any{"default", uint32(0)}}, Target: &Terminus{},
			InitialDeliveryCount: U32(0), MaxMessageSize: 1 << 20},
		&Attach{Name: "s", Handle: 0, Role: RoleSender, SndSettleMode: SndUnsettled, RcvSettleMode: 1},
		&Flow{NextIncomingID: U32(1), IncomingWindow: 10, NextOutgoingID: 2, OutgoingWindow: 3,
			Handle: U32(0), DeliveryCount: U32(4), LinkCredit: U32(100), Drain: true, Echo: true},
		&Flow{IncomingWindow: 10, NextOutgoingID: 2, OutgoingWindow: 3},
		&Transfer{Handle: 0, DeliveryID: U32(7), DeliveryTag: []byte{0, 1}, MessageFormat: U32(0), More: true},
		&Transfer{Handle: 0, Settled: true, State: &Accepted{}, Aborted: true},
		&Disposition{Role: RoleReceiver, First: 1, Last: U32(5), Settled: true, State: &Accepted{}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Released{}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Rejected{Error: &Error{Condition: ErrDecode, Description: "bad"}}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Modified{DeliveryFailed: true, UndeliverableHere: true}},
		&Disposition{Role: RoleReceiver, First: 1, State: &Received{SectionNumber: 1, SectionOffset: 2}},
		&Detach{Handle: 2, Closed: true, Error: &Error{Condition: ErrNotAllowed, Description: "no", Info: Map{{Symbol("k"), int32(1)}}}},
		&End{}, &End{Error: &Error{Condition: ErrInternal}},
		&Close{}, &Close{Error: &Error{Condition: ErrConnectionForced, Description: "9602"}},
	}
	for _, p := range perfs {
		b := mustFrame(t, FrameAMQP, 5, p, nil)
		f, err := ReadFrame(bytes.NewReader(b), 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", Name(p), err)
		}
		if f.Channel != 5 || f.Type != FrameAMQP {
			t.Errorf("%s: channel %d type %d", Name(p), f.Channel, f.Type)
		}
		// Terminus.Fields is what was received: compare the address only.
		if a, ok := f.Body.(*Attach); ok {
			if a.Source != nil {
				a.Source.Fields = p.(*Attach).Source.Fields
			}
			if a.Target != nil {
				a.Target.Fields = p.(*Attach).Target.Fields
			}
		}
		if !reflect.DeepEqual(f.Body, p) {
			t.Errorf("%s round trip:\n got %#v\nwant %#v", Name(p), f.Body, p)
		}
	}
	for _, p := range []Performative{&SASLMechanisms{Mechanisms: []Symbol{"PLAIN", "ANONYMOUS"}},
		&SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p"), Hostname: "h"},
		&SASLOutcome{Code: SASLAuth}, &SASLOutcome{Code: SASLOK, AdditionalData: []byte("x")}} {
		f, err := ReadFrame(bytes.NewReader(mustFrame(t, FrameSASL, 0, p, nil)), 512)
		if err != nil {
			t.Fatalf("%s: %v", Name(p), err)
		}
		if !reflect.DeepEqual(f.Body, p) {
			t.Errorf("%s round trip:\n got %#v\nwant %#v", Name(p), f.Body, p)
		}
	}
}

func TestTransferPayloadAndEmptyFrame(t *testing.T) {
	m := &Message{ApplicationProperties: Map{{"topic", "/pk/dn/user/t"}, {"messageId", "123"},
		{"generateTime", int64(1700000000123)}}, Data: [][]byte{{0, 1, 2, 0xff}}}
	payload, err := AppendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	b := mustFrame(t, FrameAMQP, 0, &Transfer{Handle: 1, DeliveryID: U32(0), DeliveryTag: []byte{1}}, payload)
	b = append(b, 0, 0, 0, 8, 2, 0, 0, 0) // heart-beat
	r := bytes.NewReader(b)
	f, err := ReadFrame(r, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMessage(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("message round trip:\n got %#v\nwant %#v", got, m)
	}
	hb, err := ReadFrame(r, 1<<20)
	if err != nil || hb.Body != nil || hb.Payload != nil {
		t.Errorf("empty frame: %#v, %v", hb, err)
	}
	if _, err := ReadFrame(r, 1<<20); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
}

func TestMessageRoundTripAllSections(t *testing.T) {
	for _, m := range []*Message{
		{Header: []any{true}, DeliveryAnnotations: Map{{Symbol("x"), "y"}}, MessageAnnotations: Map{{Symbol("a"), int32(1)}},
			Properties: []any{"id-1"}, ApplicationProperties: Map{{"k", uint32(1)}},
			Sequence: [][]any{{"a"}, {uint8(1)}}, Footer: Map{{Symbol("f"), nil}}},
		{Value: "hello", HasValue: true},
		{Data: [][]byte{{}, {1}}},
	} {
		b, err := AppendMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("message round trip:\n got %#v\nwant %#v", got, m)
		}
	}
}

func TestMalformed(t *testing.T) {
	frame := func(doff, typ byte, body []byte) []byte {
		b := []byte{0, 0, 0, 0, doff, typ, 0, 0}
		b = append(b, body...)
		b[3] = byte(len(b))
		return b
	}
	open, _ := Append(nil, (&Open{ContainerID: "c"}).described())
	cases := map[string]struct {
		in   []byte
		want string
	}{
		"size below header":     {[]byte{0, 0, 0, 4, 2, 0, 0, 0}, "below the 8-byte header"},
		"size above max":        {[]byte{0, 0, 2, 1, 2, 0, 0, 0}, "exceeds the max-frame-size"},
		"data offset too small": {frame(1, 0, open), "data offset"},
		"data offset too big":   {frame(200, 0, open), "data offset"},
		"unknown frame type":    {frame(2, 7, open), "unknown frame type"},
		"cut short":             {frame(2, 0, open)[:12], "cut short"},
		"header cut short":      {[]byte{0, 0, 0}, "cut short"},
		"not described":         {frame(2, 0, []byte{codeNull}), "not a described performative"},
		"unknown descriptor":    {frame(2, 0, []byte{0, codeSmallUlong, 0x99, codeList0}), "not supported here"},
		"sasl in amqp frame":    {frame(2, 0, []byte{0, codeSmallUlong, 0x41, codeList0}), "in a frame of type"},
		"empty sasl frame":      {frame(2, 1, nil), "empty SASL frame"},
		"open without id":       {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList0}), "mandatory field container-id"},
		"open wrong type":       {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 3, 1, codeSmallUint, 1}), "want string"},
		"trailing bytes":        {frame(2, 0, append(append([]byte{}, open...), 1, 2)), "only a transfer carries a payload"},
		"list count too big":    {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 2, 200, codeNull}), "claims 200 items"},
		"list leaves bytes":     {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 3, 1, codeNull, codeNull}), "leaves 1 bytes unused"},
		"string length":         {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 3, 1, codeStr8, 9}), "needs 9 bytes"},
		"str32 length":          {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeStr32, 0xff, 0xff, 0xff, 0xff}), "exceeds the"},
		"bad utf8":              {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 4, 1, codeStr8, 1, 0xff}), "UTF-8"},
		"symbol not ASCII":      {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 4, 1, codeSym8, 1, 0xff}), "symbol is not ASCII"},
		"bad boolean":           {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeList8, 3, 1, codeBool, 2}), "boolean byte"},
		"unknown type code":     {frame(2, 0, []byte{0, codeSmallUlong, 0x10, 0x01}), "unknown type code"},
		"decimal":               {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeDecimal32, 1, 2, 3, 4}), "decimal"},
		"descriptor type":       {frame(2, 0, []byte{0, codeNull, codeList0}), "descriptor must be"},
		"odd map":               {frame(2, 0, []byte{0, codeSmallUlong, 0x10, codeMap8, 2, 1, codeNull}), "odd number"},
	}
	for name, c := range cases {
		_, err := ReadFrame(bytes.NewReader(c.in), 512)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, c.want)
		}
	}
	// Deep nesting is refused, not recursed into.
	deep := bytes.Repeat([]byte{codeDescribed, codeSmallUlong, 1}, 100)
	if _, _, err := Decode(append(deep, codeNull)); err == nil || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep nesting: %v", err)
	}
	if _, err := ReadProtocolHeader(bytes.NewReader([]byte("HTTP/1.1"))); !errors.Is(err, ErrMalformed) {
		t.Errorf("HTTP header: %v", err)
	}
	for name, in := range map[string][]byte{
		"section out of order": append(mustAppend(Described{uint64(descData), []byte{1}}), mustAppend(Described{uint64(descApplicationProperties), Map{}})...),
		"two value sections":   append(mustAppend(Described{uint64(descAMQPValue), "a"}), mustAppend(Described{uint64(descAMQPValue), "b"})...),
		"data then value":      append(mustAppend(Described{uint64(descData), []byte{1}}), mustAppend(Described{uint64(descAMQPValue), "b"})...),
		"data not binary":      mustAppend(Described{uint64(descData), "text"}),
		"not a section":        mustAppend("x"),
		"property key":         mustAppend(Described{uint64(descApplicationProperties), Map{{uint32(1), "x"}}}),
	} {
		if _, err := DecodeMessage(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func mustAppend(v any) []byte {
	b, err := Append(nil, v)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzReadFrame: no input makes ReadFrame or DecodeMessage panic, and what
// decodes re-encodes to something that decodes to the same thing.
func FuzzReadFrame(f *testing.F) {
	f.Add(mustFrameF(&Open{ContainerID: "c", IdleTimeout: 60000, OfferedCaps: Array{Symbol("x")}}, nil))
	f.Add(mustFrameF(&Attach{Name: "r", Handle: 1, Role: RoleReceiver, Source: &Terminus{Address: "default"}}, nil))
	f.Add(mustFrameF(&Flow{IncomingWindow: 1, NextOutgoingID: 1, OutgoingWindow: 1, Handle: U32(0), LinkCredit: U32(10)}, nil))
	f.Add(mustFrameF(&Disposition{Role: RoleReceiver, First: 1, State: &Rejected{Error: &Error{Condition: "x"}}}, nil))
	msg, _ := AppendMessage(nil, &Message{ApplicationProperties: Map{{"topic", "/t"}, {"generateTime", int64(1)}}, Data: [][]byte{{1}}})
	f.Add(mustFrameF(&Transfer{Handle: 0, DeliveryID: U32(1), DeliveryTag: []byte{1}}, msg))
	f.Add([]byte{0, 0, 0, 8, 2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ReadFrame(bytes.NewReader(b), 1<<16)
		if err != nil {
			return
		}
		if fr.Payload != nil {
			if m, err := DecodeMessage(fr.Payload); err == nil {
				enc, err := AppendMessage(nil, m)
				if err != nil {
					t.Fatalf("re-encode message %#v: %v", m, err)
				}
				if _, err := DecodeMessage(enc); err != nil {
					t.Fatalf("re-encoded message does not decode: %v", err)
				}
			}
		}
		p, ok := fr.Body.(Performative)
		if !ok {
			return
		}
		enc, err := AppendFrame(nil, fr.Type, fr.Channel, p, fr.Payload)
		if err != nil {
			t.Fatalf("re-encode %s: %v", Name(p), err)
		}
		again, err := ReadFrame(bytes.NewReader(enc), math.MaxUint32)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", Name(p), err)
		}
		if Name(again.Body) != Name(p) {
			t.Fatalf("re-encoded %s decodes as %s", Name(p), Name(again.Body))
		}
	})
}

// FuzzDecode: any bytes decode without panicking, and a decoded value
// re-encodes and decodes to an equal value.
func FuzzDecode(f *testing.F) {
	for _, v := range []any{Map{{"a", int64(1)}}, Array{Symbol("x")}, []any{uint32(1), "s"}, Described{uint64(1), nil}} {
		f.Add(mustAppend(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, _, err := Decode(b)
		if err != nil {
			return
		}
		enc, err := Append(nil, v)
		if err != nil {
			return // e.g. an array of described values: decodable, not encodable here
		}
		again, _, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded %#v does not decode: %v", v, err)
		}
		if !equalValues(v, again) {
			t.Fatalf("round trip changed %#v into %#v", v, again)
		}
	})
}

// equalValues is DeepEqual that treats NaNs as equal.
func equalValues(a, b any) bool {
	ea, _ := Append(nil, a)
	eb, _ := Append(nil, b)
	return bytes.Equal(ea, eb)
}

func mustFrameF(p Performative, payload []byte) []byte {
	b, err := AppendFrame(nil, FrameAMQP, 0, p, payload)
	if err != nil {
		panic(err)
	}
	return b
}
