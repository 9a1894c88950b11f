package testbroker

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/go-stomp/stomp/v3"
)

func TestRestart(t *testing.T) {
	b := RabbitMQ(t)
	_, oldSub := subscribeAll(t, b, b.Params("client-"+b.Unique(t)), "/", stomp.AckAuto, "before restart")

	b.Restart(t)

	// The old connection must have been broken by the restart: its
	// subscription ends with an error instead of delivering messages.
	deadline := time.After(30 * time.Second)
wait:
	for {
		select {
		case m, ok := <-oldSub.C:
			if !ok || m.Err != nil {
				break wait
			}
		case <-deadline:
			t.Fatal("the connection made before the restart still works 30 s after it")
		}
	}

	// STOMP works again, with a freshly signed login.
	params := b.Params("client-" + b.Unique(t))
	_, sub := subscribeAll(t, b, params, "/", stomp.AckAuto, "after restart")
	body := []byte("after restart " + b.Unique(t))
	b.PublishSTOMP(t, "/topic/restart."+b.Unique(t), nil, body)
	receiveSTOMP(t, sub, body)

	// AMQP 1.0 works again too, including the auth service's password-less
	// re-check of the session user.
	cred := sign(t, params)
	_, sess, err := b.DialAMQP(t, cred.Username, cred.Password)
	if err != nil {
		t.Fatalf("AMQP login after restart: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	recv, err := sess.NewReceiver(ctx, "/queue/restart-"+b.Unique(t), &amqp.ReceiverOptions{Credit: 1})
	if err != nil {
		t.Fatalf("AMQP attach after restart: %v", err)
	}
	CloseLink(recv)
}
