package amqp10

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Protocol headers (part 2, section 2.2): the client sends one, the server
// answers with the one it accepts.
var (
	HeaderAMQP = [8]byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}
	HeaderSASL = [8]byte{'A', 'M', 'Q', 'P', 3, 1, 0, 0}
)

// Frame types.
const (
	FrameAMQP byte = 0
	FrameSASL byte = 1
)

// MinMaxFrameSize is the smallest max-frame-size a peer may announce.
const MinMaxFrameSize = 512

// Frame is one frame: its type, channel and body. An AMQP frame with no
// body is an empty (heart-beat) frame; Body is then nil.
type Frame struct {
	Type    byte
	Channel uint16
	// Body is the performative (or SASL frame) followed, for a transfer,
	// by payload bytes.
	Body any
	// Payload is the bytes after the performative (transfer only).
	Payload []byte
}

// ReadProtocolHeader reads the 8-byte protocol header.
func ReadProtocolHeader(r io.Reader) ([8]byte, error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return h, err
	}
	if !bytes.Equal(h[:4], []byte("AMQP")) {
		return h, fmt.Errorf("%w: protocol header %q does not start with \"AMQP\" (is this an AMQP 1.0 client?)", ErrMalformed, h[:])
	}
	return h, nil
}

// ReadFrame reads one frame of at most maxSize bytes and decodes its body.
// It returns io.EOF only when the stream ends cleanly between frames.
func ReadFrame(r io.Reader, maxSize uint32) (Frame, error) {
	f, _, err := readFrameInto(r, maxSize, nil)
	return f, err
}

// readFrameInto is ReadFrame reading into buf when it is large enough; it
// returns the buffer it used (Payload refers to it).
func readFrameInto(r io.Reader, maxSize uint32, buf []byte) (Frame, []byte, error) {
	buf, f, err := readRawFrame(r, maxSize, buf)
	if err != nil {
		return f, buf, err
	}
	f, err = ParseFrame(buf, maxSize)
	return f, buf, err
}

// readRawFrame reads one whole frame, header included, into buf when it is
// large enough, after checking the header (so nothing larger than maxSize
// is allocated). On an error the Frame holds what the header said.
func readRawFrame(r io.Reader, maxSize uint32, buf []byte) ([]byte, Frame, error) {
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return buf, Frame{}, fmt.Errorf("frame header cut short: %w", err)
		}
		return buf, Frame{}, err
	}
	f, err := checkHeader(h[:], maxSize)
	if err != nil {
		return buf, f, err
	}
	size := binary.BigEndian.Uint32(h[:4])
	if uint32(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	copy(buf, h[:])
	if _, err := io.ReadFull(r, buf[8:]); err != nil {
		return buf, f, fmt.Errorf("frame of %d bytes cut short: %w", size, noEOF(err))
	}
	return buf, f, nil
}

// checkHeader checks a frame header against maxSize and returns the
// frame's type and channel.
func checkHeader(h []byte, maxSize uint32) (Frame, error) {
	size := binary.BigEndian.Uint32(h[:4])
	doff := h[4]
	f := Frame{Type: h[5], Channel: binary.BigEndian.Uint16(h[6:])}
	switch {
	case size < 8:
		return f, fmt.Errorf("%w: frame size %d is below the 8-byte header", ErrMalformed, size)
	case size > maxSize:
		return f, fmt.Errorf("%w: frame size %d exceeds the max-frame-size %d", ErrMalformed, size, maxSize)
	case doff < 2 || uint32(doff)*4 > size:
		return f, fmt.Errorf("%w: data offset %d is outside the frame of %d bytes", ErrMalformed, doff, size)
	case f.Type != FrameAMQP && f.Type != FrameSASL:
		return f, fmt.Errorf("%w: unknown frame type %d", ErrMalformed, f.Type)
	}
	return f, nil
}

// ParseFrame decodes one whole frame, header included. Payload refers to
// b; nothing else does.
func ParseFrame(b []byte, maxSize uint32) (Frame, error) {
	if len(b) < 8 {
		return Frame{}, fmt.Errorf("%w: frame of %d bytes is below the 8-byte header", ErrMalformed, len(b))
	}
	f, err := checkHeader(b, maxSize)
	if err != nil {
		return f, err
	}
	if size := binary.BigEndian.Uint32(b[:4]); size != uint32(len(b)) {
		return f, fmt.Errorf("%w: frame size %d does not match its %d bytes", ErrMalformed, size, len(b))
	}
	body := b[int(b[4])*4:]
	if len(body) == 0 {
		if f.Type == FrameSASL {
			return f, fmt.Errorf("%w: empty SASL frame", ErrMalformed)
		}
		return f, nil
	}
	v, n, err := Decode(body)
	if err != nil {
		return f, fmt.Errorf("frame body: %w", err)
	}
	if f.Body, err = parseBody(f.Type, v); err != nil {
		return f, err
	}
	if n < len(body) {
		if _, ok := f.Body.(*Transfer); !ok {
			return f, fmt.Errorf("%w: %d bytes after the %s performative (only a transfer carries a payload)",
				ErrMalformed, len(body)-n, Name(f.Body))
		}
		f.Payload = body[n:]
	}
	return f, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendFrame appends the encoding of a frame to b. A nil body makes an
// empty (heart-beat) frame.
func AppendFrame(b []byte, typ byte, channel uint16, body Performative, payload []byte) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 2, typ, byte(channel>>8), byte(channel))
	if body != nil {
		var err error
		if b, err = Append(b, body.described()); err != nil {
			return b[:start], fmt.Errorf("encode %s: %w", Name(body), err)
		}
	}
	b = append(b, payload...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}
