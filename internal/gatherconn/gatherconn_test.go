package gatherconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// scripted is a net.Conn whose reads return the next chunk of a script,
// each after advancing a fake clock by its wait.
type scripted struct {
	net.Conn
	clock  *fakeClock
	chunks []chunk
	sizes  []int // len(p) of every Read
}

type chunk struct {
	data []byte
	wait time.Duration // how long the read blocked before data arrived
	err  error
}

func (s *scripted) Read(p []byte) (int, error) {
	s.sizes = append(s.sizes, len(p))
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	c := s.chunks[0]
	s.chunks = s.chunks[1:]
	s.clock.t = s.clock.t.Add(c.wait)
	n := copy(p, c.data)
	if n < len(c.data) {
		panic("chunk larger than the read")
	}
	return n, c.err
}

type fakeClock struct {
	t      time.Time
	slept  []time.Duration
	before []int // reads made before each sleep
	conn   *scripted
}

func (f *fakeClock) now() time.Time { return f.t }
func (f *fakeClock) sleep(d time.Duration) {
	f.slept = append(f.slept, d)
	f.before = append(f.before, len(f.conn.sizes))
	f.t = f.t.Add(d)
}

func newScripted(pause time.Duration, chunks ...chunk) (*Conn, *scripted, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	s := &scripted{clock: clk, chunks: chunks}
	clk.conn = s
	c := New(s, pause)
	c.now, c.sleep = clk.now, clk.sleep
	return c, s, clk
}

// readAll reads c with small reads (as a TLS record reader does) until an
// error, and returns the bytes and the error.
func readAll(c *Conn) ([]byte, error) {
	var out []byte
	p := make([]byte, 700)
	for {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if err != nil {
			return out, err
		}
	}
}

func TestPassesDataAndErrorsThrough(t *testing.T) {
	boom := errors.New("boom")
	c, _, _ := newScripted(time.Millisecond,
		chunk{data: bytes.Repeat([]byte("a"), 1500)},
		chunk{data: []byte("bc"), err: boom}, // data with an error: the data first
	)
	c.Gather()
	got, err := readAll(c)
	if want := string(bytes.Repeat([]byte("a"), 1500)) + "bc"; string(got) != want {
		t.Fatalf("read %d bytes %.20q..., want %d", len(got), got, len(want))
	}
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}

func TestPausesOnlyWhileDense(t *testing.T) {
	ms := time.Millisecond
	small := []byte("MESSAGE")
	c, s, clk := newScripted(ms,
		chunk{data: small, wait: 100 * time.Microsecond}, // 1: dense: data came within the pause
		chunk{data: small},                                 // 2: pauses first; dense again
		chunk{data: small, wait: 5 * ms},                   // 3: pauses first; waited longer than the pause: not dense
		chunk{data: small, wait: 20 * ms},                  // 4: no pause; not dense
		chunk{data: bytes.Repeat([]byte("x"), BufferSize)}, // 5: no pause; filled the buffer: more may wait
		chunk{data: small},                                 // 6: no pause (the socket had more); dense
	)
	c.Gather()
	if _, err := readAll(c); err != io.EOF {
		t.Fatalf("err = %v", err)
	}
	// Pauses before reads 2 and 3 and before the final read (after 6).
	if want := []int{1, 2, 6}; !slices.Equal(clk.before, want) {
		t.Fatalf("paused before read numbers %v (0-based counts of reads made), want %v", clk.before, want)
	}
	for _, d := range clk.slept {
		if d != ms {
			t.Fatalf("slept %s, want the pause %s", d, ms)
		}
	}
	reads, pauses := c.Stats()
	if reads != int64(len(s.sizes)) || pauses != 3 {
		t.Fatalf("Stats = %d reads, %d pauses; want %d, 3", reads, pauses, len(s.sizes))
	}
}

func TestNoPauseBeforeGatherOrWithZeroPause(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pause  time.Duration
		gather bool
	}{{"before Gather", time.Millisecond, false}, {"pause 0", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, clk := newScripted(tc.pause, chunk{data: []byte("a")}, chunk{data: []byte("b")}, chunk{data: []byte("c")})
			if tc.gather {
				c.Gather()
			}
			got, _ := readAll(c)
			if string(got) != "abc" || len(clk.slept) != 0 {
				t.Fatalf("read %q with %d pauses, want abc with none", got, len(clk.slept))
			}
		})
	}
}

func TestOneSocketReadServesManySmallReads(t *testing.T) {
	frames := bytes.Repeat([]byte("0123456789"), 300) // 3,000 bytes
	c, s, _ := newScripted(time.Millisecond, chunk{data: frames})
	c.Gather()
	got, _ := readAll(c)
	if !bytes.Equal(got, frames) {
		t.Fatal("data changed")
	}
	// One read of the buffer for the data, one that ends it.
	if len(s.sizes) != 2 || s.sizes[0] != BufferSize {
		t.Fatalf("socket reads of sizes %v, want [%d %d]", s.sizes, BufferSize, BufferSize)
	}
}

func TestLargeReadsGoStraightToTheCaller(t *testing.T) {
	data := bytes.Repeat([]byte("z"), 100)
	c, s, _ := newScripted(time.Millisecond, chunk{data: data})
	p := make([]byte, BufferSize+10)
	n, err := c.Read(p)
	if err != nil || n != len(data) || s.sizes[0] != len(p) {
		t.Fatalf("Read = %d, %v; socket read of %d; want %d into the caller's %d bytes", n, err, s.sizes[0], len(data), len(p))
	}
	if c.buf != nil {
		t.Fatal("allocated a buffer it did not need")
	}
}

func TestOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := bytes.Repeat([]byte("frame\x00"), 20000)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		for i := 0; i < len(want); i += 6000 {
			s.Write(want[i:min(i+6000, len(want))])
		}
		s.Close()
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := New(nc, 100*time.Microsecond)
	c.Gather()
	defer c.Close()
	got, err := readAll(c)
	if err != io.EOF || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, err %v; want %d and EOF", len(got), err, len(want))
	}
}
