package amqp10

import "fmt"

// parseBody turns a decoded frame body into its performative.
func parseBody(typ byte, v any) (any, error) {
	d, ok := v.(Described)
	if !ok {
		return nil, fmt.Errorf("%w: frame body is a %T, not a described performative", ErrMalformed, v)
	}
	c, ok := code(d.Descriptor)
	if !ok {
		return nil, fmt.Errorf("%w: unknown performative descriptor %v", ErrMalformed, d.Descriptor)
	}
	sasl := c >= descSASLMechanisms && c <= descSASLOutcome
	if sasl != (typ == FrameSASL) {
		return nil, fmt.Errorf("%w: descriptor 0x%02x in a frame of type %d", ErrMalformed, c, typ)
	}
	l, ok := d.Value.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: performative 0x%02x is a %T, not a list", ErrMalformed, c, d.Value)
	}
	f := &fields{l: l}
	var p any
	switch c {
	case descOpen:
		f.name = "open"
		o := &Open{ContainerID: f.str(0, "container-id", true), Hostname: f.str(1, "hostname", false),
			MaxFrameSize: f.uint(2, "max-frame-size", 0), ChannelMax: f.ushort(3, "channel-max", 0),
			IdleTimeout: f.uint(4, "idle-time-out", 0), OfferedCaps: f.symbols(7, "offered-capabilities"),
			DesiredCaps: f.symbols(8, "desired-capabilities"), Properties: f.fmap(9, "properties")}
		p = o
	case descBegin:
		f.name = "begin"
		b := &Begin{NextOutgoingID: f.uint(1, "next-outgoing-id", 0), IncomingWindow: f.uint(2, "incoming-window", 0),
			OutgoingWindow: f.uint(3, "outgoing-window", 0), HandleMax: f.optUint(4, "handle-max")}
		if f.at(0) != nil {
			rc := f.ushort(0, "remote-channel", 0)
			b.RemoteChannel = &rc
		}
		f.required(1, "next-outgoing-id")
		f.required(2, "incoming-window")
		f.required(3, "outgoing-window")
		p = b
	case descAttach:
		f.name = "attach"
		a := &Attach{Name: f.str(0, "name", true), Handle: f.uint(1, "handle", 0), Role: f.bool(2, "role"),
			SndSettleMode: f.ubyte(3, "snd-settle-mode", SndMixed), RcvSettleMode: f.ubyte(4, "rcv-settle-mode", 0),
			Source: f.terminus(5, "source", descSource), Target: f.terminus(6, "target", descTarget),
			InitialDeliveryCount: f.optUint(9, "initial-delivery-count"), MaxMessageSize: f.ulong(10, "max-message-size"),
			Properties: f.fmap(13, "properties")}
		f.required(1, "handle")
		f.required(2, "role")
		p = a
	case descFlow:
		f.name = "flow"
		p = &Flow{NextIncomingID: f.optUint(0, "next-incoming-id"), IncomingWindow: f.uint(1, "incoming-window", 0),
			NextOutgoingID: f.uint(2, "next-outgoing-id", 0), OutgoingWindow: f.uint(3, "outgoing-window", 0),
			Handle: f.optUint(4, "handle"), DeliveryCount: f.optUint(5, "delivery-count"),
			LinkCredit: f.optUint(6, "link-credit"), Available: f.optUint(7, "available"),
			Drain: f.bool(8, "drain"), Echo: f.bool(9, "echo")}
		f.required(1, "incoming-window")
		f.required(2, "next-outgoing-id")
		f.required(3, "outgoing-window")
	case descTransfer:
		f.name = "transfer"
		p = &Transfer{Handle: f.uint(0, "handle", 0), DeliveryID: f.optUint(1, "delivery-id"),
			DeliveryTag: f.binary(2, "delivery-tag"), MessageFormat: f.optUint(3, "message-format"),
			Settled: f.bool(4, "settled"), More: f.bool(5, "more"), State: f.outcome(7, "state"),
			Aborted: f.bool(9, "aborted")}
		f.required(0, "handle")
	case descDisposition:
		f.name = "disposition"
		p = &Disposition{Role: f.bool(0, "role"), First: f.uint(1, "first", 0), Last: f.optUint(2, "last"),
			Settled: f.bool(3, "settled"), State: f.outcome(4, "state")}
		f.required(0, "role")
		f.required(1, "first")
	case descDetach:
		f.name = "detach"
		p = &Detach{Handle: f.uint(0, "handle", 0), Closed: f.bool(1, "closed"), Error: f.error(2, "error")}
		f.required(0, "handle")
	case descEnd:
		f.name = "end"
		p = &End{Error: f.error(0, "error")}
	case descClose:
		f.name = "close"
		p = &Close{Error: f.error(0, "error")}
	case descSASLMechanisms:
		f.name = "sasl-mechanisms"
		m := &SASLMechanisms{}
		switch v := f.at(0).(type) {
		case Symbol:
			m.Mechanisms = []Symbol{v}
		default:
			for _, s := range f.symbols(0, "sasl-server-mechanisms") {
				m.Mechanisms = append(m.Mechanisms, s.(Symbol))
			}
		}
		p = m
	case descSASLInit:
		f.name = "sasl-init"
		p = &SASLInit{Mechanism: f.symbol(0, "mechanism"), InitialResponse: f.binary(1, "initial-response"),
			Hostname: f.str(2, "hostname", false)}
		f.required(0, "mechanism")
	case descSASLOutcome:
		f.name = "sasl-outcome"
		p = &SASLOutcome{Code: f.ubyte(0, "code", 0), AdditionalData: f.binary(1, "additional-data")}
		f.required(0, "code")
	default:
		return nil, fmt.Errorf("%w: performative 0x%02x is not supported here", ErrMalformed, c)
	}
	if f.err != nil {
		return nil, f.err
	}
	return p, nil
}

// fields reads the field list of a described list, remembering the first
// problem, which names the performative and the field.
type fields struct {
	name string
	l    []any
	err  error
}

func (f *fields) at(i int) any {
	if i < len(f.l) {
		return f.l[i]
	}
	return nil
}

func (f *fields) fail(i int, field string, v any, want string) {
	if f.err == nil {
		f.err = fmt.Errorf("%w: %s field %d (%s) is %T, want %s", ErrMalformed, f.name, i, field, v, want)
	}
}

func (f *fields) required(i int, field string) {
	if f.at(i) == nil && f.err == nil {
		f.err = fmt.Errorf("%w: %s is missing the mandatory field %s", ErrMalformed, f.name, field)
	}
}

// typed returns field i as a T: def when it is absent (null), and def with
// the problem recorded when it holds another type (want names the type the
// specification gives the field).
func typed[T any](f *fields, i int, field, want string, def T) T {
	switch v := f.at(i).(type) {
	case nil:
		return def
	case T:
		return v
	default:
		f.fail(i, field, v, want)
	}
	return def
}

func (f *fields) str(i int, field string, mandatory bool) string {
	if mandatory {
		f.required(i, field)
	}
	return typed(f, i, field, "string", "")
}

func (f *fields) symbol(i int, field string) Symbol {
	return typed(f, i, field, "symbol", Symbol(""))
}

// uint, ushort and ulong also take a narrower unsigned type.
func (f *fields) uint(i int, field string, def uint32) uint32 {
	switch v := f.at(i).(type) {
	case uint16:
		return uint32(v)
	case uint8:
		return uint32(v)
	}
	return typed(f, i, field, "uint", def)
}

func (f *fields) optUint(i int, field string) *uint32 {
	if f.at(i) == nil {
		return nil
	}
	v := f.uint(i, field, 0)
	return &v
}

func (f *fields) ushort(i int, field string, def uint16) uint16 {
	if v, ok := f.at(i).(uint8); ok {
		return uint16(v)
	}
	return typed(f, i, field, "ushort", def)
}

func (f *fields) ubyte(i int, field string, def uint8) uint8 {
	return typed(f, i, field, "ubyte", def)
}

func (f *fields) ulong(i int, field string) uint64 {
	if v, ok := f.at(i).(uint32); ok {
		return uint64(v)
	}
	return typed(f, i, field, "ulong", uint64(0))
}

func (f *fields) bool(i int, field string) bool {
	return typed(f, i, field, "boolean", false)
}

func (f *fields) binary(i int, field string) []byte {
	return typed(f, i, field, "binary", []byte(nil))
}

func (f *fields) symbols(i int, field string) Array {
	switch v := f.at(i).(type) {
	case Symbol:
		return Array{v}
	case Array:
		for _, s := range v {
			if _, ok := s.(Symbol); !ok {
				f.fail(i, field, s, "an array of symbols")
				return nil
			}
		}
	}
	return typed(f, i, field, "an array of symbols", Array(nil))
}

func (f *fields) fmap(i int, field string) Map {
	return typed(f, i, field, "map", Map(nil))
}

func (f *fields) described(i int, field string, want uint64) ([]any, bool) {
	v := f.at(i)
	if v == nil {
		return nil, false
	}
	d, ok := v.(Described)
	if ok {
		if c, known := code(d.Descriptor); known && c == want {
			if l, ok := d.Value.([]any); ok {
				return l, true
			}
		}
	}
	f.fail(i, field, v, fmt.Sprintf("a described list 0x%02x", want))
	return nil, false
}

func (f *fields) terminus(i int, field string, desc uint64) *Terminus {
	l, ok := f.described(i, field, desc)
	if !ok {
		return nil
	}
	sub := &fields{name: f.name + " " + field, l: l}
	t := &Terminus{Fields: l, Dynamic: sub.bool(4, "dynamic")}
	switch a := sub.at(0).(type) {
	case nil:
	case string:
		t.Address = a
	case Symbol:
		t.Address = string(a)
	default:
		sub.fail(0, "address", a, "string")
	}
	if sub.err != nil && f.err == nil {
		f.err = sub.err
	}
	return t
}

func (f *fields) error(i int, field string) *Error {
	l, ok := f.described(i, field, descError)
	if !ok {
		return nil
	}
	sub := &fields{name: f.name + " error", l: l}
	e := &Error{Condition: sub.symbol(0, "condition"), Description: sub.str(1, "description", false),
		Info: sub.fmap(2, "info")}
	sub.required(0, "condition")
	if sub.err != nil && f.err == nil {
		f.err = sub.err
	}
	return e
}

func (f *fields) outcome(i int, field string) any {
	v := f.at(i)
	if v == nil {
		return nil
	}
	d, ok := v.(Described)
	if !ok {
		f.fail(i, field, v, "a delivery state")
		return nil
	}
	c, _ := code(d.Descriptor)
	l, ok := d.Value.([]any)
	if !ok {
		f.fail(i, field, d.Value, "a delivery state list")
		return nil
	}
	sub := &fields{name: f.name + " " + field, l: l}
	var out any
	switch c {
	case descAccepted:
		out = &Accepted{}
	case descReleased:
		out = &Released{}
	case descRejected:
		out = &Rejected{Error: sub.error(0, "error")}
	case descModified:
		out = &Modified{DeliveryFailed: sub.bool(0, "delivery-failed"), UndeliverableHere: sub.bool(1, "undeliverable-here")}
	case descReceived:
		out = &Received{SectionNumber: sub.uint(0, "section-number", 0), SectionOffset: sub.ulong(1, "section-offset")}
	default:
		f.fail(i, field, v, "accepted, rejected, released, modified or received")
		return nil
	}
	if sub.err != nil && f.err == nil {
		f.err = sub.err
	}
	return out
}
