package amqpsrc

// Tests against the IoT platform simulator's AMQP 1.0 listener (iotsim),
// which follows the platform's rules: what the bridge meets in production.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/faultproxy"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
)

const (
	simAK     = "LTAIsimAK"
	simSecret = "sim-secret"
	simGroup  = "DEFAULT_GROUP"
)

// startSim starts the simulator with AMQP and returns it with its CA file.
func startSim(t *testing.T, cfg iotsim.Config) (*iotsim.Server, string) {
	t.Helper()
	cfg.AMQPAddr = "127.0.0.1:0"
	cfg.Secrets = map[string]string{simAK: simSecret}
	s, err := iotsim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, testfile.Write(t, t.TempDir(), "ca.pem", string(s.CACertPEM()))
}

func simConfig(endpoint, ca string, logs *syncBuffer) Config {
	return filled(Config{
		Settings: source.Settings{
			Endpoint: endpoint,
			TLS:      source.TLSOptions{CAFile: ca, ServerName: "localhost"},
			Params: func() (iotauth.Params, error) {
				return iotauth.Params{ClientID: "bridge", AccessKeyID: simAK, AccessKeySecret: simSecret,
					ConsumerGroupID: simGroup, SignMethod: iotauth.HMACSHA256}, nil
			},
			DialTimeout: 10 * time.Second,
			MinBackoff:  50 * time.Millisecond,
			MaxBackoff:  200 * time.Millisecond,
			Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		Credit: 10,
	})
}

func TestIoTSimulatorDeliversAndSettles(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{})
	logs := &syncBuffer{}
	r := startRig(t, nil, simConfig(sim.AMQPAddr(), ca, logs), logs)
	sim.Publish(simGroup, iotsim.Message{Topic: "/pk/dn/user/bin", MessageID: "42", GenerateTime: 1700000000042,
		Body: []byte{0, 1, 0xff}})
	d := r.next()
	if d.Topic != "/pk/dn/user/bin" || d.MessageID != "42" || d.GenerateTime != 1700000000042 ||
		!bytes.Equal(d.Body, []byte{0, 1, 0xff}) || d.Invalid != "" {
		t.Errorf("delivery = %+v", d.Message)
	}
	d.Release()
	d = r.next() // released: the platform sends it again
	if d.MessageID != "42" {
		t.Errorf("redelivered %q", d.MessageID)
	}
	d.Accept()
	waitFor(t, "the accept", func() bool { return sim.Stats().Acked == 1 })
	if st := sim.Stats(); st.Released != 1 || st.Pending != 0 {
		t.Errorf("simulator stats = %+v", st)
	}
}

// TestCloseSaysWhatItReleasedUnreceived: at Close the messages the
// client received ahead on its credit but never handed over are released
// (the platform sends them again) and the log says how many, as the STOMP
// source says of the messages it had buffered.
func TestCloseSaysWhatItReleasedUnreceived(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{})
	logs := &syncBuffer{}
	src, err := New(simConfig(sim.AMQPAddr(), ca, logs)) // credit 10
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *amqpConn, 1)
	real := src.dial
	src.dial = func(ctx context.Context, slot int, id string) (connection, error) {
		c, err := real(ctx, slot, id)
		if err == nil {
			conns <- c.(*amqpConn)
		}
		return c, err
	}
	took := make(chan *bridge.Delivery, 1)
	run := sourcetest.Start(t, src, func(ctx context.Context, d *bridge.Delivery) error {
		took <- d // the first; the handler then holds the source here
		<-ctx.Done()
		return ctx.Err()
	})
	for i := range 10 {
		sim.Publish(simGroup, iotsim.Message{Topic: "/pk/dn/user/x", MessageID: fmt.Sprint(i), Body: []byte("b")})
	}
	<-took
	conn := <-conns
	waitFor(t, "the other 9 received ahead", func() bool { return conn.rcv.Buffered() == 9 })
	run.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), itLimit)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitFor(t, "every message released", func() bool { return sim.Stats().Released == 10 })
	want := `msg="amqp messages received ahead were released at close; the platform sends them again" source=amqp`
	if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), " conn=bridge count=9") {
		t.Errorf("the log does not say that 9 messages received ahead were released:\n%s", logs.String())
	}
}

// TestSilentConnectionIsDropped: a connection that stops carrying bytes
// without closing (a blackhole) is dropped after the silence limit, not
// after go-amqp's idle timeout, and the source reconnects.
func TestSilentConnectionIsDropped(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{})
	proxy, err := faultproxy.Start(sim.AMQPAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	logs := &syncBuffer{}
	cfg := simConfig(proxy.Addr(), ca, logs)
	// The simulator beats every 15 s (half the advertised 30 s); a steady
	// flow of messages keeps bytes coming faster than this short limit.
	cfg.SilenceTimeout = time.Second
	r := startRig(t, nil, cfg, logs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sim.PublishContext(ctx, simGroup, iotsim.Message{Topic: "/t", Body: []byte("x")})
			}
		}
	}()
	go func() {
		for {
			select {
			case d := <-r.run.Got:
				d.Accept()
			case <-ctx.Done():
				return
			}
		}
	}()
	waitFor(t, "the first accepts", func() bool { return sim.Stats().Acked > 5 })
	// (A loaded machine may stall the flow for longer than the short
	// limit: count the reports rather than expect none before the hole.)
	before := strings.Count(logs.String(), "silent connection")
	proxy.SetBlackhole(true)
	waitFor(t, "the silence to be noticed", func() bool { return strings.Count(logs.String(), "silent connection") > before })
	proxy.SetBlackhole(false)
	base := sim.Stats().Acked
	waitFor(t, "accepts after the reconnect", func() bool { return sim.Stats().Acked > base+5 })
	if r.dials.Load() < 2 {
		t.Errorf("%d dials, want a reconnect", r.dials.Load())
	}
}

// waitFor polls cond until it holds; the deadline only bounds a broken test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, itLimit, cond)
}

// TestThrottledLoginIsExplained: past the platform's connection budget
// the login error names the budget and the key that sets this bridge's
// share.
func TestThrottledLoginIsExplained(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{ConnectLimit: 1, ConnectWindow: time.Hour})
	logs := &syncBuffer{}
	cfg, err := simConfig(sim.AMQPAddr(), ca, logs).checked()
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := cfg.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	d := &dialer{cfg: cfg, tls: tlsConf}
	c, err := d.dial(context.Background(), 0, "first")
	if err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	_, err = d.dial(context.Background(), 0, "second")
	if err == nil || !strings.Contains(err.Error(), "throttled") || !strings.Contains(err.Error(), "source.connect_attempts_per_minute") {
		t.Errorf("second attempt: err = %v, want throttled and the key", err)
	}
}

// TestCheckConnectAgainstSimulator: "check -connect" logs in, attaches and
// leaves cleanly against a server with the platform's rules, and reports a
// wrong secret as a refused login.
func TestCheckConnectAgainstSimulator(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{})
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), itLimit)
	defer cancel()
	if err := CheckConnect(ctx, simConfig(sim.AMQPAddr(), ca, logs)); err != nil {
		t.Fatalf("CheckConnect: %v", err)
	}
	cfg := simConfig(sim.AMQPAddr(), ca, logs)
	cfg.Params = func() (iotauth.Params, error) {
		return iotauth.Params{ClientID: "bridge", AccessKeyID: simAK, AccessKeySecret: "wrong",
			ConsumerGroupID: simGroup, SignMethod: iotauth.HMACSHA256}, nil
	}
	var refused []string
	cfg.Refused = func(id string) { refused = append(refused, id) }
	err := CheckConnect(ctx, cfg)
	if err == nil || !errors.Is(err, bridge.ErrLoginRefused) {
		t.Errorf("CheckConnect with a wrong secret: err = %v, want a refused login", err)
	}
	// The refused login tells Settings.Refused the AccessKeyId it was
	// signed with (the credentials cache then fetches anew).
	if len(refused) != 1 || refused[0] != simAK {
		t.Errorf("Refused heard %q, want [%s]", refused, simAK)
	}
	if st := sim.Stats(); st.LoginsOK != 1 || st.LoginsFailed != 1 {
		t.Errorf("simulator stats = %+v", st)
	}
}

// TestRefusedGroupIsNotReportedAsTheKey: a login the simulator refuses for a
// consumer group that does not exist is not reported to Settings.Refused:
// new credentials would not help, and the credentials cache would warn that
// the clock may be behind (it did, once per triple).
func TestRefusedGroupIsNotReportedAsTheKey(t *testing.T) {
	sim, ca := startSim(t, iotsim.Config{KnownGroups: []string{"other-group"}})
	ctx, cancel := context.WithTimeout(context.Background(), itLimit)
	defer cancel()
	cfg := simConfig(sim.AMQPAddr(), ca, &syncBuffer{})
	var refused []string
	cfg.Refused = func(id string) { refused = append(refused, id) }
	err := CheckConnect(ctx, cfg)
	if !errors.Is(err, bridge.ErrLoginRefused) || !strings.Contains(err.Error(), "consumer group does not exist") {
		t.Fatalf("CheckConnect in an unknown group: %v, want the simulator's refusal", err)
	}
	if len(refused) != 0 {
		t.Errorf("Refused heard %q for %v", refused, err)
	}
}
