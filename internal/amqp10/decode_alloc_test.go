package amqp10

import (
	"bytes"
	"fmt"
	"testing"
)

// platformMessage is a message as the IoT platform sends it: the three
// documented application properties and one data section.
func platformMessage(t testing.TB) []byte {
	b, err := AppendMessage(nil, &Message{
		ApplicationProperties: Map{
			{Key: "topic", Value: "/a1BenchProduct/device-17/user/update"},
			{Key: "messageId", Value: "1796082916180523008"},
			{Key: "generateTime", Value: int64(1796082916180)},
		},
		Data: [][]byte{[]byte(`{"temperature":21.5,"humidity":40,"seq":12345}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodePlatformMessageAllocations: the reader decodes every message,
// so a platform message costs what it must keep (the topic and messageId
// as text, each with its interface value, the generateTime's, the map, the
// body and its list): its property names are constants, and the map and
// the body are not put in an interface value (16 allocations before,
// issue 16).
func TestDecodePlatformMessageAllocations(t *testing.T) {
	p := platformMessage(t)
	var m Message
	allocs := testing.AllocsPerRun(100, func() {
		m = Message{}
		if err := decodeMessageInto(&m, p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 8 {
		t.Errorf("decoding a platform message: %.0f allocations, want at most 8", allocs)
	}
	if v, _ := m.Property("messageId"); v != "1796082916180523008" || len(m.Data) != 1 || len(m.ApplicationProperties) != 3 {
		t.Errorf("decoded %+v", m)
	}
}

func BenchmarkDecodePlatformMessage(b *testing.B) {
	p := platformMessage(b)
	b.ReportAllocs()
	for b.Loop() {
		var m Message
		if err := decodeMessageInto(&m, p); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecodeMessageShortcut: the platform's sections decoded without the
// general path's interface values (usualSection) give the same message, or
// the same error, as the general path.
func FuzzDecodeMessageShortcut(f *testing.F) {
	f.Add(platformMessage(f))
	for _, m := range []*Message{
		{ApplicationProperties: Map{{"a", int64(1)}, {"topic", Symbol("t")}}, Data: [][]byte{{}, []byte("x")}},
		{Properties: []any{"id"}, ApplicationProperties: Map{}, HasValue: true, Value: "v"},
		{Header: []any{true}, MessageAnnotations: Map{{Symbol("x-opt"), "y"}}, Data: [][]byte{make([]byte, 300)}},
	} {
		b, err := AppendMessage(nil, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, general Message
		errFast, errGeneral := decodeSections(&fast, b, true), decodeSections(&general, b, false)
		if fmt.Sprint(errFast) != fmt.Sprint(errGeneral) {
			t.Fatalf("errors differ: usual sections %v, general path %v", errFast, errGeneral)
		}
		if errFast != nil {
			return
		}
		ef, err1 := AppendMessage(nil, &fast)
		eg, err2 := AppendMessage(nil, &general)
		if !bytes.Equal(ef, eg) || fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("usual sections decoded %+v, the general path %+v", fast, general)
		}
	})
}
