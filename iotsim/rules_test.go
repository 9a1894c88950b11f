package iotsim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
)

// TestAckTimeoutGoesToBacklogRetriedAfterLiveTraffic: a push unsettled for
// AckTimeout goes to the group's backlog, which waits for its round while
// live messages keep flowing, and comes back in the next round.
func TestAckTimeoutGoesToBacklogRetriedAfterLiveTraffic(t *testing.T) {
	// A round an hour away: the backlog must hold the message meanwhile.
	// The live message is settled well within the ACK timeout.
	s := startAMQP(t, Config{AckTimeout: time.Second, BacklogInterval: time.Hour})
	c := rawReceiver(t, s, amqp10.SndUnsettled)
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "slow", Body: []byte("x")})
	c.credit(0, 0, 100, false)
	first, _ := c.transfer()
	waitFor(t, "the ACK timeout", func() bool { return s.Stats().Backlog == 1 })
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "live", Body: []byte("y")})
	tr, m := c.transfer()
	if v, _ := m.Property("messageId"); v != "live" {
		t.Fatalf("got %v, want the live message first", v)
	}
	c.settle(*tr.DeliveryID, &amqp10.Accepted{})
	c.settle(*first.DeliveryID, &amqp10.Accepted{}) // late: harmless
	// The echoed flow orders after both dispositions: the backlogged
	// message is still there although the receiver has credit.
	c.credit(0, 2, 98, true)
	fl, ok := c.next(amqp10.FrameAMQP).(*amqp10.Flow)
	if !ok || fl.Available == nil || *fl.Available != 1 {
		t.Fatalf("echoed flow %#v, want 1 available (the backlog)", fl)
	}
	if st := s.Stats(); st.Backlog != 1 || st.Acked != 1 || st.Expired != 1 {
		t.Errorf("stats = %+v, want 1 in the backlog, 1 ack, 1 expiry", st)
	}
}

func TestBacklogRoundRedelivers(t *testing.T) {
	s := startServer(t, Config{AckTimeout: time.Second, BacklogInterval: 100 * time.Millisecond})
	c := mustDial(t, s, params("stomp-backlog"))
	sub := subscribe(t, c, stomp.AckClientIndividual)
	s.Publish(testGroup, Message{Topic: "/t", MessageID: "b1"})
	recv(t, sub) // never acked
	again := recv(t, sub)
	if again.Header.Get("messageId") != "b1" {
		t.Fatalf("got %q, want b1 again from the backlog", again.Header.Get("messageId"))
	}
	if err := c.Ack(again); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ack", func() bool { st := s.Stats(); return st.Acked == 1 && st.Pending == 0 })
}

// TestBacklogRateBound: the backlog is pushed at most BacklogRate a second
// for the whole group. The bound is a floor on the time the round takes,
// which no machine can beat.
func TestBacklogRateBound(t *testing.T) {
	const n, rate = 20, 50.0
	s := startAMQP(t, Config{AckTimeout: 20 * time.Millisecond, BacklogRate: rate, BacklogInterval: time.Millisecond})
	c := rawReceiver(t, s, amqp10.SndUnsettled)
	for i := range n {
		s.Publish(testGroup, Message{Topic: "/t", MessageID: fmt.Sprint(i), Body: []byte("x")})
	}
	c.credit(0, 0, 2*n, false)
	for range n {
		c.transfer() // the first pushes, never settled
	}
	var firstAt time.Time
	for i := range n {
		tr, _ := c.transfer()
		if i == 0 {
			firstAt = time.Now()
		}
		c.settle(*tr.DeliveryID, &amqp10.Accepted{})
	}
	min := time.Duration(float64(n-1) / rate * float64(time.Second))
	if took := time.Since(firstAt); took < min {
		t.Errorf("%d backlog pushes took %v, less than %v at %g/s", n, took, min, rate)
	}
}

// TestConnectLimitPerGroup: beyond ConnectLimit attempts in the window a
// group's logins are refused with "throttled", over STOMP and AMQP alike,
// while another group still connects.
func TestConnectLimitPerGroup(t *testing.T) {
	s := startAMQP(t, Config{ConnectLimit: 2, ConnectWindow: time.Hour})
	c1 := mustDial(t, s, params("a"))
	defer c1.Disconnect()
	a, err := dialAMQP(t, s, params("b"), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := dialAs(t, s, params("c")); err == nil || !strings.Contains(err.Error(), "throttled") {
		t.Errorf("third STOMP attempt: err = %v, want throttled", err)
	}
	if _, err := dialAMQP(t, s, params("d"), 2*time.Minute); err == nil || !strings.Contains(err.Error(), "0x4") || !strings.Contains(err.Error(), "throttled") {
		t.Errorf("fourth attempt over AMQP: err = %v, want a temporary SASL failure (code 4)", err)
	}
	other := params("e")
	other.ConsumerGroupID = "OTHER_GROUP"
	c2 := mustDial(t, s, other)
	c2.Disconnect()
	if st := s.Stats(); st.LoginsThrottled != 2 || st.LoginsOK != 3 {
		t.Errorf("stats = %+v, want 2 throttled, 3 ok", st)
	}
}

// TestMaxGroupClients: a consumer group takes at most MaxGroupClients
// clients (the platform: 64, error 9600); the login of one more is refused
// over STOMP and AMQP alike, naming the limit, while a client already online
// may open another connection, another group still connects, and a client
// that leaves makes room.
func TestMaxGroupClients(t *testing.T) {
	s := startAMQP(t, Config{MaxGroupClients: 2})
	c1 := mustDial(t, s, params("a"))
	defer c1.Disconnect()
	a, err := dialAMQP(t, s, params("b"), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	want := "9600: too many connections in one consumer group: consumer group DEFAULT_GROUP has 2 clients online, the platform's limit"
	if _, err := dialAs(t, s, params("c")); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("third client over STOMP: err = %v, want %q", err, want)
	}
	if _, err := dialAMQP(t, s, params("c"), 2*time.Minute); err == nil || !strings.Contains(err.Error(), "0x1") || !strings.Contains(err.Error(), want) {
		t.Errorf("third client over AMQP: err = %v, want an auth SASL failure (code 1) saying %q", err, want)
	}
	again := mustDial(t, s, params("a")) // a second connection of a client online
	again.Disconnect()
	other := params("c")
	other.ConsumerGroupID = "OTHER_GROUP"
	mustDial(t, s, other).Disconnect()
	if err := c1.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "client a to leave", func() bool { return s.Stats().Connections == 1 })
	mustDial(t, s, params("c")).Disconnect()
	if st := s.Stats(); st.LoginsFailed != 2 || st.LoginsOK != 5 {
		t.Errorf("stats = %+v, want 2 refused, 5 ok", st)
	}
}
