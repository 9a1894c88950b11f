package stompsrc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/monotime"
)

// maxFrameBytes bounds one STOMP frame from the server (headers and body).
// The platform's messages are at most 256 KB (342 KB in base64); anything
// far larger is a broken peer, and a body of any announced content-length
// would otherwise be allocated up front.
const maxFrameBytes = 4 << 20

// maxHeaderLine bounds one command or header line.
const maxHeaderLine = 64 << 10

// readBufferSize is the read buffer of a connection: a few typical frames,
// so that one socket read serves many.
const readBufferSize = 32 << 10

// wire is the source's side of one STOMP connection, with go-stomp's frame
// types. Frames are read by one reader (the connection's receive loop, in
// its own goroutine: no goroutine between the socket and the pipeline) in
// one pass that also
//   - tells liveness: lastAlive moves on every heart-beat between frames
//     and on every complete frame, not on any byte, so a frame that never
//     ends does not pass for a live connection;
//   - refuses frames over maxFrameBytes before allocating them;
//   - names what is wrong with a malformed frame (Problem), so the
//     reconnect is logged with the cause rather than as a network close.
//
// Only as much is read as the reader asks for: while the receive loop waits
// for the pipeline, nothing more is taken from the socket (backpressure
// reaches the server through TCP). Frames are written under a mutex, from
// any goroutine, each write one socket write.
type wire struct {
	nc        net.Conn
	br        *bufio.Reader
	lastAlive monotime.Stamp
	// mid is true while a frame is partly read (reader goroutine only).
	mid bool

	// Scratch for the header lines of the frame being read, reused.
	hbuf []byte
	hoff []int // per header: name start, name end, value end in hbuf
	// in is the frame read last, which read returns: it and its Header
	// slice are reused by the next read (the header strings and the body
	// are the frame's own and stay valid).
	in inFrame

	mu      sync.Mutex
	problem string // the last malformed-frame problem seen, "" when none

	wmu  sync.Mutex
	wbuf []byte
}

func newWire(nc net.Conn) *wire {
	w := &wire{nc: nc, br: bufio.NewReaderSize(nc, readBufferSize)}
	w.alive()
	return w
}

func (w *wire) alive() { w.lastAlive.Store(time.Now()) }

// LastAlive is when the server last showed it is alive.
func (w *wire) LastAlive() time.Time { return w.lastAlive.Load() }

// Problem returns what was wrong with the last malformed frame, "" if none.
func (w *wire) Problem() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.problem
}

// malformed records a problem and returns it as an error.
func (w *wire) malformed(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	w.mu.Lock()
	w.problem = err.Error()
	w.mu.Unlock()
	return err
}

// Close closes the socket; a blocked read or write returns.
func (w *wire) Close() error { return w.nc.Close() }

// errFrameTooLarge is returned by read for a frame over maxFrameBytes.
type errFrameTooLarge struct{ size int64 }

func (e errFrameTooLarge) Error() string {
	return fmt.Sprintf("the server sent a STOMP frame of %d bytes or more, over the limit of %d: dropping the connection", e.size, maxFrameBytes)
}

// intern returns the commands and headers the server sends as constant
// strings, so that reading them allocates nothing.
func intern(b []byte) string {
	switch string(b) {
	case frame.MESSAGE:
		return frame.MESSAGE
	case frame.RECEIPT:
		return frame.RECEIPT
	case frame.ERROR:
		return frame.ERROR
	case frame.CONNECTED:
		return frame.CONNECTED
	case frame.Subscription:
		return frame.Subscription
	case frame.MessageId:
		return frame.MessageId
	case frame.Destination:
		return frame.Destination
	case frame.Ack:
		return frame.Ack
	case frame.ContentLength:
		return frame.ContentLength
	case frame.ContentType:
		return frame.ContentType
	case frame.ReceiptId:
		return frame.ReceiptId
	case frame.Message:
		return frame.Message
	case frame.Version:
		return frame.Version
	case frame.HeartBeat:
		return frame.HeartBeat
	case hdrTopic:
		return hdrTopic
	case hdrMessageID:
		return hdrMessageID
	case hdrGenerateTime:
		return hdrGenerateTime
	}
	return string(b)
}

// inFrame is a frame from the server. Its header values share one string
// per frame (one allocation for all of them).
type inFrame struct {
	Command string
	Header  header
	Body    []byte
}

// header is a frame's headers in order: name, value, name, value, ...
// It has the read methods of go-stomp's frame.Header.
type header []string

// Len is the number of headers.
func (h header) Len() int { return len(h) / 2 }

// GetAt returns the i-th header.
func (h header) GetAt(i int) (string, string) { return h[2*i], h[2*i+1] }

// Contains returns the first value of name.
func (h header) Contains(name string) (string, bool) {
	for i := 0; i+1 < len(h); i += 2 {
		if h[i] == name {
			return h[i+1], true
		}
	}
	return "", false
}

// Get returns the first value of name, "" when absent.
func (h header) Get(name string) string {
	v, _ := h.Contains(name)
	return v
}

// stompFrame converts f to go-stomp's type (for an ERROR's stomp.Error).
func (f *inFrame) stompFrame() *frame.Frame {
	return &frame.Frame{Command: f.Command, Header: frame.NewHeader(f.Header...), Body: f.Body}
}

// serverErr is the error of an ERROR frame, as go-stomp makes it.
func serverErr(f *inFrame) error {
	return stomp.Error{Message: f.Header.Get(frame.Message), Frame: f.stompFrame()}
}

// read returns the next frame from the server; heart-beats are consumed
// (and counted as liveness) on the way. Header values are unescaped as
// STOMP 1.2 says (not those of CONNECTED). Any error ends the connection:
// the problem of a malformed or too large frame is kept for Problem.
//
// The frame is valid until the next read, which reuses it and its Header
// slice: keep its strings and its Body, not the frame or the slice.
func (w *wire) read() (*inFrame, error) {
	var line []byte
	var err error
	for {
		line, err = w.line()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 {
			break
		}
		w.alive() // a heart-beat
	}
	w.mid = true
	size := int64(len(line)) + 1
	clear(w.in.Header) // the previous frame's strings are not kept alive
	w.in = inFrame{Command: intern(line), Header: w.in.Header[:0]}
	f := &w.in
	switch f.Command {
	case frame.MESSAGE, frame.RECEIPT, frame.ERROR, frame.CONNECTED:
	default:
		return nil, w.malformed("the server sent a malformed STOMP frame (unknown command %.40q): dropping the connection", line)
	}
	escaped := f.Command != frame.CONNECTED
	length := int64(-1)
	w.hbuf, w.hoff = w.hbuf[:0], w.hoff[:0]
	needUnescape := false
	for {
		line, err = w.line()
		if err != nil {
			return nil, err
		}
		size += int64(len(line)) + 1
		if size > maxFrameBytes {
			return nil, w.malformed("%w", errFrameTooLarge{size: size})
		}
		if len(line) == 0 {
			break
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, w.malformed("the server sent a malformed STOMP frame (a header line without ':'): %.80q", line)
		}
		if escaped && bytes.IndexByte(line, '\\') >= 0 {
			needUnescape = true
		}
		if length < 0 && string(line[:i]) == frame.ContentLength {
			v := line[i+1:]
			n, perr := strconv.ParseInt(string(v), 10, 64)
			if perr != nil || n < 0 {
				return nil, w.malformed("the server sent a malformed STOMP frame (content-length %.40q)", v)
			}
			if size+n > maxFrameBytes {
				return nil, w.malformed("%w", errFrameTooLarge{size: size + n})
			}
			length = n
		}
		start := len(w.hbuf)
		w.hbuf = append(w.hbuf, line...)
		w.hoff = append(w.hoff, start, start+i, len(w.hbuf))
	}
	if err := w.headers(f, needUnescape); err != nil {
		return nil, err
	}
	if length >= 0 {
		f.Body = make([]byte, length)
		if _, err := io.ReadFull(w.br, f.Body); err != nil {
			return nil, eofIsUnexpected(err)
		}
		c, err := w.br.ReadByte()
		if err != nil {
			return nil, eofIsUnexpected(err)
		}
		if c != 0 {
			return nil, w.malformed("a STOMP frame's body is longer than its content-length header says")
		}
	} else {
		body, err := w.untilNUL(size)
		if err != nil {
			return nil, err
		}
		f.Body = body
	}
	w.mid = false
	w.alive()
	return f, nil
}

// headers fills f.Header from the lines gathered in hbuf: one string for
// all of them, names interned.
func (w *wire) headers(f *inFrame, unescapeAll bool) error {
	n := len(w.hoff) / 3
	if n == 0 {
		return nil
	}
	block := string(w.hbuf)
	h := f.Header[:0]
	for k := 0; k < len(w.hoff); k += 3 {
		ks, ke, ve := w.hoff[k], w.hoff[k+1], w.hoff[k+2]
		name, value := intern(w.hbuf[ks:ke]), block[ke+1:ve]
		if unescapeAll {
			var err error
			if name, err = unescape(w.hbuf[ks:ke]); err == nil {
				value, err = unescape(w.hbuf[ke+1 : ve])
			}
			if err != nil {
				return w.malformed("the server sent a malformed STOMP frame (header %.40q: %v)", w.hbuf[ks:ke], err)
			}
		}
		h = append(h, name, value)
	}
	f.Header = h
	return nil
}

// line reads one command or header line, without its LF or CRLF. The
// returned slice is valid until the next read.
func (w *wire) line() ([]byte, error) {
	b, err := w.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than the buffer: gather it, within maxHeaderLine.
		long := append([]byte(nil), b...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(long) > maxHeaderLine {
				return nil, w.malformed("the server sent a STOMP header line over %d bytes: dropping the connection", maxHeaderLine)
			}
			b, err = w.br.ReadSlice('\n')
			long = append(long, b...)
		}
		b = long
	}
	if err != nil {
		if w.mid {
			return nil, eofIsUnexpected(err)
		}
		return nil, err
	}
	if len(b) > maxHeaderLine {
		return nil, w.malformed("the server sent a STOMP header line over %d bytes: dropping the connection", maxHeaderLine)
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b, nil
}

// untilNUL reads a body without content-length: up to the NUL.
func (w *wire) untilNUL(size int64) ([]byte, error) {
	var body []byte
	for {
		b, err := w.br.ReadSlice(0)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, eofIsUnexpected(err)
		}
		size += int64(len(b))
		if size > maxFrameBytes {
			return nil, w.malformed("%w", errFrameTooLarge{size: size})
		}
		if err == nil {
			return append(body, b[:len(b)-1]...), nil
		}
		body = append(body, b...)
	}
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// STOMP 1.2 escapes four octets in the header names and values of every
// frame but CONNECT and CONNECTED: escaped[c] is the letter that follows the
// backslash for c (0: c stands as it is), unescaped[l] the octet for the
// letter l (0: no such escape).
var escaped, unescaped = func() (e, u [256]byte) {
	for _, p := range [...][2]byte{{'\n', 'n'}, {'\r', 'r'}, {':', 'c'}, {'\\', '\\'}} {
		e[p[0]], u[p[1]] = p[1], p[0]
	}
	return e, u
}()

// unescape decodes a STOMP 1.2 header name or value.
func unescape(b []byte) (string, error) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i == len(b) {
			return "", errors.New("a '\\' at the end")
		}
		r := unescaped[b[i]]
		if r == 0 {
			return "", fmt.Errorf("unknown escape \\%c", b[i])
		}
		out = append(out, r)
	}
	return string(out), nil
}

// appendFrame appends a client frame: command, headers (pairs; escaped
// unless CONNECT) and an empty body.
func appendFrame(dst []byte, command string, headers ...string) []byte {
	dst = append(dst, command...)
	dst = append(dst, '\n')
	for i := 0; i+1 < len(headers); i += 2 {
		if command == frame.CONNECT {
			dst = append(dst, headers[i]...)
			dst = append(dst, ':')
			dst = append(dst, headers[i+1]...)
		} else {
			dst = appendEscaped(dst, headers[i])
			dst = append(dst, ':')
			dst = appendEscaped(dst, headers[i+1])
		}
		dst = append(dst, '\n')
	}
	return append(dst, '\n', 0)
}

func appendEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if e := escaped[s[i]]; e != 0 {
			dst = append(dst, '\\', e)
		} else {
			dst = append(dst, s[i])
		}
	}
	return dst
}

// send writes one frame.
func (w *wire) send(command string, headers ...string) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.wbuf = appendFrame(w.wbuf[:0], command, headers...)
	_, err := w.nc.Write(w.wbuf)
	return err
}

// write writes frames already encoded, in one socket write.
func (w *wire) write(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.nc.Write(b)
	return err
}
