package amqp10

import (
	"fmt"
	"time"
)

// Descriptor codes (domain 0x00000000).
const (
	descOpen           = 0x10
	descBegin          = 0x11
	descAttach         = 0x12
	descFlow           = 0x13
	descTransfer       = 0x14
	descDisposition    = 0x15
	descDetach         = 0x16
	descEnd            = 0x17
	descClose          = 0x18
	descError          = 0x1d
	descReceived       = 0x23
	descAccepted       = 0x24
	descRejected       = 0x25
	descReleased       = 0x26
	descModified       = 0x27
	descSource         = 0x28
	descTarget         = 0x29
	descSASLMechanisms = 0x40
	descSASLInit       = 0x41
	descSASLChallenge  = 0x42
	descSASLResponse   = 0x43
	descSASLOutcome    = 0x44
)

// symbolic descriptor names, for peers that send them instead of codes.
var descNames = map[Symbol]uint64{
	"amqp:open:list": descOpen, "amqp:begin:list": descBegin, "amqp:attach:list": descAttach,
	"amqp:flow:list": descFlow, "amqp:transfer:list": descTransfer, "amqp:disposition:list": descDisposition,
	"amqp:detach:list": descDetach, "amqp:end:list": descEnd, "amqp:close:list": descClose,
	"amqp:error:list": descError, "amqp:received:list": descReceived, "amqp:accepted:list": descAccepted,
	"amqp:rejected:list": descRejected, "amqp:released:list": descReleased, "amqp:modified:list": descModified,
	"amqp:source:list": descSource, "amqp:target:list": descTarget,
	"amqp:sasl-mechanisms:list": descSASLMechanisms, "amqp:sasl-init:list": descSASLInit,
	"amqp:sasl-challenge:list": descSASLChallenge, "amqp:sasl-response:list": descSASLResponse,
	"amqp:sasl-outcome:list": descSASLOutcome,
	"amqp:header:list":       descHeader, "amqp:delivery-annotations:map": descDeliveryAnnotations,
	"amqp:message-annotations:map": descMessageAnnotations, "amqp:properties:list": descProperties,
	"amqp:application-properties:map": descApplicationProperties, "amqp:data:binary": descData,
	"amqp:amqp-sequence:list": descAMQPSequence, "amqp:amqp-value:*": descAMQPValue, "amqp:footer:map": descFooter,
}

// code returns the numeric descriptor of d, resolving symbolic names.
func code(d any) (uint64, bool) {
	switch d := d.(type) {
	case uint64:
		return d, true
	case Symbol:
		c, ok := descNames[d]
		return c, ok
	}
	return 0, false
}

// Performative is a frame body: one of *Open, *Begin, *Attach, *Flow,
// *Transfer, *Disposition, *Detach, *End, *Close, *SASLMechanisms,
// *SASLInit, *SASLOutcome.
type Performative interface {
	described() Described
}

// Name returns the AMQP name of a performative, for messages.
func Name(p any) string {
	switch p.(type) {
	case *Open:
		return "open"
	case *Begin:
		return "begin"
	case *Attach:
		return "attach"
	case *Flow:
		return "flow"
	case *Transfer:
		return "transfer"
	case *Disposition:
		return "disposition"
	case *Detach:
		return "detach"
	case *End:
		return "end"
	case *Close:
		return "close"
	case *SASLMechanisms:
		return "sasl-mechanisms"
	case *SASLInit:
		return "sasl-init"
	case *SASLOutcome:
		return "sasl-outcome"
	case nil:
		return "empty frame"
	}
	return fmt.Sprintf("%T", p)
}

// Error is the AMQP error of close, end, detach and rejected.
type Error struct {
	Condition   Symbol
	Description string
	Info        Map
}

func (e *Error) Error() string {
	if e.Description == "" {
		return string(e.Condition)
	}
	return string(e.Condition) + ": " + e.Description
}

// textOr is the peer's error text, or none when the peer ended without an
// error (e is nil).
func (e *Error) textOr(none string) string {
	if e == nil {
		return none
	}
	return e.Error()
}

// Error conditions used by the simulator.
const (
	ErrInternal          Symbol = "amqp:internal-error"
	ErrNotAllowed        Symbol = "amqp:not-allowed"
	ErrNotImplemented    Symbol = "amqp:not-implemented"
	ErrInvalidField      Symbol = "amqp:invalid-field"
	ErrDecode            Symbol = "amqp:decode-error"
	ErrResourceLimit     Symbol = "amqp:resource-limit-exceeded"
	ErrUnauthorized      Symbol = "amqp:unauthorized-access"
	ErrFramingError      Symbol = "amqp:connection:framing-error"
	ErrConnectionForced  Symbol = "amqp:connection:forced"
	ErrUnattachedHandle  Symbol = "amqp:session:unattached-handle"
	ErrHandleInUse       Symbol = "amqp:session:handle-in-use"
	ErrWindowViolation   Symbol = "amqp:session:window-violation"
	ErrLinkDetachForced  Symbol = "amqp:link:detach-forced"
	ErrTransferLimit     Symbol = "amqp:link:transfer-limit-exceeded"
	ErrPreconditionFails Symbol = "amqp:precondition-failed"
)

func (e *Error) value() any {
	if e == nil {
		return nil
	}
	return Described{uint64(descError), trim([]any{e.Condition, str(e.Description), mapOrNil(e.Info)})}
}

// Open is the open performative.
type Open struct {
	ContainerID  string
	Hostname     string
	MaxFrameSize uint32 // 0: absent (the default, 4294967295)
	ChannelMax   uint16 // 0: absent (the default, 65535)
	// IdleTimeout is the idle-time-out in milliseconds; 0 is none.
	IdleTimeout uint32
	OfferedCaps Array
	DesiredCaps Array
	Properties  Map
}

// IdleTime returns the idle-time-out as a duration.
func (o *Open) IdleTime() time.Duration { return time.Duration(o.IdleTimeout) * time.Millisecond }

// EffectiveMaxFrameSize is MaxFrameSize with the default applied.
func (o *Open) EffectiveMaxFrameSize() uint32 {
	if o.MaxFrameSize == 0 {
		return 0xffffffff
	}
	return o.MaxFrameSize
}

func (o *Open) described() Described {
	var fs, cm, it any
	if o.MaxFrameSize != 0 {
		fs = o.MaxFrameSize
	}
	if o.ChannelMax != 0 {
		cm = o.ChannelMax
	}
	if o.IdleTimeout != 0 {
		it = o.IdleTimeout
	}
	return Described{uint64(descOpen), trim([]any{o.ContainerID, str(o.Hostname), fs, cm, it, nil, nil,
		arrOrNil(o.OfferedCaps), arrOrNil(o.DesiredCaps), mapOrNil(o.Properties)})}
}

// Begin is the begin performative.
type Begin struct {
	RemoteChannel  *uint16
	NextOutgoingID uint32
	IncomingWindow uint32
	OutgoingWindow uint32
	HandleMax      *uint32
}

func (b *Begin) described() Described {
	var rc, hm any
	if b.RemoteChannel != nil {
		rc = *b.RemoteChannel
	}
	if b.HandleMax != nil {
		hm = *b.HandleMax
	}
	return Described{uint64(descBegin), trim([]any{rc, b.NextOutgoingID, b.IncomingWindow, b.OutgoingWindow, hm})}
}

// Roles of attach and disposition.
const (
	RoleSender   = false
	RoleReceiver = true
)

// Sender settle modes.
const (
	SndUnsettled uint8 = 0
	SndSettled   uint8 = 1
	SndMixed     uint8 = 2
)

// Terminus is a link source or target. Only the address and whether it is
// dynamic matter here; the other fields are kept so they can be echoed.
type Terminus struct {
	Address string
	Dynamic bool
	// Fields is the whole field list as received (nil when built locally).
	Fields []any
}

func (t *Terminus) value(desc uint64) any {
	if t == nil {
		return nil
	}
	l := append([]any(nil), t.Fields...)
	if len(l) < 1 {
		l = append(l, nil)
	}
	l[0] = str(t.Address)
	if t.Dynamic {
		for len(l) < 5 {
			l = append(l, nil)
		}
		l[4] = true
	}
	return Described{desc, trim(l)}
}

// Attach is the attach performative.
type Attach struct {
	Name                 string
	Handle               uint32
	Role                 bool
	SndSettleMode        uint8 // default SndMixed
	RcvSettleMode        uint8 // default 0 (first)
	Source               *Terminus
	Target               *Terminus
	InitialDeliveryCount *uint32
	MaxMessageSize       uint64
	Properties           Map
}

func (a *Attach) described() Described {
	var snd, rcv, idc, mms any
	if a.SndSettleMode != SndMixed {
		snd = a.SndSettleMode
	}
	if a.RcvSettleMode != 0 {
		rcv = a.RcvSettleMode
	}
	if a.InitialDeliveryCount != nil {
		idc = *a.InitialDeliveryCount
	}
	if a.MaxMessageSize != 0 {
		mms = a.MaxMessageSize
	}
	return Described{uint64(descAttach), trim([]any{a.Name, a.Handle, a.Role, snd, rcv,
		a.Source.value(descSource), a.Target.value(descTarget), nil, nil, idc, mms, nil, nil, mapOrNil(a.Properties)})}
}

// Flow is the flow performative. The link fields are nil for a
// session-only flow.
type Flow struct {
	NextIncomingID *uint32
	IncomingWindow uint32
	NextOutgoingID uint32
	OutgoingWindow uint32
	Handle         *uint32
	DeliveryCount  *uint32
	LinkCredit     *uint32
	Available      *uint32
	Drain          bool
	Echo           bool
}

func (f *Flow) described() Described {
	return Described{uint64(descFlow), trim([]any{opt(f.NextIncomingID), f.IncomingWindow, f.NextOutgoingID,
		f.OutgoingWindow, opt(f.Handle), opt(f.DeliveryCount), opt(f.LinkCredit), opt(f.Available),
		boolOrNil(f.Drain), boolOrNil(f.Echo)})}
}

// Transfer is the transfer performative; the message bytes follow it in
// the frame (Frame.Payload).
type Transfer struct {
	Handle        uint32
	DeliveryID    *uint32
	DeliveryTag   []byte
	MessageFormat *uint32
	Settled       bool
	More          bool
	State         any
	Aborted       bool

	// Storage of DeliveryID and MessageFormat when parseTransfer set them.
	deliveryID, messageFormat uint32
}

func (t *Transfer) described() Described {
	var tag any
	if t.DeliveryTag != nil {
		tag = t.DeliveryTag
	}
	return Described{uint64(descTransfer), trim([]any{t.Handle, opt(t.DeliveryID), tag, opt(t.MessageFormat),
		boolOrNil(t.Settled), boolOrNil(t.More), nil, outcomeValue(t.State), nil, boolOrNil(t.Aborted)})}
}

// Disposition is the disposition performative.
type Disposition struct {
	Role    bool
	First   uint32
	Last    *uint32
	Settled bool
	// State is the outcome: *Accepted, *Rejected, *Released, *Modified,
	// *Received, or nil.
	State any
}

func (d *Disposition) described() Described {
	return Described{uint64(descDisposition), trim([]any{d.Role, d.First, opt(d.Last), boolOrNil(d.Settled),
		outcomeValue(d.State)})}
}

// Detach is the detach performative.
type Detach struct {
	Handle uint32
	Closed bool
	Error  *Error
}

func (d *Detach) described() Described {
	return Described{uint64(descDetach), trim([]any{d.Handle, boolOrNil(d.Closed), d.Error.value()})}
}

// End is the end performative.
type End struct{ Error *Error }

func (e *End) described() Described {
	return Described{uint64(descEnd), trim([]any{e.Error.value()})}
}

// Close is the close performative.
type Close struct{ Error *Error }

func (c *Close) described() Described {
	return Described{uint64(descClose), trim([]any{c.Error.value()})}
}

// Delivery outcomes.
type (
	Accepted struct{}
	Rejected struct{ Error *Error }
	Released struct{}
	Modified struct {
		DeliveryFailed    bool
		UndeliverableHere bool
	}
	// Received is the non-terminal received state.
	Received struct {
		SectionNumber uint32
		SectionOffset uint64
	}
)

func outcomeValue(s any) any {
	switch s := s.(type) {
	case *Accepted:
		return Described{uint64(descAccepted), []any{}}
	case *Rejected:
		return Described{uint64(descRejected), trim([]any{s.Error.value()})}
	case *Released:
		return Described{uint64(descReleased), []any{}}
	case *Modified:
		return Described{uint64(descModified), trim([]any{boolOrNil(s.DeliveryFailed), boolOrNil(s.UndeliverableHere)})}
	case *Received:
		return Described{uint64(descReceived), []any{s.SectionNumber, s.SectionOffset}}
	}
	return nil
}

// SASL outcome codes (AMQP 1.0 part 5, 5.3.3.6).
const (
	SASLOK      uint8 = 0
	SASLAuth    uint8 = 1 // auth: the credentials were refused
	SASLSys     uint8 = 2 // sys: an unspecified system error at the server
	SASLSysPerm uint8 = 3 // sys-perm: a system error unlikely to clear without intervention
	SASLSysTemp uint8 = 4 // sys-temp: a transient system error
)

// saslOutcomes names each outcome code other than ok, with its meaning.
var saslOutcomes = map[uint8]string{
	SASLAuth:    "auth: the server refused the credentials",
	SASLSys:     "sys: an unspecified system error at the server, not the credentials",
	SASLSysPerm: "sys-perm: a system error at the server that is unlikely to clear without intervention, not the credentials",
	SASLSysTemp: "sys-temp: a transient system error at the server, not the credentials",
}

// SASLMechanisms is the server's list of mechanisms.
type SASLMechanisms struct{ Mechanisms []Symbol }

func (m *SASLMechanisms) described() Described {
	a := make(Array, len(m.Mechanisms))
	for i, s := range m.Mechanisms {
		a[i] = s
	}
	return Described{uint64(descSASLMechanisms), []any{a}}
}

// SASLInit is the client's chosen mechanism and initial response.
type SASLInit struct {
	Mechanism       Symbol
	InitialResponse []byte
	Hostname        string
}

func (i *SASLInit) described() Described {
	var ir any
	if i.InitialResponse != nil {
		ir = i.InitialResponse
	}
	return Described{uint64(descSASLInit), trim([]any{i.Mechanism, ir, str(i.Hostname)})}
}

// SASLOutcome ends the SASL exchange.
type SASLOutcome struct {
	Code           uint8
	AdditionalData []byte
}

func (o *SASLOutcome) described() Described {
	var ad any
	if o.AdditionalData != nil {
		ad = o.AdditionalData
	}
	return Described{uint64(descSASLOutcome), trim([]any{o.Code, ad})}
}

// helpers for encoding

func trim(l []any) []any {
	for len(l) > 0 && l[len(l)-1] == nil {
		l = l[:len(l)-1]
	}
	return l
}

func str(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func opt(p *uint32) any {
	if p == nil {
		return nil
	}
	return *p
}

func boolOrNil(b bool) any {
	if !b {
		return nil
	}
	return true
}

func mapOrNil(m Map) any {
	if m == nil {
		return nil
	}
	return m
}

func arrOrNil(a Array) any {
	if a == nil {
		return nil
	}
	return a
}

// U32 returns a pointer to v, for the optional fields.
func U32(v uint32) *uint32 { return &v }
