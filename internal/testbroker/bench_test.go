package testbroker

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// BenchmarkAMQPRoundTrip measures one AMQP 1.0 message through the broker:
// Send (waits for the broker's disposition), Receive and Accept, one at a
// time, over TLS with a signed login on the receiving side.
func BenchmarkAMQPRoundTrip(b *testing.B) {
	br := RabbitMQ(b)
	queue := "/queue/bench-" + br.Unique(b)
	cred, err := iotauth.Sign(br.Params("bench-"+br.Unique(b)), time.Now())
	if err != nil {
		b.Fatal(err)
	}
	_, sess, err := br.DialAMQP(b, cred.Username, cred.Password)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	recv, err := sess.NewReceiver(ctx, queue, &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		b.Fatal(err)
	}
	defer CloseLink(recv)
	pub := br.NewAMQPPublisher(b, queue)
	body := make([]byte, 256)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := pub.Send(ctx, "/pk/dev/user/update", "m", int64(i), body); err != nil {
			b.Fatal(err)
		}
		m, err := recv.Receive(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := recv.AcceptMessage(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSTOMPLogin measures a full signed STOMP login over TLS (TCP, TLS
// handshake, CONNECT checked by aksign-auth over HTTP) and DISCONNECT.
func BenchmarkSTOMPLogin(b *testing.B) {
	br := RabbitMQ(b)
	p := br.Params("bench-" + br.Unique(b))
	for b.Loop() {
		cred, err := iotauth.Sign(p, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		conn, err := br.DialSTOMP(b, cred.Username, cred.Password, "/", stomp.ConnOpt.HeartBeat(0, 0))
		if err != nil {
			b.Fatal(err)
		}
		if err := conn.Disconnect(); err != nil {
			b.Fatal(err)
		}
	}
}
