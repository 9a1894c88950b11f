package stompsrc

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxFrameBytes bounds one STOMP frame from the server (headers and body).
// The platform's messages are at most 256 KB (342 KB in base64); anything
// far larger is a broken peer, and go-stomp would allocate a body of any
// announced content-length up front.
const maxFrameBytes = 4 << 20

// maxHeaderLine bounds one command or header line.
const maxHeaderLine = 64 << 10

// frameWatch is the server side of a STOMP connection as seen by the source:
// it passes the bytes through to go-stomp unchanged and follows the frame
// structure on the side, cheaply, to
//   - tell liveness: lastAlive moves on every heart-beat between frames and
//     on every complete frame, not on any byte, so a frame that never ends
//     (a content-length longer than its body) does not pass for a live
//     connection while heart-beat newlines are swallowed as body bytes;
//   - refuse frames over maxFrameBytes before go-stomp allocates them: Read
//     fails with an error naming the size, and the connection is dropped;
//   - remember what was wrong with a malformed frame, so the reconnect is
//     logged with the cause rather than as a network close.
//
// Read is called by go-stomp's one reader goroutine; lastAlive and the
// recorded problem may be read from any goroutine.
type frameWatch struct {
	net.Conn
	lastAlive atomic.Int64 // unix nanoseconds

	// Parser state, touched only by the reader goroutine.
	state     int
	line      []byte // current command or header line
	lines     int    // lines of the current frame so far
	length    int64  // content-length of the current frame, -1 when none
	remaining int64  // body bytes still expected (content-length frames)
	size      int64  // bytes of the current frame so far

	mu      sync.Mutex
	problem string // the last malformed-frame problem seen, "" when none
}

const (
	stBetween   = iota // between frames: newlines are heart-beats
	stHeaders          // in the command line or the headers
	stBodyLen          // in a body with a content-length
	stBodyNUL          // in a body without a content-length: up to NUL
	stExpectNUL        // after a content-length body: the frame's NUL
)

func newFrameWatch(c net.Conn) *frameWatch {
	w := &frameWatch{Conn: c, length: -1}
	w.alive()
	return w
}

func (w *frameWatch) alive() { w.lastAlive.Store(time.Now().UnixNano()) }

// LastAlive is when the server last showed it is alive.
func (w *frameWatch) LastAlive() time.Time { return time.Unix(0, w.lastAlive.Load()) }

// Problem returns what was wrong with the last malformed frame, "" if none.
func (w *frameWatch) Problem() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.problem
}

func (w *frameWatch) setProblem(format string, args ...any) {
	w.mu.Lock()
	w.problem = fmt.Sprintf(format, args...)
	w.mu.Unlock()
}

// errFrameTooLarge is returned by Read for a frame over maxFrameBytes.
type errFrameTooLarge struct{ size int64 }

func (e errFrameTooLarge) Error() string {
	return fmt.Sprintf("the server sent a STOMP frame of %d bytes or more, over the limit of %d: dropping the connection", e.size, maxFrameBytes)
}

func (w *frameWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		if ferr := w.follow(p[:n]); ferr != nil {
			w.setProblem("%v", ferr)
			return 0, ferr
		}
	}
	return n, err
}

// follow advances the parser over b.
func (w *frameWatch) follow(b []byte) error {
	for len(b) > 0 {
		switch w.state {
		case stBetween:
			c := b[0]
			b = b[1:]
			if c == '\n' || c == '\r' {
				w.alive() // a heart-beat
				continue
			}
			w.state, w.lines, w.length, w.size = stHeaders, 0, -1, 1
			w.line = append(w.line[:0], c)
		case stHeaders:
			i := bytes.IndexByte(b, '\n')
			chunk := b
			if i >= 0 {
				chunk = b[:i]
			}
			if len(w.line)+len(chunk) > maxHeaderLine {
				return fmt.Errorf("the server sent a STOMP header line over %d bytes: dropping the connection", maxHeaderLine)
			}
			w.line = append(w.line, chunk...)
			w.size += int64(len(chunk))
			if i < 0 {
				return w.checkSize(nil)
			}
			b = b[i+1:]
			w.size++
			if err := w.endLine(); err != nil {
				return err
			}
		case stBodyLen:
			k := min(int64(len(b)), w.remaining)
			b = b[k:]
			w.remaining -= k
			if w.remaining == 0 {
				w.state = stExpectNUL
			}
		case stBodyNUL:
			i := bytes.IndexByte(b, 0)
			if i < 0 {
				w.size += int64(len(b))
				return w.checkSize(nil)
			}
			w.size += int64(i)
			b = b[i+1:]
			w.frameDone()
		case stExpectNUL:
			if b[0] != 0 {
				w.setProblem("a STOMP frame's body is longer than its content-length header says")
			}
			b = b[1:]
			w.frameDone()
		}
	}
	return nil
}

// endLine handles a complete command or header line.
func (w *frameWatch) endLine() error {
	line := bytes.TrimSuffix(w.line, []byte{'\r'})
	w.lines++
	if len(line) == 0 {
		if w.lines == 1 {
			// An empty line where a command should be: heart-beats.
			w.state = stBetween
			w.alive()
			return nil
		}
		if w.length >= 0 {
			w.state, w.remaining = stBodyLen, w.length
			if w.length == 0 {
				w.state = stExpectNUL
			}
		} else {
			w.state = stBodyNUL
		}
		w.line = w.line[:0]
		return w.checkSize(nil)
	}
	if w.lines > 1 {
		k, v, ok := bytes.Cut(line, []byte{':'})
		switch {
		case !ok:
			w.setProblem("the server sent a malformed STOMP frame (a header line without ':'): %.80q", line)
		case w.length < 0 && string(k) == "content-length":
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				w.setProblem("the server sent a malformed STOMP frame (content-length %.40q)", v)
				break
			}
			w.length = n
			if err := w.checkSize(&n); err != nil {
				return err
			}
		}
	}
	w.line = w.line[:0]
	return nil
}

// checkSize fails when the frame, or the body it announces, is too large.
func (w *frameWatch) checkSize(announced *int64) error {
	total := w.size
	if announced != nil {
		total += *announced
	}
	if total > maxFrameBytes {
		return errFrameTooLarge{size: total}
	}
	return nil
}

func (w *frameWatch) frameDone() {
	w.state = stBetween
	w.line = w.line[:0]
	w.alive()
}
