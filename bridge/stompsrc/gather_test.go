package stompsrc

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
)

// TestSimReadGatherKeepsEveryMessage: with reads gathering (source.stomp.read_gather
// 1ms), messages published in bursts and one by one all arrive, in
// order, byte for byte.
func TestSimReadGatherKeepsEveryMessage(t *testing.T) {
	e := startSim(t, nil)
	src := e.source(t, func(c *Config) { c.ReadGather = time.Millisecond })
	r := sourcetest.Start(t, src, nil)
	const n = 600
	body := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 10+i%700) }
	go func() {
		for i := range n {
			e.srv.Publish("DEFAULT_GROUP", iotsim.Message{Topic: "/pk/dev/user/t", MessageID: fmt.Sprint("g-", i), Body: body(i)})
			if i%100 == 99 {
				time.Sleep(3 * time.Millisecond) // bursts, then quiet: both kinds of read
			}
		}
	}()
	for i := range n {
		d := r.Next(t)
		if d.MessageID != fmt.Sprint("g-", i) || !bytes.Equal(payload(t, d), body(i)) {
			t.Fatalf("delivery %d: %s with %d bytes, want g-%d with %d", i, d.MessageID, len(payload(t, d)), i, len(body(i)))
		}
		d.Accept()
	}
}
