package amqpsrc

import (
	"bytes"
	"errors"
	"net"
	"testing"
)

// writesConn records every Write as one socket write; Write fails with err
// once set.
type writesConn struct {
	net.Conn // nil: only Write and Close are used
	writes   [][]byte
	err      error
	closed   bool
}

func (c *writesConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *writesConn) Close() error {
	c.closed = true
	return nil
}

func TestHoldWriterGathersUntilFlush(t *testing.T) {
	c := &writesConn{}
	w := newHoldWriter(c)
	if _, err := w.Write([]byte("a")); err != nil || len(c.writes) != 1 {
		t.Fatalf("not held: %d writes (%v), want it written at once", len(c.writes), err)
	}
	w.Hold()
	for _, f := range []string{"bb", "ccc", "d"} {
		if n, err := w.Write([]byte(f)); n != len(f) || err != nil {
			t.Fatalf("held Write = %d, %v", n, err)
		}
	}
	if len(c.writes) != 1 {
		t.Fatalf("%d writes while held, want none", len(c.writes)-1)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(c.writes) != 2 || string(c.writes[1]) != "bbcccd" {
		t.Fatalf("writes %q, want the held frames in one write, in order", c.writes)
	}
	if err := w.Flush(); err != nil || len(c.writes) != 2 {
		t.Errorf("an empty Flush wrote (%v)", err)
	}
	if _, err := w.Write([]byte("e")); err != nil || len(c.writes) != 3 {
		t.Errorf("after Flush the writer still holds")
	}
}

func TestHoldWriterBoundsWhatItHolds(t *testing.T) {
	c := &writesConn{}
	w := newHoldWriter(c)
	w.Hold()
	frame := make([]byte, maxHeld/4+1)
	for range 4 {
		if _, err := w.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.writes) != 1 || len(c.writes[0]) != 4*len(frame) {
		t.Fatalf("%d writes, want one as the hold passed %d bytes", len(c.writes), maxHeld)
	}
	if _, err := w.Write([]byte("x")); err != nil || len(c.writes) != 1 {
		t.Errorf("the writer stopped holding after a bounded write")
	}
}

func TestHoldWriterFailedFlushClosesAndSticks(t *testing.T) {
	broken := errors.New("broken pipe")
	c := &writesConn{}
	w := newHoldWriter(c)
	w.Hold()
	if _, err := w.Write([]byte("frame")); err != nil {
		t.Fatal(err)
	}
	c.err = broken
	if err := w.Flush(); !errors.Is(err, broken) {
		t.Fatalf("Flush = %v, want the write's error", err)
	}
	if !c.closed {
		t.Error("a failed flush left the connection open (go-amqp would take the frames as sent)")
	}
	c.err = nil
	if _, err := w.Write([]byte("later")); !errors.Is(err, broken) {
		t.Errorf("Write after a failed flush = %v, want the flush's error", err)
	}
	if err := w.Flush(); !errors.Is(err, broken) {
		t.Errorf("Flush after a failed flush = %v", err)
	}
}
