package spool

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// codecMessages are messages of every shape the codec must give back as
// they were: with and without properties, text fields or body.
func codecMessages() []bridge.Message {
	return []bridge.Message{
		{Topic: "/a1b2c3d4e5f/dev-0001/user/telemetry", MessageID: "1700000000000000001", GenerateTime: 1700000000123,
			Body: []byte(`{"t":21.5}`), Properties: map[string]string{"destination": "/topic/x", "message-id": "m-1", "qos": "1"}},
		{MessageID: "no topic, no body"},
		{},
		{Topic: "/pk/dev/user/x", MessageID: "props", Properties: map[string]string{"": "empty key", "k": "", "content-type": "application/json"}},
		{MessageID: "many", Body: []byte("{}"), Properties: manyProperties(40)},
		{MessageID: "g", GenerateTime: -5, Invalid: "body is not valid base64", Body: []byte("%%%")},
		{Topic: "/\x00/\xff", MessageID: "binary", Body: []byte{0, 1, 2, 0xff}},
	}
}

// TestDecodeGivesBackWhatWasEncoded: a version 1 record and every member of
// a version 2 record (a group, offsets with gaps as a Close rewrite leaves
// them) decode to the message that was encoded, properties included.
func TestDecodeGivesBackWhatWasEncoded(t *testing.T) {
	ms := codecMessages()
	for _, m := range ms {
		got, err := decode(encode(&m))
		if err != nil {
			t.Fatalf("decode of the version 1 record of %q: %v", m.MessageID, err)
		}
		if !sameMessage(got, m) {
			t.Errorf("version 1: decoded %+v, want %+v", got, m)
		}
	}
	var members []groupMember
	for i, m := range ms {
		members = append(members, groupMember{off: uint64(3 * i), payload: encode(&m)[headerLen:]})
	}
	v := encodeGroup(members)
	if err := verify(v); err != nil {
		t.Fatal(err)
	}
	i := 0
	err := eachMember(v, func(off uint64, p []byte) error {
		got, err := decodePayload(p)
		if err != nil {
			return err
		}
		if off != uint64(3*i) || !sameMessage(got, ms[i]) {
			t.Errorf("version 2, member %d: offset %d, decoded %+v; want offset %d, %+v", i, off, got, 3*i, ms[i])
		}
		i++
		return nil
	})
	if err != nil || i != len(ms) {
		t.Fatalf("version 2: %d of %d members decoded, err %v", i, len(ms), err)
	}
}

// TestEncodeIntoAReusedBuffer: Append encodes into pooled buffers, and a
// buffer that holds a message but for its properties is used as it is
// (the properties are not measured first): the record is the same as in a
// buffer of the whole bound (its length, and what it decodes to: the
// properties' order is the map's), whatever the buffer held before.
func TestEncodeIntoAReusedBuffer(t *testing.T) {
	for _, m := range codecMessages() {
		want := len(encodeTo(nil, &m))
		for _, c := range []int{0, bareLen(&m), want - 1, want, encodedLen(&m)} {
			dst := bytes.Repeat([]byte{0xee}, max(c, 0))
			got := encodeTo(dst, &m)
			if len(got) != want {
				t.Errorf("%q into a buffer of %d bytes: %d bytes, want %d", m.MessageID, c, len(got), want)
			}
			if d, err := decode(seal(got)); err != nil || !sameMessage(d, m) {
				t.Errorf("%q into a buffer of %d bytes decodes to %+v, %v", m.MessageID, c, d, err)
			}
		}
	}
}

// TestDecodedMessageOwnsItsMemory: a decoded message keeps alive its own
// text and body (one allocation), not the record it came from, which may
// be a 64 KiB group of which the message is one small member. Its body
// ends where its capacity does: an append to it cannot reach into the text.
func TestDecodedMessageOwnsItsMemory(t *testing.T) {
	small := bridge.Message{Topic: "/pk/dev/user/x", MessageID: "small", Body: []byte("body"),
		Properties: map[string]string{"qos": "1"}}
	bigBody := bridge.Message{MessageID: "big", Body: bytes.Repeat([]byte{7}, 64<<10)}
	noBody := bridge.Message{Topic: "/pk/dev/user/y", MessageID: "no body"}
	record := encodeGroup([]groupMember{
		{off: 0, payload: encode(&small)[headerLen:]},
		{off: 1, payload: encode(&bigBody)[headerLen:]},
		{off: 2, payload: encode(&noBody)[headerLen:]},
	})
	released := make(chan struct{})
	runtime.AddCleanup(&record[0], func(ch chan struct{}) { close(ch) }, released)
	var got, got2 bridge.Message
	if err := eachMember(record, func(off uint64, p []byte) error {
		var err error
		switch off {
		case 0:
			got, err = decodePayload(p)
		case 2:
			got2, err = decodePayload(p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	record = nil
	// Each GC queues the cleanups of what it found unreachable; the record
	// is unreachable now unless got holds it.
	for gcs := 0; ; gcs++ {
		if gcs == 1000 {
			t.Fatal("the record was not freed after 1,000 collections: the decoded message keeps it alive")
		}
		runtime.GC()
		select {
		case <-released:
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	if !sameMessage(got, small) || !sameMessage(got2, noBody) {
		t.Errorf("decoded %+v and %+v, want %+v and %+v", got, got2, small, noBody)
	}
	if cap(got.Body) != len(got.Body) {
		t.Errorf("body has capacity %d beyond its %d bytes: an append would write into shared memory", cap(got.Body), len(got.Body))
	}
	got.Body = append(got.Body, "-and-more"...)
	got.Body[0] = 'X'
	if got.Topic != small.Topic || got.MessageID != small.MessageID || got.Properties["qos"] != "1" {
		t.Errorf("changing the body changed the text fields: %+v", got)
	}
	runtime.KeepAlive(got)
	runtime.KeepAlive(got2)
}
