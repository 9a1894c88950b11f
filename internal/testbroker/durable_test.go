package testbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

// TestDurableQueueKeepsItsMessagesAcrossRestart: durable messages waiting
// in the queue of a "/queue/NAME" link attached with the default terminus
// durability are gone after a restart (RabbitMQ 3.10 made the queue
// transient), and kept in the queue of NewDurableAMQPQueue.
func TestDurableQueueKeepsItsMessagesAcrossRestart(t *testing.T) {
	b := RabbitMQ(t)
	transient := "/queue/transient-" + b.Unique(t)
	pubT := b.NewAMQPPublisher(t, transient)
	pubD, durable := b.NewDurableAMQPQueue(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 3 {
		for _, p := range []*AMQPPublisher{pubT, pubD} {
			if err := p.Send(ctx, "/pk/dev/user/x", fmt.Sprint(i), 0, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
	}
	pubT.Close()
	pubD.Close()
	b.Restart(t)

	_, sess, err := b.DialAMQP(t, b.PublisherUser, b.PublisherPassword)
	if err != nil {
		t.Fatal(err)
	}
	// received counts up to want messages from address, waiting at most
	// wait for each (a guard; for the transient queue, which should have
	// none, only what the log line reports).
	received := func(address string, want int, wait time.Duration) int {
		r, err := sess.NewReceiver(ctx, address, &amqp.ReceiverOptions{Credit: 10})
		if err != nil {
			t.Fatalf("attach to %s after the restart: %v", address, err)
		}
		n := 0
		for n < want {
			rctx, rcancel := context.WithTimeout(ctx, wait)
			m, err := r.Receive(rctx, nil)
			rcancel()
			if err != nil {
				break
			}
			r.AcceptMessage(ctx, m)
			n++
		}
		return n
	}
	if n := received(durable, 3, 30*time.Second); n != 3 {
		t.Errorf("the durable queue has %d of its 3 messages after the restart, want 3", n)
	}
	t.Logf("the transient queue has %d of its 3 messages after the restart (RabbitMQ 3.10: 0)", received(transient, 3, 2*time.Second))
}
