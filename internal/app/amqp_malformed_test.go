package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
)

// TestRabbitMQAMQPMalformedMessageIsDeadLettered: a message the bridge
// cannot decode (an application property that is a symbol with a non-ASCII
// byte, which go-amqp and RabbitMQ pass) is written to the dead-letter file
// with the reason and its bytes, and settled: the next message reaches MNS
// on the same connection, and the bad one does not come back (the bridge
// used to drop the connection and take it again, 90 times a minute).
func TestRabbitMQAMQPMalformedMessageIsDeadLettered(t *testing.T) {
	b, p, rc, path := rabbitAMQP(t, "telemetry-pkm")
	queue := rc.Source.AMQP.Address

	conn, sess, err := b.DialAMQP(t, b.PublisherUser, b.PublisherPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snd, err := sess.NewSender(ctx, queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := &amqp.Message{Data: [][]byte{[]byte("bad body")}, ApplicationProperties: map[string]any{
		"topic": "/pkm/dev1/user/data", "messageId": "bad", "kind": amqp.Symbol("caf\xe9")}}
	if err := snd.Send(ctx, bad, nil); err != nil {
		t.Fatal(err)
	}
	good := &amqp.Message{Data: [][]byte{[]byte(`{"ok":1}`)}, ApplicationProperties: map[string]any{
		"topic": "/pkm/dev1/user/data", "messageId": "good-00000"}}
	if err := snd.Send(ctx, good, nil); err != nil {
		t.Fatal(err)
	}

	br := runBridge(t, mustLoad(t, path), warnToStderr())
	waitFor(t, "the good message in MNS", time.Minute, func() bool {
		d, _ := countIDs(t, p.emu, "telemetry-pkm", "good", 1)
		return d == 1
	})
	var entries []deadletter.Entry
	waitFor(t, "the malformed message in the dead-letter file", time.Minute, func() bool {
		entries = entries[:0]
		_ = deadletter.ReadFile(filepath.Join(p.dir, "dead-letter.jsonl"), func(_ int, e deadletter.Entry) error {
			entries = append(entries, e)
			return nil
		})
		return len(entries) > 0
	})
	if len(entries) != 1 || !strings.Contains(entries[0].Reason, "AMQP message does not decode") ||
		!strings.Contains(entries[0].Reason, "symbol is not ASCII") || !strings.Contains(string(entries[0].Body), "bad body") {
		t.Errorf("dead-letter entries %+v, want one: the malformed message's bytes with the reason", entries)
	}
	for _, st := range br.source.(bridge.StateReporter).ConnStates() {
		if st.Reconnects != 0 || !st.Connected {
			t.Errorf("connection %+v: the malformed message dropped it", st)
		}
	}
}
