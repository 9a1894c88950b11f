package mns

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

type rcvProp struct{ Name, Value, Type string }

type rcvMsg struct {
	MessageBody    string
	UserProperties struct {
		List []rcvProp `xml:"PropertyValue"`
	}
	SystemProperties struct {
		List []rcvProp `xml:"SystemPropertyValue"`
	}
	MessageGroupId string
}

// receiveAll takes every message of q with BatchReceiveMessage, through the
// client's own signing.
func receiveAll(t *testing.T, c *Client, q string) []rcvMsg {
	t.Helper()
	rb := replyPool.Get().(*replyBuf)
	defer replyPool.Put(rb)
	st, _, err := c.roundTrip(context.Background(), target{"BatchReceiveMessage", "queue", q}, "GET", "/queues/"+q+"/messages?numOfMessages=16&waitseconds=0", nil, nil, rb)
	if err != nil || st != 200 {
		t.Fatalf("receive: %d %v %s", st, err, rb.buf.Bytes())
	}
	var ms struct {
		Msgs []rcvMsg `xml:"Message"`
	}
	if err := xml.Unmarshal(rb.buf.Bytes(), &ms); err != nil {
		t.Fatal(err)
	}
	return ms.Msgs
}

var sampleProps = []bridge.Property{
	{Name: "topic", Value: "/pk/dev<1>/user/x", Type: bridge.PropString},
	{Name: "generateTime", Value: "1700000000123", Type: bridge.PropNumber},
	{Name: "ok", Value: "true", Type: bridge.PropBoolean},
	{Name: "blob", Value: "AAEC/w==", Type: bridge.PropBinary},
}

// Properties, system properties and group ids go from the client through
// the emulator and come back from Receive unchanged, for BatchSend (queue,
// via the sink), SendMessage and Publish; in both signature versions.
func TestPropertiesRoundTrip(t *testing.T) {
	for _, sv := range []string{"v2", "v4"} {
		t.Run(sv, func(t *testing.T) {
			f := newFixture(t, mnsemu.Config{}, func(c *Config) { c.SignatureVersion, c.Region = sv, "cn-hangzhou" })
			s := NewSink(f.c)
			sys := []bridge.Property{{Name: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Type: bridge.PropString}}
			msgs := []bridge.Outgoing{
				{Body: []byte("a"), ID: "m1", Properties: sampleProps, SystemProperties: sys, GroupID: "dev-1"},
				{Body: []byte("b"), ID: "m2"},
			}
			if errs := s.Send(context.Background(), bridge.Destination{Kind: bridge.Queue, Name: "q1"}, msgs); errors.Join(errs...) != nil {
				t.Fatal(errors.Join(errs...))
			}
			if _, err := f.c.sendOne(context.Background(), "q1", bridge.Outgoing{Body: []byte("c"), Properties: sampleProps[:1], GroupID: "g"}); err != nil {
				t.Fatal(err)
			}
			got := receiveAll(t, f.c, "q1")
			if len(got) != 3 {
				t.Fatalf("received %d", len(got))
			}
			want := fmt.Sprint([]rcvProp{{"topic", "/pk/dev<1>/user/x", "STRING"}, {"generateTime", "1700000000123", "NUMBER"}, {"ok", "true", "BOOLEAN"}, {"blob", "AAEC/w==", "BINARY"}})
			if g := fmt.Sprint(got[0].UserProperties.List); g != want || got[0].MessageGroupId != "dev-1" ||
				len(got[0].SystemProperties.List) != 1 || got[0].SystemProperties.List[0].Value != sys[0].Value {
				t.Errorf("message 1: %+v\nwant user properties %s", got[0], want)
			}
			if len(got[1].UserProperties.List) != 0 || got[1].MessageGroupId != "" {
				t.Errorf("message 2 has properties: %+v", got[1])
			}
			if len(got[2].UserProperties.List) != 1 || got[2].MessageGroupId != "g" {
				t.Errorf("message 3: %+v", got[2])
			}
			if errs := s.Send(context.Background(), bridge.Destination{Kind: bridge.Topic, Name: "t1"},
				[]bridge.Outgoing{{Body: []byte("p"), Tag: "tg", Properties: sampleProps, GroupID: "dev-2"}}); errs[0] != nil {
				t.Fatal(errs[0])
			}
			p := f.emu.Published("t1")
			if len(p) != 1 || len(p[0].UserProperties) != 4 || p[0].MessageGroupID != "dev-2" || p[0].Tag != "tg" {
				t.Errorf("published %+v", p)
			}
		})
	}
}

// A message whose properties break an MNS limit is refused before sending
// with a permanent error naming the message; the others of the batch go.
func TestPropertyLimitsRefused(t *testing.T) {
	many := make([]bridge.Property, 51)
	for i := range many {
		many[i] = bridge.Property{Name: fmt.Sprintf("p%d", i), Value: "v", Type: bridge.PropString}
	}
	str := func(n, v string) []bridge.Property {
		return []bridge.Property{{Name: n, Value: v, Type: bridge.PropString}}
	}
	tests := []struct {
		name string
		m    bridge.Outgoing
		want error
		says string
	}{
		{"51 properties", bridge.Outgoing{Properties: many}, ErrPropertyInvalid, "51 user properties"},
		{"bad name", bridge.Outgoing{Properties: str("a b", "v")}, ErrPropertyInvalid, `"a b"`},
		{"dots", bridge.Outgoing{Properties: str("a..b", "v")}, ErrPropertyInvalid, `".."`},
		{"long name", bridge.Outgoing{Properties: str(strings.Repeat("n", 257), "v")}, ErrPropertyInvalid, "257 characters"},
		{"duplicate", bridge.Outgoing{Properties: append(str("a", "1"), str("a", "2")...)}, ErrPropertyInvalid, "set twice"},
		{"long value", bridge.Outgoing{Properties: str("a", strings.Repeat("v", 4097))}, ErrPropertyInvalid, "4097 characters"},
		{"not XML text", bridge.Outgoing{Properties: str("a", "x\x00")}, ErrPropertyInvalid, "XML"},
		{"not UTF-8 (an AMQP symbol taken as its bytes)", bridge.Outgoing{Properties: str("kind", "caf\xe9")}, ErrPropertyInvalid, `"kind": value is not text that XML 1.0 can carry`},
		{"bad number", bridge.Outgoing{Properties: []bridge.Property{{Name: "n", Value: "12a", Type: bridge.PropNumber}}}, ErrPropertyInvalid, "NUMBER"},
		{"bad boolean", bridge.Outgoing{Properties: []bridge.Property{{Name: "b", Value: "yes", Type: bridge.PropBoolean}}}, ErrPropertyInvalid, "BOOLEAN"},
		{"bad binary", bridge.Outgoing{Properties: []bridge.Property{{Name: "b", Value: "!!", Type: bridge.PropBinary}}}, ErrPropertyInvalid, "base64"},
		{"bad type", bridge.Outgoing{Properties: []bridge.Property{{Name: "b", Value: "1", Type: "INT"}}}, ErrPropertyInvalid, "INT"},
		{"server-side system property", bridge.Outgoing{SystemProperties: str("DLQSourceArn", "x")}, ErrPropertyInvalid, "DLQSourceArn"},
		{"group id not XML text", bridge.Outgoing{GroupID: "g\x01"}, ErrPropertyInvalid, "MessageGroupId"},
		{"over 64 KB with the properties", bridge.Outgoing{Body: make([]byte, 48000), Properties: append(str("a", strings.Repeat("v", 2000)), str("b", strings.Repeat("v", 2000))...)}, ErrMessageTooLarge, "properties"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, mnsemu.Config{}, nil)
			s := NewSink(f.c)
			bad := tt.m
			bad.ID = "bad-msg-7"
			if bad.Body == nil {
				bad.Body = []byte("x")
			}
			for _, d := range []bridge.Destination{{Kind: bridge.Queue, Name: "q1"}, {Kind: bridge.Topic, Name: "t1"}} {
				errs := s.Send(context.Background(), d, []bridge.Outgoing{{Body: []byte("fine"), ID: "ok-1"}, bad})
				if errs[0] != nil {
					t.Errorf("%s: the good message failed: %v", d, errs[0])
				}
				err := errs[1]
				if !errors.Is(err, tt.want) || bridge.Retryable(err) || !strings.Contains(err.Error(), "message bad-msg-7") || !strings.Contains(err.Error(), tt.says) {
					t.Errorf("%s: err = %v; want permanent %v naming bad-msg-7 and saying %q", d, err, tt.want, tt.says)
				}
			}
			if n := len(f.emu.Messages("q1")); n != 1 {
				t.Errorf("%d stored, want only the good one", n)
			}
			if n := len(f.emu.Published("t1")); n != 1 {
				t.Errorf("%d published, want only the good one", n)
			}
		})
	}
}
