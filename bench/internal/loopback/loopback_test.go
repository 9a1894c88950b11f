package loopback

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
)

// TestStart: both services answer on loopback, the CA file holds the
// simulator's certificate and the AMQP listener is opened only when asked
// for.
func TestStart(t *testing.T) {
	for _, amqp := range []bool{false, true} {
		dir := t.TempDir()
		p, err := Start(dir, Config{AccessKeyID: "LTAIloopback", AccessKeySecret: "s", Queue: "q1", AMQP: amqp})
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk == nil {
			t.Errorf("%s holds no PEM block", p.CAFile)
		} else if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			t.Errorf("%s: %v", p.CAFile, err)
		}
		// Unsigned: refused, but answered by the emulator.
		resp, err := http.Get(p.MNSURL + "/queues/q1/messages")
		if err != nil {
			t.Fatalf("the emulator does not answer at %s: %v", p.MNSURL, err)
		}
		resp.Body.Close()
		if got := p.Sim.AMQPAddr() != ""; got != amqp {
			t.Errorf("AMQP listener open %t, want %t", got, amqp)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := p.Sim.PublishContext(ctx, "g", iotsim.Message{Topic: "/p/d/user/t"}); err != nil {
			t.Errorf("publish to the simulator: %v", err)
		}
		cancel()
		p.Close()
	}
}
