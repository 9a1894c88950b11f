package reliability

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// amqpSpec is the bridge config for the test broker's AMQP 1.0 listener,
// consuming the queue address.
func amqpSpec(b *testbroker.Broker, address string) spec {
	return spec{
		protocol: "amqp", endpoint: b.AMQPSAddr, caFile: b.CAFile, amqpAddress: address,
		akID: b.AccessKeyID, akSec: b.AccessKeySecret,
		// MNS keeps the emulator's key; the broker's AccessKey is the source's.
		mnsCreds: &config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret},
	}
}

// publishAMQP sends ids to address with workers publishers in parallel
// (each Send waits for the broker's disposition).
func publishAMQP(t *testing.T, b *testbroker.Broker, address string, ids []string, workers int) {
	t.Helper()
	if err := publishAMQPErr(t, b, address, ids, workers); err != nil {
		t.Fatal(err)
	}
}

// publishAMQPErr is publishAMQP for another goroutine: it returns the first
// error instead of failing the test.
func publishAMQPErr(t *testing.T, b *testbroker.Broker, address string, ids []string, workers int) error {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		pub := b.NewAMQPPublisher(t, address)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			for i := w; i < len(ids); i += workers {
				if err := pub.Send(ctx, fmt.Sprintf("/pk1/dev%d/user/data", i%5), ids[i], time.Now().UnixMilli(), []byte(ids[i])); err != nil {
					errs <- fmt.Errorf("publishing %s: %w", ids[i], err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestKill9AMQP kills the bridge ten times while it forwards 100,000
// messages from RabbitMQ over AMQP 1.0 (10,000 and two kills under
// -short): a message is accepted upstream only after MNS has it, so the
// broker redelivers everything in flight and nothing is lost.
//
// It was skipped as known bug R6 (a few messages held unacknowledged by a
// consumer the bridge had given up, never redelivered); see the amqpsrc
// tests TestSettleFailureOnLiveLinkDropsTheConnection and
// TestRabbitMQSettleFailureRedelivers.
func TestKill9AMQP(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	n, kills := scale(100000, 10), scale(10, 5)
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	address := "/queue/" + b.Unique(t)
	sp := amqpSpec(b, address)
	sp.mnsEndpoint, sp.logLevel = "http://"+e.emuAddr, "warn"
	path := e.config(t, sp)

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("a-%07d", i)
	}
	// The first run declares the queue; publish only once it is there.
	// A loss shows each child's warnings (a reconnect and its reason).
	var children []*child
	startBridge := func() *child {
		c := startChild(t, "run", "-config", path)
		children = append(children, c)
		return c
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, c := range children {
				t.Logf("bridge child %d, warnings and errors:\n%s", i+1, problems(c.Out.String()))
			}
		}
	})
	c := startBridge()
	publishAMQP(t, b, address, ids[:1], 1)
	c.waitFor(t, "the first message at MNS", 2*time.Minute, func() bool { return e.emu.Stats().Sent >= 1 })
	start := time.Now()
	pubErr := make(chan error, 1)
	go func() { pubErr <- publishAMQPErr(t, b, address, ids[1:], 4) }()

	var restarts []time.Duration
	for round := 1; round <= kills; round++ {
		if round > 1 {
			c = startBridge()
			restarts = append(restarts, timeToProgress(t, e.emu, 3*time.Minute))
		}
		target := int64(round * n / (kills + 1))
		c.waitFor(t, fmt.Sprintf("%d messages at MNS before kill %d", target, round), 5*time.Minute, func() bool {
			return e.emu.Stats().Sent >= target
		})
		c.Kill9(t)
	}
	c = startBridge()
	restarts = append(restarts, timeToProgress(t, e.emu, 3*time.Minute))
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	tl := waitAllArrived(t, e.emu, ids, 5*time.Minute)
	elapsed := time.Since(start)
	if code := c.Term(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, tail(c.Out.String(), 30))
	}
	noSecrets(t, "the bridge log", c.Out.String())
	tl.Recovery = maxDur(restarts)
	tl.report(t, fmt.Sprintf("AMQP (RabbitMQ), %d kills", kills))
	t.Logf("AMQP: %.0f msg/s over %v; restart to first forward: %v", float64(n)/elapsed.Seconds(), elapsed.Round(time.Second), restarts)
	if tl.Lost != 0 {
		t.Fatalf("%d messages lost", tl.Lost)
	}
}

// TestRabbitMQRestartThroughTheBridge restarts the broker while the bridge
// consumes from it: the bridge reconnects by itself and forwards what is
// published after the restart; nothing accepted by the bridge before it is
// lost.
func TestRabbitMQRestartThroughTheBridge(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	address := "/queue/" + b.Unique(t)
	r := runBridge(t, e.config(t, amqpSpec(b, address)), app.Options{})
	waitFor(t, "the bridge to attach", time.Minute, func() bool { return r.b.NotReady() == nil })

	n := scale(2000, 4)
	before, after := make([]string, n), make([]string, n)
	for i := range before {
		before[i], after[i] = fmt.Sprintf("b-%05d", i), fmt.Sprintf("c-%05d", i)
	}
	publishAMQP(t, b, address, before, 2)
	waitAllArrived(t, e.emu, before, 2*time.Minute)

	b.Restart(t)
	restarted := time.Now()
	publishAMQP(t, b, address, after, 2)
	tl := waitAllArrived(t, e.emu, append(before, after...), 3*time.Minute)
	tl.Recovery = time.Since(restarted)
	tl.report(t, "RabbitMQ restart")
	if err := r.stop(t); err != nil {
		t.Errorf("Run returned %v", err)
	}
	noSecrets(t, "the bridge log", r.logs.String())
}

// problems returns the WARN and ERROR lines of a bridge log.
func problems(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
