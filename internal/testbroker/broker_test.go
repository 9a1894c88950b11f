package testbroker

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func sign(t *testing.T, p iotauth.Params) iotauth.Credentials {
	t.Helper()
	c, err := iotauth.Sign(p, time.Now())
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return c
}

// subscribeAll signs p, logs in to vhost over STOMP and subscribes to
// /topic/# with ack, synced so that the subscription is in place when it
// returns. when names the moment in a failure ("before restart").
func subscribeAll(t *testing.T, b *Broker, p iotauth.Params, vhost string, ack stomp.AckMode, when string) (*stomp.Conn, *stomp.Subscription) {
	t.Helper()
	cred := sign(t, p)
	conn, err := b.DialSTOMP(t, cred.Username, cred.Password, vhost)
	if err != nil {
		t.Fatalf("login with a signed username %s: %v", when, err)
	}
	sub, err := conn.Subscribe("/topic/#", ack)
	if err != nil {
		t.Fatalf("subscribe /topic/# %s: %v", when, err)
	}
	SyncSTOMP(t, conn)
	return conn, sub
}

// receiveSTOMP waits for the message whose body is want on sub, skipping
// messages of other tests that share the broker.
func receiveSTOMP(t *testing.T, sub *stomp.Subscription, want []byte) *stomp.Message {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-sub.C:
			if !ok {
				t.Fatalf("subscription closed before the message arrived")
			}
			if m.Err != nil {
				t.Fatalf("receive: %v", m.Err)
			}
			if bytes.Equal(m.Body, want) {
				return m
			}
		case <-timeout:
			t.Fatalf("no message with body %q within 15 s", want)
		}
	}
}

func TestSTOMPSignedLogin(t *testing.T) {
	b := RabbitMQ(t)
	tests := []struct {
		name   string
		params func(iotauth.Params) iotauth.Params
		vhost  string
	}{
		{"aksign hmacsha1 vhost /", func(p iotauth.Params) iotauth.Params { return p }, "/"},
		{"aksign hmacmd5 vhost localhost", func(p iotauth.Params) iotauth.Params { p.SignMethod = iotauth.HMACMD5; return p }, "localhost"},
		{"aksign hmacsha256 vhost 127.0.0.1", func(p iotauth.Params) iotauth.Params { p.SignMethod = iotauth.HMACSHA256; return p }, "127.0.0.1"},
		{"ststoken", func(p iotauth.Params) iotauth.Params { p.SecurityToken = "sts-token-123"; return p }, "/"},
		{"instance id and base64", func(p iotauth.Params) iotauth.Params {
			p.IotInstanceID = "iot-06z00test"
			p.EncodeBase64 = true
			return p
		}, "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, sub := subscribeAll(t, b, tc.params(b.Params("client-"+b.Unique(t))), tc.vhost, stomp.AckClientIndividual, "at "+tc.vhost)
			key := b.Unique(t)
			body := []byte("hello " + key)
			b.PublishSTOMPTo(t, tc.vhost, "/topic/dev."+key, map[string]string{"topic": "/pk/dev/user/update", "content-type": "text/plain"}, body)
			m := receiveSTOMP(t, sub, body)
			if got := m.Header.Get("topic"); got != "/pk/dev/user/update" {
				t.Errorf("header topic = %q, want the published value", got)
			}
			if got := m.Destination; got != "/topic/dev."+key {
				t.Errorf("destination = %q, want /topic/dev.%s", got, key)
			}
			if err := conn.Ack(m); err != nil {
				t.Errorf("ack: %v", err)
			}
		})
	}
}

func TestSTOMPLoginRefused(t *testing.T) {
	b := RabbitMQ(t)
	good := b.Params("client-" + b.Unique(t))
	wrongSecret := good
	wrongSecret.AccessKeySecret = "not-the-secret"
	unknownKey := good
	unknownKey.AccessKeyID = "LTAIunknown"
	tests := []struct {
		name               string
		username, password string
	}{
		{"wrong password", sign(t, good).Username, "d3JvbmcK"},
		{"signed with the wrong secret", sign(t, wrongSecret).Username, sign(t, wrongSecret).Password},
		{"unknown AccessKey", sign(t, unknownKey).Username, sign(t, unknownKey).Password},
		{"not a platform username", "someone", "secret"},
		{"empty password", sign(t, good).Username, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := b.DialSTOMP(t, tc.username, tc.password, "/")
			if err == nil {
				conn.Disconnect()
				t.Fatalf("login succeeded, want it refused")
			}
			// A refusal, not some other failure (TLS, connection refused).
			if !strings.Contains(err.Error(), "Bad CONNECT") {
				t.Errorf("err = %v, want the broker's \"Bad CONNECT\" refusal", err)
			}
		})
	}
}

func TestAMQPReceiveWithSignedLogin(t *testing.T) {
	b := RabbitMQ(t)
	key := b.Unique(t)
	tests := []struct {
		name   string
		source string
		target string
	}{
		{"topic wildcard", "/topic/#", "/topic/amqp." + key},
		{"exchange binding", "/exchange/amq.topic/amqpx." + key, "/topic/amqpx." + key},
		{"named queue", "/queue/q-" + key, "/queue/q-" + key},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cred := sign(t, b.Params("client-"+b.Unique(t)))
			_, sess, err := b.DialAMQP(t, cred.Username, cred.Password)
			if err != nil {
				t.Fatalf("login with a signed username: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			recv, err := sess.NewReceiver(ctx, tc.source, &amqp.ReceiverOptions{Credit: 10})
			if err != nil {
				t.Fatalf("attach receiver to %q: %v", tc.source, err)
			}
			defer CloseLink(recv)

			pub := b.NewAMQPPublisher(t, tc.target)
			id := "msg-" + b.Unique(t)
			body := []byte(`{"temperature":21.5}`)
			const gen = int64(1700000000123)
			if err := pub.Send(ctx, "/pk/dev/thing/event/property/post", id, gen, body); err != nil {
				t.Fatalf("publish: %v", err)
			}
			for {
				m, err := recv.Receive(ctx, nil)
				if err != nil {
					t.Fatalf("receive: %v", err)
				}
				if err := recv.AcceptMessage(ctx, m); err != nil {
					t.Fatalf("accept: %v", err)
				}
				if m.ApplicationProperties["messageId"] != id {
					continue // another test's message on the shared broker
				}
				if !bytes.Equal(m.GetData(), body) {
					t.Errorf("body = %q, want %q", m.GetData(), body)
				}
				if got := m.ApplicationProperties["topic"]; got != "/pk/dev/thing/event/property/post" {
					t.Errorf("topic = %v, want the published topic", got)
				}
				if got, ok := m.ApplicationProperties["generateTime"].(int64); !ok || got != gen {
					t.Errorf("generateTime = %#v, want int64 %d", m.ApplicationProperties["generateTime"], gen)
				}
				// Durable, as the platform's messages are: RabbitMQ drops a
				// transient message that waits in a queue at a restart, which
				// the restart tests would take for a loss by the bridge.
				if m.Header == nil || !m.Header.Durable {
					t.Errorf("header = %+v, want the message durable (persistent in the broker)", m.Header)
				}
				return
			}
		})
	}
}

func TestAMQPLoginRefused(t *testing.T) {
	b := RabbitMQ(t)
	cred := sign(t, b.Params("client-"+b.Unique(t)))
	_, _, err := b.DialAMQP(t, cred.Username, "d3JvbmcK")
	if err == nil {
		t.Fatal("AMQP login with a wrong password succeeded, want it refused")
	}
	// A SASL refusal, not some other failure (TLS, connection refused).
	if !strings.Contains(err.Error(), "SASL PLAIN auth failed") {
		t.Errorf("err = %v, want a SASL PLAIN auth failure", err)
	}
}
