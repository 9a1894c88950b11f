package amqpsrc

// Integration tests against the private RabbitMQ 3.10 test broker
// (scripts/rabbitmq.sh, internal/testbroker): AMQP 1.0 over TLS with logins
// checked by the aksign HTTP auth service. Outside CI they skip when the
// broker is not running; with CI=true they fail.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// itLimit guards the integration tests against hangs; it is not a pass/fail
// threshold for speed.
const itLimit = 60 * time.Second

// rig is a Source running against the test broker.
type rig struct {
	t      *testing.T
	b      *testbroker.Broker
	queue  string // queueRig's queue address
	unique string // queueRig's unique name
	src    *Source
	run    *sourcetest.Running
	logs   *syncBuffer
	dials  atomic.Int64 // attempts started
	fails  atomic.Int64 // attempts that failed
	stop   sync.Once
}

// brokerConfig is a Config for the test broker with client id id, reading
// the queue address. params may change the signing inputs.
func brokerConfig(b *testbroker.Broker, id, address string, logs *syncBuffer, params func(*iotauth.Params)) Config {
	return filled(Config{
		Settings: source.Settings{
			Endpoint: b.AMQPSAddr,
			TLS:      source.TLSOptions{CAFile: b.CAFile, ServerName: "localhost"},
			Params: func() (iotauth.Params, error) {
				p := b.Params(id)
				if params != nil {
					params(&p)
				}
				return p, nil
			},
			DialTimeout: 10 * time.Second,
			MinBackoff:  100 * time.Millisecond,
			MaxBackoff:  400 * time.Millisecond,
			Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		Address: address,
		Credit:  10,
	})
}

// startRig runs a Source with cfg; every delivery goes to rig.run.Got.
// logs is the buffer cfg.Logger writes to.
func startRig(t *testing.T, b *testbroker.Broker, cfg Config, logs *syncBuffer) *rig {
	t.Helper()
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, b: b, src: src, logs: logs}
	real := src.dial
	src.dial = func(ctx context.Context, slot int, id string) (connection, error) {
		r.dials.Add(1)
		c, err := real(ctx, slot, id)
		if err != nil {
			r.fails.Add(1)
		}
		return c, err
	}
	r.run = sourcetest.Start(t, src, nil)
	t.Cleanup(r.close)
	return r
}

// queueRig is a rig on a fresh queue of the test broker, as client id
// "it-<unique>", its Config changed by mod (nil: none), connected (the
// receivers declare the queue), and a publisher to that queue.
func queueRig(t *testing.T, mod func(*Config)) (*rig, *testbroker.AMQPPublisher) {
	t.Helper()
	b := testbroker.RabbitMQ(t)
	u := b.Unique(t)
	queue := "/queue/" + u
	logs := &syncBuffer{}
	cfg := brokerConfig(b, "it-"+u, queue, logs, nil)
	if mod != nil {
		mod(&cfg)
	}
	r := startRig(t, b, cfg, logs)
	r.queue, r.unique = queue, u
	waitConnected(t, r.src)
	return r, b.NewAMQPPublisher(t, queue)
}

// close stops Run and closes the source, checking both end cleanly.
func (r *rig) close() {
	r.stop.Do(func() {
		r.run.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), itLimit)
		defer cancel()
		start := time.Now()
		if err := r.src.Close(ctx); err != nil {
			r.t.Errorf("Close: %v", err)
		}
		r.t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
		if err := r.run.Wait(r.t); err != nil {
			r.t.Errorf("Run: %v", err)
		}
	})
}

// next returns the next delivery.
func (r *rig) next() *bridge.Delivery {
	r.t.Helper()
	select {
	case d := <-r.run.Got:
		return d
	case <-time.After(itLimit):
		r.t.Fatalf("no delivery; source state %+v, logs:\n%s", r.src.ConnStates(), r.logs.String())
		return nil
	}
}

func waitConnected(t *testing.T, src *Source) {
	t.Helper()
	deadline := time.Now().Add(itLimit)
	for {
		all := true
		for _, st := range src.ConnStates() {
			all = all && st.Connected
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not connected: %+v", src.ConnStates())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func publish(t *testing.T, p *testbroker.AMQPPublisher, topic, id string, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), itLimit)
	defer cancel()
	if err := p.Send(ctx, topic, id, 1700000000000, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

func TestRabbitMQDeliversPlatformMessages(t *testing.T) {
	r, pub := queueRig(t, func(cfg *Config) {
		cfg.Connections = 2 // both consume the queue, as "<id>-0" and "<id>-1"
	})
	b, u, logs := r.b, r.unique, r.logs

	const n = 30
	want := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("%s-%d", u, i)
		topic := fmt.Sprintf("/pk%d/dev-%d/user/up", i%3, i)
		body := fmt.Sprintf(`{"seq":%d,"bin":"\u0000\u00ff"}`, i)
		want[id] = topic + "|" + body
		publish(t, pub, topic, id, body)
	}
	for range n {
		d := r.next()
		w, ok := want[d.MessageID]
		if !ok {
			t.Fatalf("unexpected or duplicate delivery %q", d.MessageID)
		}
		delete(want, d.MessageID)
		if got := d.Topic + "|" + string(d.Body); got != w {
			t.Errorf("message %s: topic|body = %q, want %q", d.MessageID, got, w)
		}
		if d.GenerateTime != 1700000000000 || d.Invalid != "" {
			t.Errorf("message %s: generateTime %d, invalid %q", d.MessageID, d.GenerateTime, d.Invalid)
		}
		d.Accept()
	}
	eventually(t, "every settlement counted", func() bool { return r.src.Stats().Accepted >= n })
	if st := r.src.Stats(); st.Accepted != n || st.DroppedDeadLink != 0 || st.SettleFailed != 0 {
		t.Errorf("Stats = %+v, want %d accepted and nothing else", st, n)
	}
	r.close()
	if strings.Contains(logs.String(), b.AccessKeySecret) {
		t.Error("logs leak the AccessKey secret")
	}
}

// TestRabbitMQLargeMessage: a message larger than the max-frame-size the
// client announces (amqp10.DefaultMaxFrameSize) comes from RabbitMQ in
// several transfer frames and reaches the pipeline whole, as does the small
// one after it.
func TestRabbitMQLargeMessage(t *testing.T) {
	r, pub := queueRig(t, nil)
	big := strings.Repeat("0123456789abcdef", 200<<10/16) // 200 KB
	publish(t, pub, "/pk/dn/user/up", "big", big)
	publish(t, pub, "/pk/dn/user/up", "small", "s")
	d := r.next()
	if d.MessageID != "big" || string(d.Body) != big || d.Invalid != "" {
		t.Errorf("got %q with %d bytes (invalid %q), want big with %d bytes", d.MessageID, len(d.Body), d.Invalid, len(big))
	}
	d.Accept()
	if d := r.next(); d.MessageID != "small" || string(d.Body) != "s" {
		t.Errorf("after the large message got %q %q", d.MessageID, d.Body)
	} else {
		d.Accept()
	}
	eventually(t, "both accepts written", func() bool { return r.src.Stats().Accepted == 2 })
}

// TestRabbitMQUnsettledRedeliveredAfterConnectionLoss drops the socket under
// a source holding unsettled deliveries, as a crash or a network cut would:
// the source notices, redials by itself, the unsettled messages come again,
// and settling the stale deliveries is dropped and counted.
func TestRabbitMQUnsettledRedeliveredAfterConnectionLoss(t *testing.T) {
	r, pub := queueRig(t, nil)

	const n = 6
	for i := range n {
		publish(t, pub, "/pk/dn/user/up", fmt.Sprintf("m%d", i), fmt.Sprintf("body%d", i))
	}
	var unsettled []*bridge.Delivery
	for i := range n {
		d := r.next()
		if i%2 == 0 {
			d.Accept() // forwarded
		} else {
			unsettled = append(unsettled, d) // still in the pipeline
		}
	}

	// The accepts are written by the link's settler: the test is about
	// the unsettled ones, so the connection dies once those are out.
	eventually(t, "the accepts written", func() bool { return r.src.Stats().Accepted == n-int64(len(unsettled)) })
	conn := r.src.Link(0).(*link).conn.(*amqpConn)
	_ = conn.watch.Conn.Close() // the connection dies under the source

	seen := map[string]bool{}
	for range len(unsettled) {
		d := r.next()
		seen[d.MessageID] = true
		if string(d.Body) == "" {
			t.Errorf("redelivered %s without its body", d.MessageID)
		}
		d.Accept()
	}
	for _, d := range unsettled {
		if !seen[d.MessageID] {
			t.Errorf("unsettled message %s was not redelivered (got %v)", d.MessageID, seen)
		}
		d.Accept() // too late: its link is dead
	}
	eventually(t, "every settlement counted", func() bool { return r.src.Stats().Accepted == n })
	st := r.src.Stats()
	if st.DroppedDeadLink != int64(len(unsettled)) || st.Accepted != n {
		t.Errorf("Stats = %+v, want %d dropped from the dead link and %d accepted", st, len(unsettled), n)
	}
	if cs := r.src.ConnStates()[0]; cs.Reconnects != 1 || !cs.Connected {
		t.Errorf("ConnState = %+v, want connected after one reconnect", cs)
	}
	select {
	case d := <-r.run.Got:
		t.Errorf("an accepted message came again: %s", d.MessageID)
	case <-time.After(500 * time.Millisecond): // nothing more is expected; a short look suffices
	}
}

// TestRabbitMQCloseReleasesUnsettled: a source closed with deliveries still
// unsettled releases them, and the next consumer gets them.
func TestRabbitMQCloseReleasesUnsettled(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	u := b.Unique(t)
	queue := "/queue/" + u
	logs1 := &syncBuffer{}
	r1 := startRig(t, b, brokerConfig(b, "it-"+u+"-a", queue, logs1, nil), logs1)
	waitConnected(t, r1.src)
	pub := b.NewAMQPPublisher(t, queue)
	for i := range 4 {
		publish(t, pub, "/pk/dn/user/up", fmt.Sprintf("m%d", i), "x")
	}
	d0 := r1.next()
	d0.Accept()
	for range 3 {
		r1.next() // left unsettled
	}
	r1.close()
	if st := r1.src.Stats(); st.Accepted != 1 || st.Released != 3 {
		t.Errorf("Stats = %+v, want 1 accepted, 3 released", st)
	}

	logs2 := &syncBuffer{}
	r2 := startRig(t, b, brokerConfig(b, "it-"+u+"-b", queue, logs2, nil), logs2)
	ids := map[string]bool{}
	for range 3 {
		d := r2.next()
		ids[d.MessageID] = true
		d.Accept()
	}
	if ids[d0.MessageID] || len(ids) != 3 {
		t.Errorf("second consumer got %v, want the 3 released messages", ids)
	}
}

// TestRabbitMQSettleFailureRedelivers is bug R6's stranding: a settlement
// that fails on a live link (here a settle timeout so short that go-amqp
// drops the disposition before writing it) leaves the delivery unsettled at
// the broker, which redelivers it only when the link ends. So the source
// drops the connection, and the message comes again on the next one,
// instead of staying unacknowledged for as long as the link lives.
func TestRabbitMQSettleFailureRedelivers(t *testing.T) {
	r, pub := queueRig(t, func(cfg *Config) {
		cfg.SettleTimeout = time.Nanosecond // every settlement fails on the live link
	})
	logs := r.logs
	publish(t, pub, "/pk/dn/user/up", "m1", "x")

	d := r.next()
	d.Accept() // fails: the disposition never reaches the broker
	eventually(t, "the settlement counted", func() bool { st := r.src.Stats(); return st.SettleFailed+st.Accepted > 0 })
	if st := r.src.Stats(); st.SettleFailed != 1 || st.Accepted != 0 {
		t.Fatalf("Stats = %+v, want the one settlement failed", st)
	}
	again := r.next() // only if the broker got the message back
	if again.MessageID != "m1" {
		t.Errorf("got %q again, want m1", again.MessageID)
	}
	if cs := r.src.ConnStates()[0]; cs.Reconnects < 1 {
		t.Errorf("ConnState = %+v, want a new connection after the failed settlement", cs)
	}
	if !strings.Contains(logs.String(), "dropping the connection") {
		t.Errorf("the failed settlement was not logged with what the source did:\n%s", logs.String())
	}
}

func TestRabbitMQBrokerRestart(t *testing.T) {
	r, pub := queueRig(t, nil)
	b, logs := r.b, r.logs
	publish(t, pub, "/pk/dn/user/up", "before", "1")
	r.next().Accept()
	eventually(t, "the accept written", func() bool { return r.src.Stats().Accepted == 1 })

	b.Restart(t)

	// The source comes back by itself; a new publisher (the old connection
	// died with the broker) sends after the restart.
	deadline := time.Now().Add(itLimit)
	for r.src.ConnStates()[0].Reconnects < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect after the broker restart: %+v\n%s", r.src.ConnStates(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitConnected(t, r.src)
	pub2 := b.NewAMQPPublisher(t, r.queue)
	publish(t, pub2, "/pk/dn/user/up", "after", "2")
	d := r.next()
	if d.MessageID != "after" || string(d.Body) != "2" {
		t.Errorf("after the restart got %q %q", d.MessageID, d.Body)
	}
	d.Accept()
	t.Logf("dial attempts across the restart: %d; state %+v", r.dials.Load(), r.src.ConnStates()[0])
}

// TestRabbitMQLoginFailures: a wrong secret or an untrusted CA gives an
// error that says what to check, and Run retries with backoff, not in a hot
// loop.
func TestRabbitMQLoginFailures(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	tests := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"wrong secret", func(c *Config) {
			params := c.Params
			c.Params = func() (iotauth.Params, error) {
				p, err := params()
				p.AccessKeySecret = "wrong-" + p.AccessKeySecret
				return p, err
			}
		}, []string{"refused", "source.credentials"}},
		{"unknown CA", func(c *Config) { c.TLS.CAFile = "" }, []string{"TLS certificate not trusted", "source.tls.ca_file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := b.Unique(t)
			logs := &syncBuffer{}
			cfg := brokerConfig(b, "it-"+u, "/queue/"+u, logs, nil)
			tc.mutate(&cfg)
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error", what)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %q does not say %q", what, err, w)
					}
				}
				if strings.Contains(err.Error(), b.AccessKeySecret) {
					t.Errorf("%s: error leaks the secret", what)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), itLimit)
			defer cancel()
			check("CheckConnect", CheckConnect(ctx, cfg))

			start := time.Now()
			r := startRig(t, b, cfg, logs)
			for r.fails.Load() < 2 {
				if time.Since(start) > itLimit {
					t.Fatalf("fewer than 2 attempts: %+v", r.src.ConnStates())
				}
				time.Sleep(10 * time.Millisecond)
			}
			elapsed := time.Since(start)
			st := r.src.ConnStates()[0]
			r.close()
			check("ConnState.LastError", fmt.Errorf("%s", st.LastError))
			// Each wait between attempts is at least MinBackoff/2, so
			// with backoff there are at most elapsed/(MinBackoff/2)+1
			// attempts; a hot loop makes hundreds.
			dials := r.dials.Load()
			if limit := int64(elapsed/(cfg.MinBackoff/2)) + 1; dials > limit {
				t.Errorf("%d dial attempts in %s, want at most %d (retry with backoff)", dials, elapsed, limit)
			}
			t.Logf("%d dial attempts in %s; last error: %s", dials, elapsed.Round(time.Millisecond), st.LastError)
			if n := strings.Count(logs.String(), "source connect failed; retrying"); n != 1 {
				t.Errorf("the failure was logged %d times at error level, want once", n)
			}
			if strings.Contains(logs.String(), b.AccessKeySecret) {
				t.Error("logs leak the secret")
			}
		})
	}
}

// BenchmarkRabbitMQReceiveAccept measures receive → handler → accept
// through one connection with the default credit. The messages are
// published before the timer starts. It prints messages per second.
func BenchmarkRabbitMQReceiveAccept(b *testing.B) {
	br := testbroker.RabbitMQ(b)
	u := br.Unique(b)
	queue := "/queue/" + u
	pub := br.NewAMQPPublisher(b, queue)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	body := make([]byte, 512)
	for i := range b.N {
		if err := pub.Send(ctx, "/pk/dn/user/up", fmt.Sprint(i), 1700000000000, body); err != nil {
			b.Fatal(err)
		}
	}
	cfg := brokerConfig(br, "bench-"+u, queue, &syncBuffer{}, nil)
	cfg.Credit = 0 // the default, 64
	cfg.Logger = nil
	src, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	var n atomic.Int64
	b.ResetTimer()
	start := time.Now()
	runCtx, stop := context.WithCancel(ctx)
	go func() {
		_ = src.Run(runCtx, func(_ context.Context, d *bridge.Delivery) error {
			d.Accept()
			if n.Add(1) == int64(b.N) {
				close(done)
			}
			return nil
		})
	}()
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("received %d of %d; stats %+v, state %+v", n.Load(), b.N, src.Stats(), src.ConnStates())
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	stop()
	cctx, ccancel := context.WithTimeout(context.Background(), itLimit)
	defer ccancel()
	_ = src.Close(cctx)
}

// TestRabbitMQOddSymbolIsForwarded: a message with a property that is a
// symbol with a non-ASCII byte (go-amqp's encoder lets it through, and so
// does RabbitMQ; go-amqp's decoder, the bridge's earlier client, took it)
// comes as a valid delivery with the property as its bytes, and the next
// message follows on the same connection. (It used to be refused as a
// malformed message and dead-lettered; a message that truly does not decode
// still is: amqp10 TestReceiverMalformedMessageIsADelivery, which go-amqp
// and RabbitMQ cannot produce.)
func TestRabbitMQOddSymbolIsForwarded(t *testing.T) {
	r, pub := queueRig(t, nil)
	b := testbroker.RabbitMQ(t)
	conn, sess, err := b.DialAMQP(t, b.PublisherUser, b.PublisherPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), itLimit)
	defer cancel()
	snd, err := sess.NewSender(ctx, r.queue, nil)
	if err != nil {
		t.Fatal(err)
	}
	odd := &amqp.Message{Data: [][]byte{[]byte("b")},
		ApplicationProperties: map[string]any{"messageId": "odd", "kind": amqp.Symbol("caf\xe9")}}
	if err := snd.Send(ctx, odd, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, "/pk/dn/user/up", "good", "g")
	d := r.next()
	if d.Invalid != "" || d.MessageID != "odd" || d.Properties["kind"] != "caf\xe9" || string(d.Body) != "b" {
		t.Fatalf("first delivery: invalid %q, message id %q, kind %q; want it valid with the symbol as its bytes", d.Invalid, d.MessageID, d.Properties["kind"])
	}
	d.Accept()
	if d := r.next(); d.MessageID != "good" || d.Invalid != "" {
		t.Errorf("after the odd message got %q (invalid %q), want good", d.MessageID, d.Invalid)
	} else {
		d.Accept()
	}
	eventually(t, "both accepts written", func() bool { return r.src.Stats().Accepted == 2 })
	if st := r.src.Stats(); st.DroppedDeadLink != 0 {
		t.Errorf("stats %+v: a settlement was dropped (the connection ended)", st)
	}
}
