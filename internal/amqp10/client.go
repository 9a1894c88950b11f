package amqp10

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/monotime"
)

// ReceiverConfig configures a Receiver: the client end of one connection
// with one session and one receiving link.
type ReceiverConfig struct {
	// ContainerID is the open's container-id (the client id).
	ContainerID string
	// Hostname is the open's hostname ("" sends none).
	Hostname string
	// Username and Password are the SASL PLAIN login.
	Username, Password string
	// IdleTimeout is the idle-time-out the open advertises: the peer must
	// send a frame within it. 0 advertises none.
	IdleTimeout time.Duration
	// MaxFrameSize is the largest frame the client accepts (at least
	// MinMaxFrameSize; 0 is DefaultMaxFrameSize).
	MaxFrameSize uint32
	// Prefetch bounds the messages received but not yet taken by Receive
	// (the link credit the caller issues; 0 is 1024). The reader never
	// blocks below it.
	Prefetch int
	// WriteTimeout bounds every socket write (0 is 30 s); a write that
	// takes longer fails the connection.
	WriteTimeout time.Duration
	// MaxMessageSize bounds the bytes kept of one message, however many
	// transfer frames it spans (0 is MaxMessageSize). A larger one is read
	// to its end, not kept, and handed over as Malformed.
	MaxMessageSize int
}

// Defaults of ReceiverConfig.
const (
	DefaultMaxFrameSize = 64 * 1024
	defaultPrefetch     = 1024
	defaultWriteTimeout = 30 * time.Second
	// incomingWindow is the session's incoming window, in transfer
	// frames; it is opened again once half of it is used.
	incomingWindow = 5000
	// MaxMessageSize bounds one message, however many transfer frames it
	// spans.
	MaxMessageSize = 64 << 20
	// maxHeld bounds the bytes a hold gathers: beyond it, a write flushes.
	maxHeld = 64 << 10
)

// ConnError says why a connection ended: RemoteErr is the error of the
// peer's close (nil when it closed without one), else Err the local cause.
type ConnError struct {
	RemoteErr *Error
	Err       error
}

func (e *ConnError) Error() string {
	switch {
	case e.RemoteErr != nil:
		return e.RemoteErr.Error()
	case e.Err != nil:
		return e.Err.Error()
	}
	return "amqp: connection closed"
}

func (e *ConnError) Unwrap() error {
	if e.RemoteErr != nil {
		return e.RemoteErr
	}
	return e.Err
}

// SessionError is a session the peer ended, with its error.
type SessionError struct{ RemoteErr *Error }

func (e *SessionError) Error() string { return e.RemoteErr.textOr("amqp: session ended by the server") }

func (e *SessionError) Unwrap() error { return errOrNil(e.RemoteErr) }

// LinkError is a link the peer detached, with its error.
type LinkError struct{ RemoteErr *Error }

func (e *LinkError) Error() string { return e.RemoteErr.textOr("amqp: link detached by the server") }

func (e *LinkError) Unwrap() error { return errOrNil(e.RemoteErr) }

func errOrNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

// ErrAtMostOnce is Attach's error when the server answers the attach with
// snd-settle-mode settled: it would send every delivery pre-settled.
var ErrAtMostOnce = errors.New("the server would send pre-settled (at-most-once) deliveries " +
	"(its attach has snd-settle-mode settled); the bridge needs unsettled ones, settled only once " +
	"MNS has them, so that nothing is lost")

// SASLError is a refused SASL login: Code is the outcome code (SASLAuth,
// SASLSys, SASLSysPerm, SASLSysTemp), AdditionalData the server's text.
type SASLError struct {
	Code           uint8
	AdditionalData []byte
}

// Error names the code and what it means: only auth (1) is about the
// credentials.
func (e *SASLError) Error() string {
	what, ok := saslOutcomes[e.Code]
	if !ok {
		what = "a code AMQP 1.0 does not define"
	}
	failed := "login"
	if e.Code == SASLAuth {
		failed = "auth"
	}
	text := fmt.Sprintf("SASL PLAIN %s failed with code %#x (%s)", failed, e.Code, what)
	if len(e.AdditionalData) == 0 {
		return text // RabbitMQ's refusal carries none
	}
	return text + ": " + string(e.AdditionalData)
}

// Bare is Error without AMQP's meaning of the code ("auth: the server
// refused the credentials"): the code and the server's text alone, for a
// refusal whose text names another cause (a full consumer group), where
// that meaning would mislead.
func (e *SASLError) Bare() string {
	text := fmt.Sprintf("SASL PLAIN login refused with code %#x", e.Code)
	if len(e.AdditionalData) == 0 {
		return text
	}
	return text + ": " + string(e.AdditionalData)
}

// ServerFault reports whether the code is one of the server's own system
// errors (sys, sys-perm, sys-temp), not a verdict on the credentials.
func (e *SASLError) ServerFault() bool {
	return e.Code == SASLSys || e.Code == SASLSysPerm || e.Code == SASLSysTemp
}

// Delivery is one message a Receiver received.
type Delivery struct {
	// ID is the delivery-id (a serial number: it wraps).
	ID uint32
	// Settled: the sender settled it already; nothing is sent back.
	Settled bool
	Message
	// Malformed, when not nil, says why the message's sections do not
	// decode; Message is then empty and Raw holds the message as it came
	// (the transfers' payload). The delivery is settled like any other:
	// ending the connection instead would have the server push the same
	// message again, for ever.
	Malformed error
	Raw       []byte
	// rcv is the Receiver that received it: its delivery-id means
	// another message (or none) on any other connection.
	rcv *Receiver
}

// Receiver is the client end of an AMQP 1.0 connection with one session
// and one receiving link with manual credit. One goroutine reads the
// connection: it answers the protocol, decodes each transfer into a
// Delivery and queues it for Receive. Settlements are written as
// dispositions of ranges of delivery-ids; between Hold and Flush they are
// gathered and written in one socket write. The client sends an empty
// frame whenever it wrote nothing for half the peer's idle-time-out, or of
// its own when that is shorter (see beatEvery).
//
// Its methods are safe for concurrent use.
type Receiver struct {
	nc  net.Conn
	br  *bufio.Reader
	cfg ReceiverConfig

	peerMaxFrame uint32
	peerIdle     time.Duration
	handle       uint32 // the peer's handle of the link
	channel      uint16 // the peer's channel of the session
	linkName     string

	msgs chan *Delivery
	done chan struct{}
	// stop is closed once the socket is closed locally (Abort, Close,
	// a failed write): the reader stops waiting for Receive.
	stop     chan struct{}
	stopOnce sync.Once
	err      error // why done was closed; set before

	closing atomic.Bool // Close sent the close: the peer's close ends cleanly
	reading atomic.Bool // Attach started the reader: done will be closed
	// releasedAtClose counts the deliveries Close released that Receive
	// had not returned (see ReleasedAtClose).
	releasedAtClose atomic.Int64

	// mu guards the link and session flow state, shared by the reader
	// and IssueCredit.
	mu             sync.Mutex
	deliveryCount  uint32
	linkCredit     uint32
	nextIncomingID uint32
	windowLeft     uint32
	attached       bool

	// wmu guards the writer.
	wmu       sync.Mutex
	wbuf      []byte
	held      bool
	pending   []settle       // the dispositions of the hold
	werr      error          // a failed write: every later write fails with it
	lastWrite monotime.Stamp // when the writer last wrote (beat)

	// the reader's own state
	partial   []byte
	inPartial bool
	partialID uint32
	partialSt bool
	// the first frame's delivery-tag (a copy: the frame's buffer is
	// reused) and message-format of a delivery in progress
	partialTag    []byte
	partialFormat uint32
	oversize      bool // the delivery in progress outgrew MaxMessageSize
	rbuf          []byte
	tr            Transfer // the last transfer read (see readFrame)
}

type settle struct {
	id       uint32
	accepted bool
}

// Dial logs in over nc (a connected, usually TLS, stream) with SASL PLAIN
// and opens the AMQP connection, within ctx. On failure it closes nc.
// Attach then begins the session and attaches the receiver.
func Dial(ctx context.Context, nc net.Conn, cfg ReceiverConfig) (*Receiver, error) {
	if cfg.MaxFrameSize == 0 {
		cfg.MaxFrameSize = DefaultMaxFrameSize
	}
	cfg.MaxFrameSize = max(cfg.MaxFrameSize, MinMaxFrameSize)
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = defaultPrefetch
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = MaxMessageSize
	}
	r := &Receiver{nc: nc, br: bufio.NewReaderSize(nc, 32<<10), cfg: cfg,
		msgs: make(chan *Delivery, cfg.Prefetch), done: make(chan struct{}), stop: make(chan struct{}), windowLeft: incomingWindow}
	stop := deadlineFrom(ctx, nc)
	err := r.login(ctx)
	if err == nil {
		err = r.open()
	}
	stop()
	if err != nil {
		_ = nc.Close()
		return nil, ctxErr(ctx, err)
	}
	return r, nil
}

// deadlineFrom makes nc's reads and writes fail once ctx ends; the
// returned stop clears that.
func deadlineFrom(ctx context.Context, nc net.Conn) (stop func()) {
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	fired := make(chan struct{})
	cancelled := context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !cancelled() {
			<-fired // it ran or runs: clear the deadline after it, not before
		}
		_ = nc.SetDeadline(time.Time{})
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
	}
	return err
}

// exchangeHeader sends the protocol header h (named name: SASL, AMQP) and
// reads the server's, which must be h too.
func (r *Receiver) exchangeHeader(h [8]byte, name string) error {
	if _, err := r.nc.Write(h[:]); err != nil {
		return fmt.Errorf("send the %s protocol header: %w", name, err)
	}
	got, err := ReadProtocolHeader(r.br)
	if err != nil {
		return fmt.Errorf("read the %s protocol header: %w", name, noEOF(err))
	}
	if got != h {
		return fmt.Errorf("%w: the server answered the %s protocol header with %q", ErrMalformed, name, got[:])
	}
	return nil
}

func (r *Receiver) login(ctx context.Context) error {
	if err := r.exchangeHeader(HeaderSASL, "SASL"); err != nil {
		return err
	}
	f, err := r.expect(FrameSASL, "sasl-mechanisms")
	if err != nil {
		return err
	}
	mechs, ok := f.Body.(*SASLMechanisms)
	if !ok {
		return fmt.Errorf("%w: the server sent %s, want sasl-mechanisms", ErrMalformed, Name(f.Body))
	}
	if !slices.Contains(mechs.Mechanisms, "PLAIN") {
		return fmt.Errorf("SASL: the server does not offer PLAIN (it offers %v)", mechs.Mechanisms)
	}
	resp := make([]byte, 0, 2+len(r.cfg.Username)+len(r.cfg.Password))
	resp = append(append(append(append(resp, 0), r.cfg.Username...), 0), r.cfg.Password...)
	if err := r.writeNow(FrameSASL, &SASLInit{Mechanism: "PLAIN", InitialResponse: resp}); err != nil {
		return err
	}
	if f, err = r.expect(FrameSASL, "sasl-outcome"); err != nil {
		return err
	}
	out, ok := f.Body.(*SASLOutcome)
	if !ok {
		return fmt.Errorf("%w: the server sent %s, want sasl-outcome", ErrMalformed, Name(f.Body))
	}
	if out.Code != SASLOK {
		return &SASLError{Code: out.Code, AdditionalData: out.AdditionalData}
	}
	return nil
}

// open sends the AMQP header and open, and reads the peer's.
func (r *Receiver) open() error {
	if err := r.exchangeHeader(HeaderAMQP, "AMQP"); err != nil {
		return err
	}
	o := &Open{ContainerID: r.cfg.ContainerID, Hostname: r.cfg.Hostname, MaxFrameSize: r.cfg.MaxFrameSize,
		ChannelMax: 0, IdleTimeout: uint32(r.cfg.IdleTimeout / time.Millisecond)}
	if err := r.writeNow(FrameAMQP, o); err != nil {
		return err
	}
	f, err := r.expect(FrameAMQP, "open")
	if err != nil {
		return err
	}
	switch p := f.Body.(type) {
	case *Open:
		r.peerMaxFrame = p.EffectiveMaxFrameSize()
		r.peerIdle = p.IdleTime()
		return nil
	case *Close:
		return &ConnError{RemoteErr: p.Error, Err: errors.New("amqp: the server closed the connection instead of opening it")}
	}
	return fmt.Errorf("%w: the server sent %s, want open", ErrMalformed, Name(f.Body))
}

// Attach begins the session and attaches the receiving link to the
// source address, with rcv-settle-mode first and snd-settle-mode
// unsettled, within ctx; then it starts reading. The link has no credit
// until IssueCredit. On failure the socket is closed.
func (r *Receiver) Attach(ctx context.Context, address string) error {
	var name [8]byte
	_, _ = rand.Read(name[:])
	r.linkName = "bridge-" + hex.EncodeToString(name[:])
	stop := deadlineFrom(ctx, r.nc)
	err := r.attach(address)
	stop()
	if err != nil {
		_ = r.nc.Close()
		return ctxErr(ctx, err)
	}
	r.lastWrite.Store(time.Now())
	r.reading.Store(true)
	go r.readLoop()
	if every := beatEvery(r.peerIdle, r.cfg.IdleTimeout); every > 0 {
		go r.beat(every)
	}
	return nil
}

// beatEvery is how long the client may stay silent: half the peer's
// idle-time-out (the specification), and at most half its own, which the
// IoT platform applies to the client too (it closes a connection that
// carried no frame for the client's idle-time-out, whatever its open
// announced). 0: no heart-beats.
func beatEvery(peer, own time.Duration) time.Duration {
	switch {
	case peer <= 0:
		return own / 2
	case own <= 0:
		return peer / 2
	}
	return min(peer, own) / 2
}

func (r *Receiver) attach(address string) error {
	r.wbuf = r.wbuf[:0]
	var err error
	r.wbuf, err = AppendFrame(r.wbuf, FrameAMQP, 0, &Begin{NextOutgoingID: 0, IncomingWindow: incomingWindow,
		OutgoingWindow: incomingWindow}, nil)
	if err == nil {
		r.wbuf, err = AppendFrame(r.wbuf, FrameAMQP, 0, &Attach{Name: r.linkName, Handle: 0, Role: RoleReceiver,
			SndSettleMode: SndUnsettled, RcvSettleMode: 0, Source: &Terminus{Address: address},
			Target: &Terminus{}}, nil)
	}
	if err != nil {
		return err
	}
	_, err = r.nc.Write(r.wbuf)
	r.wbuf = r.wbuf[:0]
	if err != nil {
		return fmt.Errorf("send begin and attach: %w", err)
	}
	began := false
	for {
		f, err := r.expect(FrameAMQP, "begin and attach")
		if err != nil {
			return err
		}
		switch p := f.Body.(type) {
		case nil, *Flow:
		case *Begin:
			if began || p.RemoteChannel == nil || *p.RemoteChannel != 0 {
				return fmt.Errorf("%w: begin on channel %d does not answer the client's begin on channel 0", ErrMalformed, f.Channel)
			}
			began = true
			r.channel = f.Channel
			r.nextIncomingID = p.NextOutgoingID
		case *Attach:
			if !began || p.Name != r.linkName || p.Role != RoleSender {
				return fmt.Errorf("%w: attach %q (role receiver %v) does not answer the client's attach %q", ErrMalformed, p.Name, p.Role, r.linkName)
			}
			if p.Source == nil {
				// The peer refuses the link: a detach with the reason follows.
				f, err := r.expect(FrameAMQP, "detach")
				if err != nil {
					return err
				}
				if d, ok := f.Body.(*Detach); ok {
					return &LinkError{RemoteErr: d.Error}
				}
				return &LinkError{}
			}
			if p.SndSettleMode == SndSettled {
				// Pre-settled deliveries are gone once sent: one lost on the
				// way or in a crash would be lost for good.
				return ErrAtMostOnce
			}
			r.handle = p.Handle
			if p.InitialDeliveryCount != nil {
				r.deliveryCount = *p.InitialDeliveryCount
			}
			r.attached = true
			return nil
		case *Detach:
			return &LinkError{RemoteErr: p.Error}
		case *End:
			return &SessionError{RemoteErr: p.Error}
		case *Close:
			return &ConnError{RemoteErr: p.Error}
		default:
			return fmt.Errorf("%w: unexpected %s while attaching", ErrMalformed, Name(f.Body))
		}
	}
}

// expect reads one frame of type typ (what names what was awaited).
func (r *Receiver) expect(typ byte, what string) (Frame, error) {
	f, err := r.readFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return f, fmt.Errorf("the server closed the connection while the client awaited %s: %w", what, io.ErrUnexpectedEOF)
		}
		return f, fmt.Errorf("awaiting %s: %w", what, err)
	}
	if f.Type != typ {
		return f, fmt.Errorf("%w: a frame of type %d while the client awaited %s", ErrMalformed, f.Type, what)
	}
	return f, nil
}

// readFrame reads one frame into the reader's buffer (reused: nothing
// decoded refers to it, except Payload until the next read). A transfer
// is decoded into the reader's own Transfer (valid until the next read)
// when it holds only the usual fields.
func (r *Receiver) readFrame() (Frame, error) {
	buf, f, err := readRawFrame(r.br, r.cfg.MaxFrameSize, r.rbuf)
	if cap(buf) <= 1<<20 {
		r.rbuf = buf
	}
	if err != nil {
		return f, err
	}
	if body := buf[int(buf[4])*4:]; f.Type == FrameAMQP {
		if n, ok := parseTransfer(body, &r.tr); ok {
			f.Body, f.Payload = &r.tr, body[n:]
			return f, nil
		}
	}
	return ParseFrame(buf, r.cfg.MaxFrameSize)
}

// readLoop reads until the connection ends, then closes done.
func (r *Receiver) readLoop() {
	err := r.serve()
	if r.closing.Load() && isClean(err) {
		err = nil
	}
	r.err = err
	r.shut()
	close(r.done)
}

func isClean(err error) bool {
	var ce *ConnError
	return err == nil || errors.Is(err, io.EOF) || (errors.As(err, &ce) && ce.RemoteErr == nil && ce.Err == nil)
}

// serve handles frames until one ends the connection, and returns why.
func (r *Receiver) serve() error {
	for {
		f, err := r.readFrame()
		if err != nil {
			if r.closing.Load() {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return &ConnError{Err: errors.New("amqp: the server closed the connection without a close frame")}
			}
			return &ConnError{Err: err}
		}
		if f.Type != FrameAMQP {
			return &ConnError{Err: fmt.Errorf("%w: a SASL frame after the login", ErrMalformed)}
		}
		if _, ok := f.Body.(*Close); !ok && f.Body != nil && f.Channel != r.channel {
			return &ConnError{Err: fmt.Errorf("%w: %s frame on channel %d, but the session is on channel %d",
				ErrMalformed, Name(f.Body), f.Channel, r.channel)}
		}
		switch p := f.Body.(type) {
		case nil:
		case *Transfer:
			if err := r.transfer(p, f.Payload); err != nil {
				return &ConnError{Err: err}
			}
		case *Flow:
			if p.Echo { // of the link or of the session only: the flow has both
				_ = r.sendFlow(0)
			}
		case *Disposition:
			// The sender's view of deliveries settled with first: nothing
			// to answer.
		case *Detach:
			if !r.closing.Load() {
				return &LinkError{RemoteErr: p.Error}
			}
		case *End:
			if !r.closing.Load() {
				return &SessionError{RemoteErr: p.Error}
			}
		case *Close:
			if !r.closing.Load() {
				r.writeClose()
			}
			return &ConnError{RemoteErr: p.Error}
		default:
			return &ConnError{Err: fmt.Errorf("%w: unexpected %s frame on an open link", ErrMalformed, Name(f.Body))}
		}
	}
}

// transfer takes one transfer frame: a whole message, or a part of one.
func (r *Receiver) transfer(t *Transfer, payload []byte) error {
	if t.Handle != r.handle {
		return fmt.Errorf("%w: transfer on handle %d, but the link is handle %d", ErrMalformed, t.Handle, r.handle)
	}
	r.mu.Lock()
	if r.windowLeft == 0 {
		r.mu.Unlock()
		return fmt.Errorf("%w: transfer beyond the session's incoming window", ErrMalformed)
	}
	r.windowLeft--
	r.nextIncomingID++
	refill := r.windowLeft < incomingWindow/2
	if !r.inPartial {
		if t.DeliveryID == nil {
			r.mu.Unlock()
			return fmt.Errorf("%w: transfer field 1 (delivery-id) is missing on the first frame of a delivery", ErrMalformed)
		}
		// A delivery takes one credit (the first frame), aborted or not.
		r.deliveryCount++
		if r.linkCredit > 0 {
			r.linkCredit--
		}
	}
	r.mu.Unlock()
	if refill {
		_ = r.sendFlow(0)
	}
	if r.inPartial {
		// A continuation may repeat the first frame's delivery-id, tag and
		// message-format, never change them (as go-amqp checks).
		switch {
		case t.DeliveryID != nil && *t.DeliveryID != r.partialID:
			return fmt.Errorf("%w: transfer continues delivery %d with delivery-id %d", ErrMalformed, r.partialID, *t.DeliveryID)
		case t.MessageFormat != nil && *t.MessageFormat != r.partialFormat:
			return fmt.Errorf("%w: transfer continues delivery %d (message-format %d) with message-format %d",
				ErrMalformed, r.partialID, r.partialFormat, *t.MessageFormat)
		case t.DeliveryTag != nil && !bytes.Equal(t.DeliveryTag, r.partialTag):
			return fmt.Errorf("%w: transfer continues delivery %d (delivery-tag %x) with delivery-tag %x",
				ErrMalformed, r.partialID, r.partialTag, t.DeliveryTag)
		}
	} else {
		r.partialID = *t.DeliveryID
		r.partialSt = false
		if t.More { // only a delivery that continues needs them
			r.partialTag = append(r.partialTag[:0], t.DeliveryTag...)
			r.partialFormat = 0
			if t.MessageFormat != nil {
				r.partialFormat = *t.MessageFormat
			}
		}
	}
	r.partialSt = r.partialSt || t.Settled
	if t.Aborted {
		// The sender gave the delivery up: nothing of it is kept, and the
		// credit it took is given back so that the caller's count holds.
		r.inPartial, r.oversize = false, false
		r.partial = r.partial[:0]
		_ = r.sendFlow(1)
		return nil
	}
	body := payload
	if t.More || r.inPartial {
		if r.oversize || len(r.partial)+len(payload) > r.cfg.MaxMessageSize {
			// Too large to keep: the rest is read and dropped, and the
			// delivery handed over as malformed (ending the connection
			// would have the server push it again, for ever).
			r.oversize, r.partial, r.inPartial = true, nil, t.More
			if t.More {
				return nil
			}
			r.oversize = false
			r.hand(&Delivery{ID: r.partialID, Settled: r.partialSt, rcv: r, Malformed: fmt.Errorf(
				"delivery %d: %w: the message is larger than %d bytes (its bytes are not kept)", r.partialID, ErrMalformed, r.cfg.MaxMessageSize)})
			return nil
		}
		r.partial = append(r.partial, payload...)
		r.inPartial = t.More
		if t.More {
			return nil
		}
		body = r.partial
	}
	d := &Delivery{ID: r.partialID, Settled: r.partialSt, rcv: r}
	if err := decodeMessageInto(&d.Message, body); err != nil {
		d.Message = Message{}
		d.Malformed = fmt.Errorf("delivery %d: %w", r.partialID, err)
		d.Raw = append([]byte(nil), body...)
	}
	r.partial = r.partial[:0]
	if cap(r.partial) > 1<<20 {
		r.partial = nil
	}
	r.hand(d)
	return nil
}

// hand queues d for Receive; it gives up once the socket is closed locally.
func (r *Receiver) hand(d *Delivery) {
	select {
	case r.msgs <- d: // the usual case: Receive keeps up (a plain send)
		return
	default:
	}
	select {
	case r.msgs <- d:
	case <-r.stop:
	}
}

// shut closes the socket: the reader fails at once.
func (r *Receiver) shut() {
	r.stopOnce.Do(func() {
		close(r.stop)
		_ = r.nc.Close()
	})
}

// Receive returns the next delivery, in order. It fails once the
// connection has ended and every delivery received before was taken, or
// when ctx ends.
func (r *Receiver) Receive(ctx context.Context) (*Delivery, error) {
	select {
	case d := <-r.msgs:
		return d, nil
	default:
	}
	select {
	case d := <-r.msgs:
		return d, nil
	case <-r.done:
		select {
		case d := <-r.msgs:
			return d, nil
		default:
		}
		return nil, r.doneErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *Receiver) doneErr() error {
	if r.err != nil {
		return r.err
	}
	return &ConnError{}
}

// IssueCredit lets the peer send n more deliveries on the link.
func (r *Receiver) IssueCredit(n uint32) error { return r.sendFlow(n) }

// sendFlow sends the session's and the link's flow state, with n more
// link credit; the session's incoming window is opened to its whole size.
//
// The state is read under the writer's lock, so flows go out in the order
// their state was taken: a later one never carries an older credit (the
// reader's give-back of an aborted delivery's credit could be lost).
func (r *Receiver) sendFlow(n uint32) error {
	return r.write(func(b []byte) ([]byte, error) {
		r.mu.Lock()
		r.linkCredit += n
		r.windowLeft = incomingWindow
		fl := &Flow{NextIncomingID: U32(r.nextIncomingID), IncomingWindow: incomingWindow, NextOutgoingID: 0,
			OutgoingWindow: incomingWindow, Handle: U32(0), DeliveryCount: U32(r.deliveryCount), LinkCredit: U32(r.linkCredit)}
		r.mu.Unlock()
		return AppendFrame(b, FrameAMQP, 0, fl, nil)
	})
}

// Accept and Release settle a delivery (accepted or released). Between
// Hold and Flush they are gathered; else they are written at once.
func (r *Receiver) Accept(d *Delivery) error  { return r.settle(d, true) }
func (r *Receiver) Release(d *Delivery) error { return r.settle(d, false) }

func (r *Receiver) settle(d *Delivery, accepted bool) error {
	select {
	case <-r.done:
		return r.doneErr()
	default:
	}
	if d.rcv != r {
		return fmt.Errorf("amqp: delivery %d was received on another connection; it is not settled on this one", d.ID)
	}
	if d.Settled {
		return nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.werr != nil {
		return r.werr
	}
	r.pending = append(r.pending, settle{id: d.ID, accepted: accepted})
	if r.held {
		return nil
	}
	return r.flushLocked()
}

// Hold gathers the frames written (dispositions, flows, empty frames)
// until Flush.
func (r *Receiver) Hold() {
	r.wmu.Lock()
	r.held = true
	r.wmu.Unlock()
}

// Flush ends the hold and writes what it gathered, the settlements as
// dispositions of ranges of delivery-ids, in one socket write. A failed
// write closes the connection and is returned by every later write.
func (r *Receiver) Flush() error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.held = false
	if r.werr != nil {
		return r.werr
	}
	return r.flushLocked()
}

// flushLocked encodes the pending settlements and writes the buffer.
func (r *Receiver) flushLocked() error {
	if len(r.pending) > 0 {
		var err error
		if r.wbuf, err = appendDispositions(r.wbuf, r.pending); err != nil {
			return err
		}
		r.pending = r.pending[:0]
	}
	if len(r.wbuf) == 0 {
		return nil
	}
	_ = r.nc.SetWriteDeadline(time.Now().Add(r.cfg.WriteTimeout))
	_, err := r.nc.Write(r.wbuf)
	r.lastWrite.Store(time.Now())
	r.wbuf = r.wbuf[:0]
	if cap(r.wbuf) > 4*maxHeld {
		r.wbuf = nil
	}
	if err != nil {
		r.werr = &ConnError{Err: fmt.Errorf("write to the server: %w", err)}
		r.shut()
		return r.werr
	}
	return nil
}

// appendDispositions appends settled dispositions for ss: each run of
// consecutive delivery-ids with one outcome is one disposition (first ..
// last). A run never wraps past 2^32-1.
func appendDispositions(b []byte, ss []settle) ([]byte, error) {
	slices.SortFunc(ss, func(a, b settle) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	for i := 0; i < len(ss); {
		j := i + 1
		for j < len(ss) && ss[j].accepted == ss[i].accepted && ss[j].id == ss[j-1].id+1 && ss[j].id != 0 {
			j++
		}
		d := &Disposition{Role: RoleReceiver, First: ss[i].id, Settled: true, State: &Released{}}
		if ss[i].accepted {
			d.State = &Accepted{}
		}
		if j-i > 1 {
			d.Last = U32(ss[j-1].id)
		}
		var err error
		if b, err = AppendFrame(b, FrameAMQP, 0, d, nil); err != nil {
			return b, err
		}
		i = j
	}
	return b, nil
}

// write appends a frame by enc and writes it, unless held.
func (r *Receiver) write(enc func([]byte) ([]byte, error)) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.werr != nil {
		return r.werr
	}
	var err error
	if len(r.pending) > 0 { // settlements first: a detach must follow them
		if r.wbuf, err = appendDispositions(r.wbuf, r.pending); err != nil {
			return err
		}
		r.pending = r.pending[:0]
	}
	if r.wbuf, err = enc(r.wbuf); err != nil {
		return err
	}
	if r.held && len(r.wbuf) < maxHeld {
		return nil
	}
	return r.flushLocked()
}

// writeNow writes one frame during the handshake.
func (r *Receiver) writeNow(typ byte, p Performative) error {
	b, err := AppendFrame(nil, typ, 0, p, nil)
	if err != nil {
		return err
	}
	if _, err := r.nc.Write(b); err != nil {
		return fmt.Errorf("send %s: %w", Name(p), err)
	}
	return nil
}

// beat sends an empty frame whenever nothing was written for every.
func (r *Receiver) beat(every time.Duration) {
	t := time.NewTicker(every / 4)
	defer t.Stop()
	empty := []byte{0, 0, 0, 8, 2, FrameAMQP, 0, 0}
	for {
		select {
		case <-r.done:
			return
		case now := <-t.C:
			if now.Sub(r.lastWrite.Load()) >= every {
				_ = r.write(func(b []byte) ([]byte, error) { return append(b, empty...), nil })
			}
		}
	}
}

func (r *Receiver) writeClose() {
	_ = r.write(func(b []byte) ([]byte, error) { return AppendFrame(b, FrameAMQP, 0, &Close{}, nil) })
}

// Done is closed once the connection has ended.
func (r *Receiver) Done() <-chan struct{} { return r.done }

// Err says why the connection ended (nil for a clean local close); valid
// once Done is closed.
func (r *Receiver) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Abort closes the socket at once, without the close handshake: the peer
// sees the transport end and takes back every unsettled delivery.
func (r *Receiver) Abort() {
	r.shut()
	if r.reading.Load() {
		<-r.done
	}
}

// Buffered returns how many deliveries were received and wait for
// Receive.
func (r *Receiver) Buffered() int { return len(r.msgs) }

// ReleasedAtClose returns how many deliveries Close released that Receive
// had not returned (received ahead on the link's credit): the server sends
// them again. Valid once Close has returned.
func (r *Receiver) ReleasedAtClose() int { return int(r.releasedAtClose.Load()) }

// Close releases what was received but not taken by Receive, detaches the
// link (closed), ends the session and closes the connection, and waits
// for the peer's close within ctx; past ctx it closes the socket and
// returns ctx's error.
func (r *Receiver) Close(ctx context.Context) error {
	if !r.reading.Load() { // Dial without Attach: nothing to hand back
		r.shut()
		return nil
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	r.Hold()
	for {
		select {
		case d := <-r.msgs:
			if !d.Settled && r.Release(d) == nil {
				r.releasedAtClose.Add(1)
			}
			continue
		default:
		}
		break
	}
	r.closing.Store(true)
	_ = r.write(func(b []byte) ([]byte, error) {
		b, err := AppendFrame(b, FrameAMQP, 0, &Detach{Handle: 0, Closed: true}, nil)
		if err == nil {
			b, err = AppendFrame(b, FrameAMQP, 0, &End{}, nil)
		}
		if err == nil {
			b, err = AppendFrame(b, FrameAMQP, 0, &Close{}, nil)
		}
		return b, err
	})
	_ = r.Flush() // a failed write closed the socket
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.shut()
		<-r.done
		return ctx.Err()
	}
}
