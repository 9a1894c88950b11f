package stompsrc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// chunks is a reader that returns each chunk as a separate read, then EOF.
type chunks []string

func (c *chunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	if n == len((*c)[0]) {
		*c = (*c)[1:]
	} else {
		(*c)[0] = (*c)[0][n:]
	}
	return n, nil
}

// readerWire is a wire that reads raw (no socket; for parsing tests).
func readerWire(raw []byte) *wire {
	return &wire{br: bufio.NewReader(bytes.NewReader(raw))}
}

// readAll reads frames until the first error and returns it.
func readAll(w *wire) error {
	for {
		if _, err := w.read(); err != nil {
			return err
		}
	}
}

func TestWireLiveness(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		alive  bool // lastAlive moved after the start
	}{
		{"heart-beats", []string{"\n", "\r\n"}, true},
		{"complete frame with content-length", []string{"MESSAGE\ncontent-length:3\n\nab", "c\x00"}, true},
		{"complete frame without content-length", []string{"MESSAGE\nmessage-id:1\n\nbody\x00"}, true},
		{"frame split byte by byte", strings.Split("MESSAGE\nk:v\n\nxyz\x00", ""), true},
		{"content-length longer than the body, then newlines", []string{"MESSAGE\ncontent-length:1000\n\nshort\x00", "\n", "\n", "\n"}, false},
		{"half a frame", []string{"MESSAGE\nk:v\n\npartial body"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := chunks(tt.chunks)
			w := &wire{br: bufio.NewReaderSize(&c, 16)}
			long := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
			w.lastAlive.Store(long)
			err := readAll(w)
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read: %v", err)
			}
			if got := !w.lastAlive.Load().Equal(long); got != tt.alive {
				t.Errorf("alive = %v, want %v", got, tt.alive)
			}
		})
	}
}

func TestWireRefusesHugeFramesAndNamesMalformedOnes(t *testing.T) {
	w := readerWire([]byte("MESSAGE\nsubscription:1\ncontent-length:99999999\n\nshort\x00"))
	_, err := w.read()
	var big errFrameTooLarge
	if !errors.As(err, &big) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("announced 99999999 bytes: %v", err)
	}
	if !strings.Contains(w.Problem(), "over the limit") {
		t.Errorf("problem = %q", w.Problem())
	}
	w = readerWire([]byte("MESSAGE\n\n" + strings.Repeat("x", maxFrameBytes+1)))
	if _, err := w.read(); !errors.As(err, &big) {
		t.Fatalf("an endless body without content-length is not refused: %v", err)
	}
	w = readerWire([]byte("MESSAGE\n" + strings.Repeat("h", maxHeaderLine+1) + ":v\n\n\x00"))
	if _, err := w.read(); err == nil || !strings.Contains(w.Problem(), "header line over") {
		t.Fatalf("a huge header line: %v, problem %q", err, w.Problem())
	}
	w = readerWire([]byte("MESSAGE\nthis line has no colon\n\nbody\x00"))
	if _, err := w.read(); err == nil {
		t.Fatal("a header line without ':' was read as a frame")
	}
	if p := w.Problem(); !strings.Contains(p, "malformed") || !strings.Contains(p, "no colon") {
		t.Errorf("problem = %q", p)
	}
	w = readerWire([]byte("MESSAGE\ncontent-length:2\n\nabc\x00"))
	if _, err := w.read(); err == nil || !strings.Contains(w.Problem(), "longer than its content-length") {
		t.Errorf("a body longer than content-length: %v, problem %q", err, w.Problem())
	}
}

// A binary body with NULs is read byte for byte by its content-length, STOMP
// 1.2 header escapes are decoded, and a too-large frame read from a socket
// fails with the problem recorded.
func TestWireReadsFramesExactly(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	w := newWire(b)
	go a.Write([]byte("\nMESSAGE\ncontent-length:4\nk\\cey:a\\nb\\\\c\n\n\x00\x01\x02\x03\x00\n"))
	f, err := w.read()
	if err != nil {
		t.Fatal(err)
	}
	if f.Command != "MESSAGE" || !bytes.Equal(f.Body, []byte{0, 1, 2, 3}) || f.Header.Get("k:ey") != "a\nb\\c" {
		t.Fatalf("frame %s %v %q", f.Command, f.Header, f.Body)
	}
	if time.Since(w.LastAlive()) > time.Minute {
		t.Error("not alive after a complete frame")
	}
	go a.Write([]byte("MESSAGE\ncontent-length:99999999\n\n"))
	if _, err := w.read(); err == nil || w.Problem() == "" {
		t.Fatalf("read of a huge frame: %v, problem %q", err, w.Problem())
	}
}

// The frames the source writes are what STOMP 1.2 says: CONNECT headers as
// they are, others escaped.
func TestAppendFrame(t *testing.T) {
	got := string(appendFrame(nil, "CONNECT", "login", "a:b", "passcode", "p"))
	if got != "CONNECT\nlogin:a:b\npasscode:p\n\n\x00" {
		t.Errorf("CONNECT = %q", got)
	}
	got = string(appendFrame(nil, "ACK", "id", "x:y\n\\"))
	if got != "ACK\nid:x\\cy\\n\\\\\n\n\x00" {
		t.Errorf("ACK = %q", got)
	}
}
