package reliability

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/stompfake"
)

// startRawServer starts the misbehaving STOMP server (internal/stompfake)
// for frames the simulator never sends (malformed frames, bad headers,
// invalid base64): it knows the test AccessKey and offers heart-beats every
// 500 ms, which keep coming after an unfinished frame, as the bytes of a
// stuck peer would.
func startRawServer(t *testing.T) *stompfake.Server {
	t.Helper()
	return stompfake.Start(t, stompfake.Config{Secrets: map[string]string{testAK: testSecret}, HeartBeat: 500 * time.Millisecond})
}

// sendRaw writes b as it is to the connection of s that subscribed last;
// the first "{sub}" in b becomes its subscription id.
func sendRaw(t *testing.T, s *stompfake.Server, b []byte) {
	t.Helper()
	c := s.Newest()
	if c == nil {
		t.Fatal("raw STOMP server: no subscribed connection")
	}
	b = bytes.Replace(b, []byte("{sub}"), []byte(c.SubID()), 1)
	if err := c.WriteRaw(b); err != nil {
		t.Fatalf("raw STOMP server: write: %v", err)
	}
}

// stompHeader is one header line of a raw frame.
type stompHeader struct{ k, v string }

// messageFrame builds a MESSAGE frame with the platform's headers (topic,
// messageId, generateTime unless overridden in hdrs), ack id = messageId,
// and a content-length.
func messageFrame(id string, hdrs []stompHeader, body []byte) []byte {
	b := []byte(fmt.Sprintf("MESSAGE\nsubscription:{sub}\nmessage-id:%s\nack:%s\ndestination:/topic/#\nmessageId:%s\ngenerateTime:1700000000000\n", id, id, id))
	for _, h := range hdrs {
		b = append(b, h.k+":"+h.v+"\n"...)
	}
	b = append(b, fmt.Sprintf("content-length:%d\n\n", len(body))...)
	b = append(b, body...)
	return append(b, 0)
}
