package testbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
)

// linkCloseTimeout bounds Sender/Receiver.Close: RabbitMQ 3.x answers a
// closing detach with a non-closing one, so go-amqp waits forever without a
// deadline (rabbitmq-server#2594, go-amqp#310).
const linkCloseTimeout = time.Second

// DialAMQP connects over TLS to the AMQP listener with SASL PLAIN and opens
// a session. The connection is closed when the test ends (links must be
// closed with a deadline, see CloseLink).
func (b *Broker) DialAMQP(t testing.TB, username, password string) (*amqp.Conn, *amqp.Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqps://"+b.AMQPSAddr, &amqp.ConnOptions{
		SASLType:  amqp.SASLTypePlain(username, password),
		TLSConfig: b.TLSConfig(t),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("AMQP dial amqps://%s: %w", b.AMQPSAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("AMQP begin session: %w", err)
	}
	return conn, sess, nil
}

// CloseLink closes an AMQP sender or receiver with a short deadline, which
// RabbitMQ 3.x needs (it never answers a closing detach).
func CloseLink(link interface{ Close(context.Context) error }) {
	ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
	defer cancel()
	_ = link.Close(ctx) // a timeout is expected on RabbitMQ 3.x
}

// AMQPPublisher sends AMQP 1.0 messages shaped like the IoT Platform's: the
// payload as one data section and the application properties topic,
// messageId and generateTime. It is not safe for concurrent use.
type AMQPPublisher struct {
	address string
	conn    *amqp.Conn
	sender  *amqp.Sender
}

// NewAMQPPublisher logs in as the publisher user and attaches a sender to
// address, for example "/topic/a.b" (amq.topic, routing key "a.b"),
// "/exchange/amq.topic/a.b" or "/queue/q". It is closed when the test ends.
func (b *Broker) NewAMQPPublisher(t testing.TB, address string) *AMQPPublisher {
	t.Helper()
	return b.newAMQPPublisher(t, address, nil)
}

// NewDurableAMQPQueue declares a durable queue of a new name and returns a
// publisher to it and the address a receiver attaches to it with,
// "/amq/queue/NAME". RabbitMQ 3.10 declares the queue of a "/queue/NAME"
// link as durable as the link's terminus: a sender's or receiver's of
// go-amqp's and the bridge's default durability (none) makes it transient,
// and a restart drops it with every message waiting in it, durable or not
// (TestDurableQueueKeepsItsMessagesAcrossRestart). The publisher's sender
// here attaches with configuration durability; a receiver attaching with
// "/queue/NAME" would redeclare it transient and be refused
// (PRECONDITION_FAILED), while "/amq/queue/NAME" uses it as it is. For
// tests that restart the broker with messages waiting.
func (b *Broker) NewDurableAMQPQueue(t testing.TB) (pub *AMQPPublisher, receiverAddress string) {
	t.Helper()
	name := "durable-" + b.Unique(t)
	return b.newAMQPPublisher(t, "/queue/"+name, &amqp.SenderOptions{TargetDurability: amqp.DurabilityConfiguration}), "/amq/queue/" + name
}

// newAMQPPublisher is NewAMQPPublisher with the sender's options.
func (b *Broker) newAMQPPublisher(t testing.TB, address string, opts *amqp.SenderOptions) *AMQPPublisher {
	t.Helper()
	conn, sess, err := b.DialAMQP(t, b.PublisherUser, b.PublisherPassword)
	if err != nil {
		t.Fatalf("testbroker: AMQP publisher: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sender, err := sess.NewSender(ctx, address, opts)
	if err != nil {
		t.Fatalf("testbroker: AMQP publisher: attach sender to %q: %v", address, err)
	}
	p := &AMQPPublisher{address: address, conn: conn, sender: sender}
	t.Cleanup(p.Close)
	return p
}

// Send publishes one durable message and waits for the broker's
// disposition, or until ctx is done. Durable (persistent in RabbitMQ) as the
// platform's messages are: RabbitMQ drops a transient message that waits in
// a queue when it restarts, and a restart test would count that as lost by
// the bridge.
func (p *AMQPPublisher) Send(ctx context.Context, topic, messageID string, generateTime int64, body []byte) error {
	msg := &amqp.Message{
		Header: &amqp.MessageHeader{Durable: true},
		Data:   [][]byte{body},
		Properties: &amqp.MessageProperties{
			MessageID: messageID,
		},
		ApplicationProperties: map[string]any{
			"topic":        topic,
			"messageId":    messageID,
			"generateTime": generateTime,
		},
	}
	if err := p.sender.Send(ctx, msg, nil); err != nil {
		return fmt.Errorf("AMQP send to %q: %w", p.address, err)
	}
	return nil
}

// Close closes the publisher's connection, which ends the sender without
// the detach handshake that RabbitMQ 3.x never completes. Calling Close more
// than once is harmless.
func (p *AMQPPublisher) Close() { p.conn.Close() }
