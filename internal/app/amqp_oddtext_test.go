package app

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
)

// TestRabbitMQAMQPOddSymbolIsForwarded: a message with an application
// property that is a symbol with a non-ASCII byte (which go-amqp and
// RabbitMQ pass, and go-amqp's decoder, the bridge's earlier client, took)
// reaches MNS like any other, and so does the next one, on the same
// connection. It used to be dead-lettered as "AMQP message does not
// decode" (and before that, dropped the connection 90 times a minute); a
// message that truly does not decode is still dead-lettered and settled
// (amqp10 TestReceiverMalformedMessageIsADelivery, amqpsrc
// TestMalformedMessageIsInvalid: go-amqp and RabbitMQ cannot produce one).
func TestRabbitMQAMQPOddSymbolIsForwarded(t *testing.T) {
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
	odd := &amqp.Message{Data: [][]byte{[]byte(`{"odd":1}`)}, ApplicationProperties: map[string]any{
		"topic": "/pkm/dev1/user/data", "messageId": "odd-00000", "kind": amqp.Symbol("caf\xe9")}}
	if err := snd.Send(ctx, odd, nil); err != nil {
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
	if d, dups := countIDs(t, p.emu, "telemetry-pkm", "odd", 1); d != 1 || dups != 0 {
		t.Errorf("the odd message reached MNS %d times (%d duplicates), want once, before the good one", d, dups)
	}
	var entries []deadletter.Entry
	_ = deadletter.ReadFile(filepath.Join(p.dir, "dead-letter.jsonl"), func(_ int, e deadletter.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if len(entries) != 0 {
		t.Errorf("dead-letter entries %+v, want none", entries)
	}
	for _, st := range br.source.(bridge.StateReporter).ConnStates() {
		if st.Reconnects != 0 || !st.Connected {
			t.Errorf("connection %+v: the odd message dropped it", st)
		}
	}
}
