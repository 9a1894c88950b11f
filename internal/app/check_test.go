package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestCheckConnectExplainsEachFailure runs "check -connect" against the
// simulator and the emulator, healthy and with one thing broken at a time,
// and checks the output names the failing piece and the likely fix.
func TestCheckConnectExplainsEachFailure(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	good := p.writeConfig(t, p.config())
	variant := func(name string, change func(c *config.Config)) string {
		t.Helper()
		c := p.config()
		change(c)
		return configtest.Write(t, p.dir, name+".yaml", c)
	}
	_, otherCA := testpeers.CA(t)

	code, out, errOut := runMain(t, context.Background(), "check", "-config", good, "-connect")
	if code != ExitOK || !strings.Contains(out, "ok   source") || !strings.Contains(out, "ok   MNS queue unrouted") {
		t.Fatalf("healthy check: exit %d\n%s%s", code, out, errOut)
	}
	// The STOMP check logs in without subscribing: its line must say so,
	// not claim a subscription.
	if want := "ok   source " + p.sim.Addr() + ": logged in without subscribing as e2e-bridge-check, taking no message"; !strings.Contains(out, want) || strings.Contains(out, "subscribed") {
		t.Errorf("healthy STOMP check: want %q, and no subscription claimed:\n%s", want, out)
	}

	cases := []struct {
		name   string
		change func(c *config.Config)
		want   []string
	}{
		{"wrong secret", func(c *config.Config) { c.Source.Credentials.AccessKeySecret = "Zq9-not-the-secret" },
			[]string{"FAIL source", "signature", "(AccessKey ID and secret, STS token)"}}, // the simulator's reason names the timestamp: not the clock's
		{"wrong CA", func(c *config.Config) { c.Source.TLS.CAFile = otherCA },
			[]string{"FAIL source", "certificate"}},
		{"wrong server name", func(c *config.Config) { c.Source.TLS.ServerName = "iot.example.com" },
			[]string{"FAIL source", "iot.example.com"}},
		{"missing queue", func(c *config.Config) { c.DefaultRoute.Queue = "not-there" },
			[]string{"FAIL MNS queue not-there (default_route.queue): ", "QueueNotExist", "create"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := variant(strings.ReplaceAll(tc.name, " ", "-"), tc.change)
			code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect", "-timeout", "20s")
			if code != ExitFailure {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errOut, testSecret) || strings.Contains(out+errOut, "Zq9-not-the-secret") {
				t.Errorf("a secret appears in the output:\n%s%s", out, errOut)
			}
		})
	}
}

// TestCheckConnectTakesNothing is issue 12 item 1 on the simulator: with a
// backlog of n messages, `check -connect` takes none of them (both STOMP
// ack modes and AMQP), it does not log in as the running bridge's client
// id, and the bridge then forwards the whole backlog.
func TestCheckConnectTakesNothing(t *testing.T) {
	const n = 200
	for _, mode := range []string{"stomp ack auto", "stomp ack client-individual", "amqp"} {
		t.Run(mode, func(t *testing.T) {
			p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{AMQPAddr: "127.0.0.1:0"})
			c := p.config()
			switch mode {
			case "stomp ack auto":
				c.Source.STOMP.Ack = "auto"
			case "amqp":
				c = p.amqpConfig()
			}
			c.Envelope = "json"
			path := p.writeConfig(t, c)
			p.publishSeq("c", n)
			code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect", "-timeout", "20s")
			if code != ExitOK || !strings.Contains(out, "ok   source") {
				t.Fatalf("check -connect: exit %d\n%s%s", code, out, errOut)
			}
			if st := p.sim.Stats(); st.Acked != 0 {
				t.Fatalf("check -connect took %d of the %d messages waiting (simulator %+v)\n%s%s", st.Acked, n, st, out, errOut)
			}

			// The bridge runs; a check meanwhile does not log in as its
			// client id.
			runBridge(t, mustLoad(t, path), Options{}).stopCleanly(t)
			waitFor(t, "the bridge to connect", time.Minute, func() bool { return p.sim.Stats().Connections >= 1 })
			code, out, errOut = runMain(t, context.Background(), "check", "-config", path, "-connect", "-timeout", "20s")
			if code != ExitOK {
				t.Fatalf("check -connect while the bridge runs: exit %d\n%s%s", code, out, errOut)
			}
			if m := p.sim.Stats().MaxConnsPerClientID; m != 1 {
				t.Errorf("a client id held %d connections at once: the check logged in as the bridge", m)
			}
			waitFor(t, "the whole backlog at MNS", 2*time.Minute, func() bool {
				d, _ := countIDs(t, p.emu, "telemetry-pk1", "c", n)
				return d == n
			})
		})
	}
}

// TestRabbitMQCheckConnectTakesNothing is issue 12 item 1 on a real broker,
// which pushes a queue's backlog the moment a consumer subscribes: after
// `check -connect` (STOMP with either ack mode, AMQP) the backlog of n is
// still all there, and the bridge then forwards every message.
func TestRabbitMQCheckConnectTakesNothing(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	const n = 100
	for _, mode := range []string{"stomp ack auto", "stomp ack client-individual", "amqp"} {
		t.Run(mode, func(t *testing.T) {
			p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pkr"}}, iotsim.Config{})
			queue := "/queue/" + b.Unique(t)
			var path string
			if mode == "amqp" {
				rc := rabbitConfig(t, b, p, "amqp", b.AMQPSAddr)
				rc.Source.AMQP.Address = queue
				path = writeRabbitConfig(t, p, rc)
				pub := b.NewAMQPPublisher(t, queue)
				for i := 0; i < n; i++ {
					id := fmt.Sprintf("rc-%05d", i)
					if err := pub.Send(context.Background(), "/pkr/dev1/user/data", id, time.Now().UnixMilli(), []byte(`{"id":"`+id+`"}`)); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				rc := rabbitConfig(t, b, p, "stomp", b.STOMPSAddr)
				rc.Source.STOMP.Destination, rc.Source.STOMP.Ack, rc.Source.STOMP.Host = queue, strings.TrimPrefix(mode, "stomp ack "), "/"
				path = writeRabbitConfig(t, p, rc)
				for i := 0; i < n; i++ {
					id := fmt.Sprintf("rc-%05d", i)
					b.PublishSTOMP(t, queue, map[string]string{"topic": "/pkr/dev1/user/data", "messageId": id, "persistent": "true"}, []byte(`{"n":"`+id+`"}`))
				}
			}
			code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect", "-timeout", "30s")
			if code != ExitOK || !strings.Contains(out, "ok   source") {
				t.Fatalf("check -connect: exit %d\n%s%s", code, out, errOut)
			}
			t.Logf("check -connect:\n%s%s", out, errOut)
			runBridge(t, mustLoad(t, path), warnToStderr())
			waitFor(t, "the whole backlog at MNS after the check", 2*time.Minute, func() bool {
				d, _ := countIDs(t, p.emu, "telemetry-pkr", "rc", n)
				return d == n
			})
		})
	}
}

// TestStaticMistakesFoundByCheckAndRun is issue 12 item 3: a CA bundle that
// cannot work fails "check" and "run" with exit 2 naming
// source.tls.ca_file ("run" does not retry forever); check prints what run
// warns about and which templated destinations it did not look up.
func TestStaticMistakesFoundByCheckAndRun(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	gc := p.config()
	gc.Source.STOMP.Ack, gc.Spool.Dir = "auto", ""
	good := p.writeConfig(t, gc)
	notPEM := testfile.Write(t, p.dir, "not-a-ca.pem", "not a certificate\n")
	bc := *gc
	bc.Source.TLS.CAFile = notPEM
	bad := configtest.Write(t, p.dir, "bad-ca.yaml", &bc)
	for _, cmd := range []string{"check", "run"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // failure only: run would retry forever
		code, out, errOut := runMain(t, ctx, cmd, "-config", bad)
		cancel()
		if code != ExitUsage || !strings.Contains(errOut, "source.tls.ca_file") || !strings.Contains(errOut, "holds no PEM certificate") {
			t.Errorf("%s with a CA file without a certificate: exit %d, want 2 naming source.tls.ca_file\n%s%s", cmd, code, out, errOut)
		}
	}

	os.Chmod(good, 0o644) // a literal secret others can read
	code, out, errOut := runMain(t, context.Background(), "check", "-config", good, "-connect", "-timeout", "20s")
	if code != ExitOK {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"warning: the config file holds a secret and other users can read it",
		"warning: source.stomp.ack is auto and the spool is off",
		"skip MNS queue telemetry-{productKey} (routes[0].queue): a template",
		"a queue it names that does not exist gets none: its messages are dead-lettered (QueueNotExist); create one for each value before its devices send",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}
