package app

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// rabbitConfig returns a bridge config for the test broker: the source is
// protocol at endpoint with the broker's credentials and CA, MNS the
// emulator of p; unmatched topics are dead-lettered. Tests change what they
// need and write it with writeConfig.
func rabbitConfig(t *testing.T, b *testbroker.Broker, p *peers, protocol, endpoint string) *config.Config {
	t.Helper()
	c := configtest.New()
	c.Source.Protocol, c.Source.Endpoint, c.Source.ClientID = protocol, endpoint, b.Unique(t)
	c.Source.Credentials = config.Credentials{AccessKeyID: b.AccessKeyID, AccessKeySecret: config.Secret(b.AccessKeySecret)}
	c.Source.TLS = config.TLS{CAFile: b.CAFile, ServerName: "localhost"}
	c.MNS.Endpoint = p.mnsURL
	c.MNS.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
	c.Routes = []config.Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	c.DefaultRoute.DeadLetter = true
	c.Envelope = "json"
	c.HTTP.Listen = ""
	return c
}

// writeRabbitConfig writes c as rabbit.yaml in the peers' directory.
func writeRabbitConfig(t *testing.T, p *peers, c *config.Config) string {
	t.Helper()
	return configtest.Write(t, p.dir, "rabbit.yaml", c)
}

// rabbitAMQP starts the peers (MNS queue mnsQueue) and writes a config for
// the AMQP source on a fresh queue of the test broker (its address is
// Source.AMQP.Address); it returns the broker, the peers, the config and
// its path.
func rabbitAMQP(t *testing.T, mnsQueue string) (*testbroker.Broker, *peers, *config.Config, string) {
	t.Helper()
	b := testbroker.RabbitMQ(t)
	p := startPeers(t, mnsemu.Config{Queues: []string{mnsQueue}}, iotsim.Config{})
	queue := "/queue/" + b.Unique(t)
	rc := rabbitConfig(t, b, p, "amqp", b.AMQPSAddr)
	rc.Source.AMQP.Address = queue
	return b, p, rc, writeRabbitConfig(t, p, rc)
}

// TestRabbitMQSTOMPBridgeResumesAfterBrokerRestart: the bridge subscribes to
// /topic/# on a real RabbitMQ over STOMP+TLS (aksign checked by the HTTP auth
// backend), another client publishes, everything reaches the MNS emulator;
// the broker is restarted mid-stream and the bridge resumes by itself.
func TestRabbitMQSTOMPBridgeResumesAfterBrokerRestart(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pkr"}}, iotsim.Config{})
	rc := rabbitConfig(t, b, p, "stomp", b.STOMPSAddr)
	rc.Source.STOMP.Destination, rc.Source.STOMP.Ack, rc.Source.STOMP.Host, rc.Source.STOMP.HeartBeat = "/topic/#", "client-individual", "/", 5*time.Second
	path := writeRabbitConfig(t, p, rc)
	br := runBridge(t, mustLoad(t, path), warnToStderr())
	connected := func() bool {
		for _, st := range br.source.(bridge.StateReporter).ConnStates() {
			if !st.Connected {
				return false
			}
		}
		return true
	}
	waitFor(t, "bridge connected to RabbitMQ", time.Minute, connected)
	// The subscription may still be in flight: wait until a probe arrives.
	key := b.Unique(t)
	publish := func(prefix string, from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprintf("%s-%05d", prefix, i)
			b.PublishSTOMP(t, "/topic/"+key+".data", map[string]string{"topic": "/pkr/dev1/user/data", "messageId": id}, []byte(`{"n":"`+id+`"}`))
		}
	}
	waitFor(t, "subscription active", time.Minute, func() bool {
		publish("probe", 0, 1)
		time.Sleep(200 * time.Millisecond)
		d, _ := countIDs(t, p.emu, "telemetry-pkr", "probe", 1)
		return d == 1
	})
	const n = 300
	publish("before", 0, n)
	waitFor(t, "messages before the restart", time.Minute, func() bool {
		d, _ := countIDs(t, p.emu, "telemetry-pkr", "before", n)
		return d == n
	})
	restarted := time.Now()
	b.Restart(t)
	waitFor(t, "bridge reconnected after the broker restart", 2*time.Minute, func() bool {
		st := br.source.(bridge.StateReporter).ConnStates()
		return connected() && st[0].Reconnects > 0
	})
	t.Logf("bridge reconnected %s after the restart began", time.Since(restarted).Round(time.Millisecond))
	waitFor(t, "subscription active again", time.Minute, func() bool {
		publish("probe2", 0, 1)
		time.Sleep(200 * time.Millisecond)
		d, _ := countIDs(t, p.emu, "telemetry-pkr", "probe2", 1)
		return d == 1
	})
	publish("after", 0, n)
	waitFor(t, "messages after the restart", time.Minute, func() bool {
		d, _ := countIDs(t, p.emu, "telemetry-pkr", "after", n)
		return d == n
	})
}

// TestRabbitMQAMQPBridgeKill9AndBrokerRestart: the AMQP 1.0 source on a
// durable RabbitMQ queue, messages with the platform's application
// properties. The bridge process is killed with SIGKILL twice mid-stream and
// the broker restarted once: no message is lost (unsettled ones are
// redelivered), duplicates are counted.
func TestRabbitMQAMQPBridgeKill9AndBrokerRestart(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pka"}, Faults: mnsemu.Faults{Latency: 2 * time.Millisecond}}, iotsim.Config{})
	// A durable queue: the broker restarts with messages still waiting in
	// it, and a transient queue would lose them (CI runs 5 of 2026-12-03: the
	// third bridge had not attached when the broker stopped).
	pub, queue := b.NewDurableAMQPQueue(t)
	rc := rabbitConfig(t, b, p, "amqp", b.AMQPSAddr)
	rc.Source.AMQP.Address, rc.Source.AMQP.Credit = queue, 64
	rc.Source.ReconnectMinBackoff, rc.Source.ReconnectMaxBackoff = 200*time.Millisecond, 2*time.Second
	path := writeRabbitConfig(t, p, rc)
	const n = 3000
	ctx := context.Background()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("amqp-%05d", i)
		topic := "/pka/dev" + fmt.Sprint(i%9) + "/user/data"
		if err := pub.Send(ctx, topic, id, time.Now().UnixMilli(), []byte(`{"id":"`+id+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	arrived := func() int { d, _ := countIDs(t, p.emu, "telemetry-pka", "amqp", n); return d }
	for round := 1; round <= 2; round++ {
		c := startChild(t, "run", "-config", path)
		target := round * n / 4
		waitFor(t, fmt.Sprintf("%d messages before kill %d", target, round), 2*time.Minute, func() bool { return arrived() >= target })
		c.Kill9(t)
	}
	c := startChild(t, "run", "-config", path)
	waitFor(t, "progress before the broker restart", 2*time.Minute, func() bool { return arrived() >= 3*n/4 })
	b.Restart(t)
	waitFor(t, "every message after the broker restart", 3*time.Minute, func() bool { return arrived() == n })
	if code := c.Term(t); code != 0 {
		t.Errorf("exit %d:\n%s", code, c.Out)
	}
	distinct, dups := countIDs(t, p.emu, "telemetry-pka", "amqp", n)
	t.Logf("sent %d, arrived %d distinct, %d duplicates after 2 kills and a broker restart", n, distinct, dups)
	if distinct != n {
		t.Fatalf("%d messages lost", n-distinct)
	}
	if strings.Contains(c.Out.String(), b.AccessKeySecret) {
		t.Error("the log contains the AccessKey secret")
	}
}

// TestRabbitMQAMQPCheckConnect: "check -connect" logs in over AMQP 1.0 and
// attaches a receiver; a wrong secret is reported with the likely fix.
func TestRabbitMQAMQPCheckConnect(t *testing.T) {
	b, p, rc, path := rabbitAMQP(t, "telemetry-pka")
	code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect")
	if code != ExitOK || !strings.Contains(out, "ok   source") {
		t.Fatalf("check -connect: exit %d\n%s%s", code, out, errOut)
	}
	rc.Source.Credentials.AccessKeySecret = "Zq9-not-it"
	bad := configtest.Write(t, p.dir, "bad-secret.yaml", rc)
	code, out, errOut = runMain(t, context.Background(), "check", "-config", bad, "-connect")
	if code != ExitFailure || !strings.Contains(out, "FAIL source") || !strings.Contains(out, "source.credentials") {
		t.Fatalf("wrong secret: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out+errOut, "Zq9-not-it") || strings.Contains(out+errOut, b.AccessKeySecret) {
		t.Error("a secret appears in the check output")
	}
}
