package mns

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

func TestSinkQueue(t *testing.T) {
	bad := base64.StdEncoding.EncodeToString([]byte("fail-me"))
	f := newFixture(t, mnsemu.Config{Faults: mnsemu.Faults{FailMessage: func(q string, i int, body string) bool { return body == bad }}}, nil)
	s := NewSink(f.c)
	msgs := []bridge.Outgoing{
		{Body: []byte("m0"), ID: "id-0"},
		{Body: make([]byte, 50000), ID: "id-huge"},
		{Body: []byte("fail-me"), ID: "id-2"},
		{Body: []byte("m3"), ID: "id-3", Tag: "ignored for queues"},
	}
	errs := s.Send(context.Background(), bridge.Destination{Kind: bridge.Queue, Name: "q1"}, msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("%d errors for %d messages", len(errs), len(msgs))
	}
	if errs[0] != nil || errs[3] != nil {
		t.Errorf("accepted messages: %v, %v", errs[0], errs[3])
	}
	if !errors.Is(errs[1], ErrBodyTooLarge) || bridge.Retryable(errs[1]) || !strings.Contains(errs[1].Error(), "id-huge") ||
		bridge.ClassOf(errs[1], bridge.ClassRejected) != bridge.ClassTooLarge {
		t.Errorf("huge: %v", errs[1])
	}
	if !bridge.Retryable(errs[2]) || !strings.Contains(errs[2].Error(), "message id-2") {
		t.Errorf("partial failure: %v", errs[2])
	}
	got := f.emu.Messages("q1")
	if len(got) != 2 || got[0].Body != base64.StdEncoding.EncodeToString([]byte("m0")) || got[1].Body != base64.StdEncoding.EncodeToString([]byte("m3")) {
		t.Errorf("stored %+v", got)
	}
}

func TestSinkTopic(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	s := NewSink(f.c, WithTopicConcurrency(3))
	var msgs []bridge.Outgoing
	for i := range 20 {
		msgs = append(msgs, bridge.Outgoing{Body: []byte{byte('a' + i)}, Tag: "pk" + string(rune('a'+i)), ID: "m" + string(rune('a'+i))})
	}
	msgs[7].Tag = strings.Repeat("x", 17)
	errs := s.Send(context.Background(), bridge.Destination{Kind: bridge.Topic, Name: "t1"}, msgs)
	wantOneRefused(t, errs, 7, ErrTagTooLong, "mh")
	p := f.emu.Published("t1")
	if len(p) != 19 {
		t.Fatalf("published %d", len(p))
	}
	tags := map[string]bool{}
	for _, m := range p {
		tags[m.Tag] = true
	}
	if !tags["pka"] || !tags["pkt"] || len(tags) != 19 {
		t.Errorf("tags %v", tags)
	}
}

func TestSinkCancelled(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	s := NewSink(f.c)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, kind := range []bridge.DestinationKind{bridge.Queue, bridge.Topic} {
		errs := s.Send(ctx, bridge.Destination{Kind: kind, Name: "q1"}, []bridge.Outgoing{{Body: []byte("a")}, {Body: []byte("b")}})
		for i, err := range errs {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s message %d: %v", kind, i, err)
			}
		}
	}
	if n := f.emu.Stats().Requests; n != 0 {
		t.Errorf("%d requests after cancel", n)
	}
}

func TestSinkCheck(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	s := NewSink(f.c)
	tests := []struct {
		dest      bridge.Destination
		wantCode  string
		retryable bool
	}{
		{bridge.Destination{Kind: bridge.Queue, Name: "q1"}, "", false},
		{bridge.Destination{Kind: bridge.Topic, Name: "t1"}, "", false},
		{bridge.Destination{Kind: bridge.Queue, Name: "missing"}, "QueueNotExist", false},
		{bridge.Destination{Kind: bridge.Topic, Name: "missing"}, "TopicNotExist", false},
	}
	for _, tt := range tests {
		err := s.Check(context.Background(), tt.dest)
		var me *Error
		switch {
		case tt.wantCode == "" && err != nil:
			t.Errorf("%s: %v", tt.dest, err)
		case tt.wantCode != "" && (!errors.As(err, &me) || me.Code != tt.wantCode || bridge.Retryable(err)):
			t.Errorf("%s: %v, want permanent %s", tt.dest, err, tt.wantCode)
		}
		if missing := tt.wantCode != ""; bridge.MissingDestination(err) != missing {
			t.Errorf("%s: MissingDestination(%v) = %v, want %v", tt.dest, err, !missing, missing)
		}
	}
	if err := s.Check(context.Background(), bridge.Destination{Name: "x"}); err == nil || bridge.Retryable(err) {
		t.Errorf("no kind: %v", err)
	}
	if errs := s.Send(context.Background(), bridge.Destination{Name: "x"}, []bridge.Outgoing{{}}); errs[0] == nil || bridge.Retryable(errs[0]) {
		t.Errorf("send with no kind: %v", errs[0])
	}
}

// TestSinkPassesPlatformBase64Through: a body that is already the
// payload's canonical base64 (Outgoing.Base64) is stored as that text with
// body_encoding base64 (not encoded again), counted by its length against
// the batch limit, and decoded first with body_encoding raw.
func TestSinkPassesPlatformBase64Through(t *testing.T) {
	payload := []byte(`{"t":21.5}`)
	text := base64.StdEncoding.EncodeToString(payload)
	for _, raw := range []bool{false, true} {
		f := newFixture(t, mnsemu.Config{}, func(c *Config) {
			if raw {
				c.BodyEncoding = "raw"
			}
		})
		s := NewSink(f.c)
		msgs := []bridge.Outgoing{{Body: []byte(text), Base64: true, ID: "pre"}, {Body: payload, ID: "plain"}}
		for i, err := range s.Send(context.Background(), bridge.Destination{Kind: bridge.Queue, Name: "q1"}, msgs) {
			if err != nil {
				t.Fatalf("raw=%v: message %d: %v", raw, i, err)
			}
		}
		want := text
		if raw {
			want = string(payload)
		}
		got := f.emu.Messages("q1")
		if len(got) != 2 || got[0].Body != want || got[1].Body != want {
			t.Fatalf("raw=%v: stored %+v, want both as %q", raw, got, want)
		}
		lim := s.Limits(bridge.Destination{Kind: bridge.Queue, Name: "q1"})
		if n := lim.Size(&msgs[0], len(text)); !raw && n != len(text) {
			t.Errorf("a pre-encoded body of %d counts %d", len(text), n)
		}
	}
}
