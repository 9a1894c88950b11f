package stompsrc

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// feed runs the watcher over chunks as separate reads and returns the first
// error.
func feed(w *frameWatch, chunks ...string) error {
	for _, c := range chunks {
		if err := w.follow([]byte(c)); err != nil {
			return err
		}
	}
	return nil
}

func TestFrameWatchLiveness(t *testing.T) {
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
			w := &frameWatch{length: -1}
			w.lastAlive.Store(1)
			if err := feed(w, tt.chunks...); err != nil {
				t.Fatal(err)
			}
			if got := w.lastAlive.Load() != 1; got != tt.alive {
				t.Errorf("alive = %v, want %v", got, tt.alive)
			}
		})
	}
}

func TestFrameWatchRefusesHugeFramesAndRecordsMalformedOnes(t *testing.T) {
	w := &frameWatch{length: -1}
	err := feed(w, "MESSAGE\nsubscription:1\ncontent-length:99999999\n\nshort\x00")
	var big errFrameTooLarge
	if !errors.As(err, &big) || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("announced 99999999 bytes: %v", err)
	}
	w = &frameWatch{length: -1}
	if err := feed(w, "MESSAGE\n", strings.Repeat("x", maxFrameBytes+1)); err == nil {
		t.Fatal("an endless body without content-length is not refused")
	}
	w = &frameWatch{length: -1}
	if err := feed(w, "MESSAGE\nthis line has no colon\n\nbody\x00"); err != nil {
		t.Fatal(err)
	}
	if p := w.Problem(); !strings.Contains(p, "malformed") || !strings.Contains(p, "no colon") {
		t.Errorf("problem = %q", p)
	}
}

// The watcher passes every byte through unchanged, and fails the read of a
// too-large frame.
func TestFrameWatchReadPassesBytesThrough(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	w := newFrameWatch(b)
	msg := "MESSAGE\ncontent-length:4\n\n\x00\x01\x02\x03\x00\n"
	go a.Write([]byte(msg))
	buf := make([]byte, len(msg))
	n := 0
	for n < len(msg) {
		k, err := w.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	if !bytes.Equal(buf, []byte(msg)) {
		t.Fatalf("bytes changed: %q", buf)
	}
	if time.Since(w.LastAlive()) > time.Minute {
		t.Error("not alive after a complete frame")
	}
	go a.Write([]byte("MESSAGE\ncontent-length:99999999\n\n"))
	if _, err := w.Read(buf); err == nil || w.Problem() == "" {
		t.Fatalf("read of a huge frame: %v, problem %q", err, w.Problem())
	}
}
