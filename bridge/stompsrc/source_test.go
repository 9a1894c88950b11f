package stompsrc

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/stompfake"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func newTestSource(t *testing.T, s *stompfake.Server, mod func(*Config)) (*Source, *syncBuffer) {
	t.Helper()
	return testSource(t, s.Addr(), s.CAFile, mod, 20*time.Millisecond, 200*time.Millisecond)
}

// testSource is a Source for the server at endpoint (its CA in caFile) with
// good login parameters, the default heart-beat and the test's logger,
// changed by mod, and redialling with a backoff of minB..maxB.
func testSource(t *testing.T, endpoint, caFile string, mod func(*Config), minB, maxB time.Duration) (*Source, *syncBuffer) {
	t.Helper()
	log, buf := testLogger(t)
	cfg := Config{
		Settings: source.Settings{
			Endpoint:   endpoint,
			TLS:        source.TLSOptions{CAFile: caFile},
			Params:     testParams(goodParams()),
			Logger:     log,
			MinBackoff: minB,
			MaxBackoff: maxB,
		},
		HeartBeat: testDefaults.STOMP.HeartBeat,
	}
	if mod != nil {
		mod(&cfg)
	}
	src, err := New(filled(cfg))
	if err != nil {
		t.Fatal(err)
	}
	return src, buf
}

// stopRun stops r's intake and fails t unless Run returns nil.
func stopRun(t *testing.T, r *sourcetest.Running) {
	t.Helper()
	r.Stop()
	if err := r.Wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// inFlightAfterRun has the server send one message on the connection that
// subscribes next, takes its delivery from r and stops Run: a delivery
// still in flight once Run returned. It returns the connection, the message
// id and the delivery.
func inFlightAfterRun(t *testing.T, s *stompfake.Server, r *sourcetest.Running) (*stompfake.Conn, string, *bridge.Delivery) {
	t.Helper()
	c := s.WaitSubscribed(t)
	id, _ := c.Send("/a/b/user/x", []byte("in flight"))
	d := r.Next(t)
	stopRun(t, r)
	return c, id, d
}

// waitState waits until the slot's state satisfies ok.
func waitState(t *testing.T, src *Source, ok func(bridge.ConnState) bool) bridge.ConnState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := src.ConnStates()
		if len(st) > 0 && ok(st[0]) {
			return st[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("state not reached within 20s: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliversPlatformMessage(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, nil)
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	if c.User().ClientID != "edge-gw-01" || c.AckMode() != "auto" {
		t.Fatalf("subscribed as %q with ack %q, want edge-gw-01 and auto", c.User().ClientID, c.AckMode())
	}
	id, err := c.Send("/pk1/dev1/user/telemetry", []byte(`{"t":21.5}`), "qos", "1")
	if err != nil {
		t.Fatal(err)
	}
	d := r.Next(t)
	if d.Topic != "/pk1/dev1/user/telemetry" || d.MessageID != id || d.GenerateTime != 1700000000123 ||
		string(d.Body) != `{"t":21.5}` || d.Properties["qos"] != "1" || d.Invalid != "" {
		t.Fatalf("delivery = %+v", d.Message)
	}
	if !d.Accept() {
		t.Fatal("Accept did not settle")
	}
	st := waitState(t, src, func(st bridge.ConnState) bool { return st.Connected })
	if st.Name != "edge-gw-01" {
		t.Errorf("state name = %q, want edge-gw-01", st.Name)
	}
}

func TestClientIndividualAcksOnlyOnSettle(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.Ack = AckClientIndividual })
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	if c.AckMode() != "client-individual" {
		t.Fatalf("ack mode %q", c.AckMode())
	}
	id1, _ := c.Send("/a/b/user/x", []byte("one"))
	id2, _ := c.Send("/a/b/user/x", []byte("two"))
	d1, d2 := r.Next(t), r.Next(t)
	select {
	case a := <-s.Settles():
		t.Fatalf("server saw %s before any settle", a)
	default:
	}
	d2.Release()
	if got := s.WaitSettle(t); got != "nack:"+id2 {
		t.Fatalf("after Release got %q, want nack:%s", got, id2)
	}
	d1.Accept()
	if got := s.WaitSettle(t); got != "ack:"+id1 {
		t.Fatalf("after Accept got %q, want ack:%s", got, id1)
	}
}

func TestAutoAckSettleSendsNothing(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, nil)
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	c.Send("/a/b/user/x", []byte("one"))
	r.Next(t).Accept()
	c.Send("/a/b/user/x", []byte("two"))
	r.Next(t).Release()
	// A marker round trip: once a third message arrived, any ACK the
	// settles above had sent would have been read by the server.
	c.Send("/a/b/user/x", []byte("three"))
	r.Next(t)
	if r := s.Record(); len(r.Acks)+len(r.Nacks) != 0 {
		t.Fatalf("ack auto sent acks %v nacks %v", r.Acks, r.Nacks)
	}
}

func TestBase64BodiesByteForByte(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.EncodeBase64 = true })
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	if !c.User().EncodeBase64 {
		t.Fatal("login did not ask for encode=base64")
	}
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	c.Send("/a/b/thing/raw", bin)
	d := r.Next(t)
	if !bytes.Equal(payload(t, d), bin) || d.Invalid != "" {
		t.Fatalf("body = %x (invalid %q), want %x", payload(t, d), d.Invalid, bin)
	}
	if !d.Base64 {
		t.Error("the checked base64 body was decoded, not passed through")
	}
	// A body the server failed to encode: kept raw, marked invalid.
	c.SendAsIs("/a/b/thing/raw", []byte("not*base64!"))
	d = r.Next(t)
	if d.Invalid == "" || string(d.Body) != "not*base64!" {
		t.Fatalf("invalid body: Invalid=%q Body=%q", d.Invalid, d.Body)
	}
}

func TestLoginRefusedIsReportedWithoutSecrets(t *testing.T) {
	s := startFakeServer(t)
	p := goodParams()
	p.AccessKeySecret = "wrong-secret-value"
	src, logs := newTestSource(t, s, func(c *Config) { c.Params = testParams(p) })
	sourcetest.Start(t, src, nil)
	st := waitState(t, src, func(st bridge.ConnState) bool { return st.LastError != "" })
	for _, want := range []string{"login refused", "authentication failed", "password does not match", "source.credentials"} {
		if !strings.Contains(st.LastError, want) {
			t.Errorf("LastError %q lacks %q", st.LastError, want)
		}
	}
	// Let a few more attempts fail, then look at the log.
	waitfor.Until(t, "four login attempts", 20*time.Second, func() bool { return s.Record().Accepted >= 4 })
	out := logs.String()
	if n := strings.Count(out, "level=ERROR msg=\"source connect failed"); n != 1 {
		t.Errorf("logged %d error lines for the same refused login, want 1:\n%s", n, out)
	}
	if strings.Contains(out, "wrong-secret-value") || strings.Contains(st.LastError, "wrong-secret-value") {
		t.Error("the AccessKey secret appears in the log or the error")
	}
	// The line names the protocol and the endpoint (source.Settings.Log), as
	// AMQP's do: it named only the protocol.
	if want := "level=ERROR msg=\"source connect failed; retrying with backoff\" source=stomp endpoint=" + s.Addr(); !strings.Contains(out, want) {
		t.Errorf("the failure's line does not name the endpoint (want %q):\n%s", want, out)
	}
}

// TestRefusedLoginOnSeveralConnectionsIsOneLine: four connections whose
// logins are refused alike make one ERROR line counting them (each logged
// its own: 4 lines, 21 for a throttled group of 40), and, if some failed
// after it, one saying it holds every connection.
func TestRefusedLoginOnSeveralConnectionsIsOneLine(t *testing.T) {
	s := startFakeServer(t)
	p := goodParams()
	p.AccessKeySecret = "wrong-secret-value"
	src, logs := newTestSource(t, s, func(c *Config) { c.Params = testParams(p); c.Connections = 4 })
	sourcetest.Start(t, src, nil)
	waitfor.Until(t, "the failure's line", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "level=ERROR msg=\"source connect failed; retrying with backoff\"")
	})
	waitfor.Until(t, "twelve login attempts", 20*time.Second, func() bool { return s.Record().Accepted >= 12 })
	out := logs.String()
	if n := strings.Count(out, "level=ERROR msg=\"source connect failed"); n != 1 {
		t.Errorf("logged %d error lines for the same refused login on 4 connections, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "level=ERROR"); n > 2 {
		t.Errorf("logged %d error lines, want 1, and 1 more if the failure reached every connection after it:\n%s", n, out)
	}
	waitfor.Until(t, "a line saying all 4 connections are refused", 20*time.Second, func() bool {
		out := logs.String()
		return strings.Contains(out, "connections_failing=4 connections=4") || strings.Contains(out, "source connect failing on every connection")
	})
}

func TestServerCloseReconnectsOneConnectionPerSlot(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.Connections = 2; c.Ack = AckClientIndividual })
	r := sourcetest.Start(t, src, nil)
	first := map[string]*stompfake.Conn{}
	for range 2 {
		c := s.WaitSubscribed(t)
		first[c.User().ClientID] = c
	}
	if first["edge-gw-01-0"] == nil || first["edge-gw-01-1"] == nil {
		t.Fatalf("client ids %v, want edge-gw-01-0 and edge-gw-01-1", first)
	}
	old := first["edge-gw-01-0"]
	old.Send("/a/b/user/x", []byte("before"))
	dOld := r.Next(t)
	old.Close() // server-side close
	c := s.WaitSubscribed(t)
	if c.User().ClientID != "edge-gw-01-0" {
		t.Fatalf("reconnected %q, want edge-gw-01-0", c.User().ClientID)
	}
	id, _ := c.Send("/a/b/user/x", []byte("after"))
	d := r.Next(t)
	if string(d.Body) != "after" {
		t.Fatalf("got %q after reconnect", d.Body)
	}
	// Settling the delivery of the old connection must not ack on the new.
	dOld.Accept()
	d.Accept()
	if got := s.WaitSettle(t); got != "ack:"+id {
		t.Fatalf("first ack after reconnect is %q, want ack:%s (the old delivery must not be acked on the new connection)", got, id)
	}
	st := waitState(t, src, func(st bridge.ConnState) bool { return st.Connected && st.Reconnects == 1 })
	if !strings.Contains(st.Name, "edge-gw-01-0") {
		t.Errorf("state %+v", st)
	}
	if maxPer := s.Record().MaxPerClient; maxPer != 1 {
		t.Fatalf("a slot had %d connections at once", maxPer)
	}
}

func TestServerErrorFrameReconnects(t *testing.T) {
	s := startFakeServer(t)
	src, logs := newTestSource(t, s, nil)
	sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	c.Write(stompfake.ErrorFrame("throttled: too many messages"))
	s.WaitSubscribed(t)
	if out := logs.String(); !strings.Contains(out, "the server sent ERROR: throttled: too many messages (details: throttled: too many messages)") {
		t.Fatalf("the server's ERROR is not in the log:\n%s", out)
	}
}

func TestMalformedFrameReconnects(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, nil)
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	c.WriteRaw([]byte("MESSAGE\nno-colon-header\n\n\x00"))
	c2 := s.WaitSubscribed(t)
	c2.Send("/a/b/user/x", []byte("fine"))
	if d := r.Next(t); string(d.Body) != "fine" {
		t.Fatalf("got %q", d.Body)
	}
}

func TestSilentServerIsDetected(t *testing.T) {
	s := startBeatingServer(t, 50*time.Millisecond)
	src, _ := newTestSource(t, s, func(c *Config) {
		c.HeartBeat = 50 * time.Millisecond
		c.CheckInterval = 20 * time.Millisecond
	})
	sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	c.GoSilent()
	c2 := s.WaitSubscribed(t)
	if c2 == c {
		t.Fatal("same connection")
	}
	st := waitState(t, src, func(st bridge.ConnState) bool { return st.Reconnects >= 1 })
	_ = st
	if maxPer := s.Record().MaxPerClient; maxPer != 1 {
		t.Fatalf("a slot had %d connections at once", maxPer)
	}
}

func TestNoHeartBeatOfferMeansNoSilenceCheck(t *testing.T) {
	s := startFakeServer(t) // offers no heart-beats
	src, _ := newTestSource(t, s, func(c *Config) {
		c.HeartBeat = 10 * time.Millisecond
		c.CheckInterval = 5 * time.Millisecond
	})
	r := sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	time.Sleep(1500 * time.Millisecond) // idle beyond any silence limit for 10ms heart-beats
	c.Send("/a/b/user/x", []byte("still here"))
	if d := r.Next(t); string(d.Body) != "still here" {
		t.Fatalf("got %q", d.Body)
	}
	if logins := len(s.Record().Logins); logins != 1 {
		t.Fatalf("%d logins, want 1: an idle connection without heart-beats was dropped", logins)
	}
}

func TestBlockedHandlerIsNotSilence(t *testing.T) {
	s := startBeatingServer(t, 20*time.Millisecond)
	release := make(chan struct{})
	var got []string
	gotAll := make(chan struct{})
	const n = 100
	h := func(ctx context.Context, d *bridge.Delivery) error {
		if len(got) == 0 {
			<-release
		}
		got = append(got, string(d.Body))
		if len(got) == n {
			close(gotAll)
		}
		return nil
	}
	src, _ := newTestSource(t, s, func(c *Config) {
		c.HeartBeat = 20 * time.Millisecond
		c.CheckInterval = 5 * time.Millisecond
	})
	sourcetest.Start(t, src, h)
	c := s.WaitSubscribed(t)
	go func() {
		for i := range n {
			c.Send("/a/b/user/x", []byte{byte(i)})
		}
	}()
	// Blocked far longer than the silence limit (2*20ms+1s).
	time.Sleep(1500 * time.Millisecond)
	close(release)
	select {
	case <-gotAll:
	case <-time.After(20 * time.Second):
		t.Fatal("not all messages arrived")
	}
	for i, b := range got {
		if b != string([]byte{byte(i)}) {
			t.Fatalf("message %d is %x", i, b)
		}
	}
	if logins := len(s.Record().Logins); logins != 1 {
		t.Fatalf("%d logins, want 1: backpressure was taken for silence", logins)
	}
}

func TestSettleAfterRunReturnsThenClose(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.Ack = AckClientIndividual })
	c, id, d := inFlightAfterRun(t, s, sourcetest.Start(t, src, nil))
	d.Accept() // the connection is still open
	if got := s.WaitSettle(t); got != "ack:"+id {
		t.Fatalf("got %q, want ack:%s", got, id)
	}
	sourcetest.Close(t, src)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Close left the connection open")
	}
}

func TestInsecureSkipVerifyWarnsOnEveryConnect(t *testing.T) {
	s := startFakeServer(t)
	src, logs := newTestSource(t, s, func(c *Config) {
		c.TLS = source.TLSOptions{InsecureSkipVerify: true}
	})
	sourcetest.Start(t, src, nil)
	c := s.WaitSubscribed(t)
	c.Close()
	s.WaitSubscribed(t)
	if n := strings.Count(logs.String(), "insecure_skip_verify"); n < 2 {
		t.Fatalf("warned %d times for 2 connects", n)
	}
}

// payload is d's payload: its body, decoded when it is the platform's
// base64 passed through (Message.Base64).
func payload(t *testing.T, d *bridge.Delivery) []byte {
	t.Helper()
	p, err := d.Payload()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLinkKeptForSettlesIsNotClosedForSilence: once Run returned, a
// client-individual link reads nothing more but stays open for the settles
// of deliveries in flight; the server's silence from then on must not close
// it (the ACK would be lost and the message sent again).
func TestLinkKeptForSettlesIsNotClosedForSilence(t *testing.T) {
	s := startBeatingServer(t, 50*time.Millisecond)
	src, _ := newTestSource(t, s, func(c *Config) {
		c.Ack = AckClientIndividual
		c.HeartBeat = 50 * time.Millisecond
		c.CheckInterval = 20 * time.Millisecond
	})
	c, id, d := inFlightAfterRun(t, s, sourcetest.Start(t, src, nil))
	c.GoSilent()
	time.Sleep(1500 * time.Millisecond) // silent beyond the limit for 50ms heart-beats (1.1 s)
	d.Accept()
	if got := s.WaitSettle(t); got != "ack:"+id {
		t.Fatalf("got %q, want ack:%s", got, id)
	}
}

// TestSignErrorIsFatal: signing inputs that became invalid after New (they
// come from the config and cannot fix themselves) stop Run with a fatal
// error naming the field, as in every source (source.Driver); the STOMP
// source used to redial them forever.
func TestSignErrorIsFatal(t *testing.T) {
	s := startFakeServer(t)
	var mu sync.Mutex
	calls := 0
	params := func() (iotauth.Params, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		p := goodParams()
		if calls > 1 { // valid for New, then broken
			p.ConsumerGroupID = "bad,group"
		}
		return p, nil
	}
	src, _ := newTestSource(t, s, func(c *Config) { c.Params = params })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := src.Run(ctx, func(context.Context, *bridge.Delivery) error { return nil })
	if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "consumerGroupId") {
		t.Errorf("Run = %v, want a fatal error naming consumerGroupId", err)
	}
	sourcetest.Close(t, src)
}

// TestRefusedDeliveryIsFatal: a delivery the pipeline refuses while intake
// runs stops Run (the pipeline is gone), after releasing it: with
// client-individual the server gets a NACK.
func TestRefusedDeliveryIsFatal(t *testing.T) {
	s := startFakeServer(t)
	src, _ := newTestSource(t, s, func(c *Config) { c.Ack = AckClientIndividual })
	errc := make(chan error, 1)
	go func() {
		errc <- src.Run(context.Background(), func(context.Context, *bridge.Delivery) error {
			return errors.New("pipeline is shutting down")
		})
	}()
	c := s.WaitSubscribed(t)
	id, _ := c.Send("/a/b/user/x", []byte("refused"))
	select {
	case err := <-errc:
		if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "refused a delivery") {
			t.Fatalf("Run = %v, want a fatal refusal", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if got := s.WaitSettle(t); got != "nack:"+id {
		t.Errorf("got %q, want nack:%s", got, id)
	}
	sourcetest.Close(t, src)
}
