package amqpsrc

import (
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
)

// TestCreditBoundConnectionIsLogged: a connection that spends most of each
// minute waiting for credit (every message of its window held until a slow
// MNS takes it) is logged once, with the keys to raise, and once again when
// it no longer does; before, nothing said why the platform's backlog grew
// (walk5: 41.6 msgs/s of 50 with MNS at 3 s). A single long wait (an MNS
// outage, which the pipeline logs) says nothing.
func TestCreditBoundConnectionIsLogged(t *testing.T) {
	clock := testclock.New(time.Unix(1_800_000_000, 0))
	hs := newHarness(t, Config{Credit: 4, Now: clock.Now}, nil, func(c *fakeConn) { c.reading = make(chan struct{}, 1) })
	c := hs.nextConn()
	const bound = "AMQP connections wait for credit most of the time"
	const free = "AMQP connections no longer wait for credit most of the time"
	count := func(line string) int { return strings.Count(hs.logs.String(), line) }
	// round hands the connection a window of messages; MNS takes them
	// after inCredit passed while Next waited for credit, and inReceive
	// passes once Next waits for the platform's next message.
	round := func(inCredit, inReceive time.Duration) {
		t.Helper()
		ds := hs.sendN(c, 4)
		l := ds[0].Token.(*token).link
		eventually(t, "Next to wait for credit with the window held", func() bool { return l.wantCredit.Load() && l.inFlight() == 4 })
		select {
		case <-c.reading:
		default:
		}
		clock.Add(inCredit)
		for _, d := range ds {
			d.Accept()
		}
		select {
		case <-c.reading: // Next took the credit and waits for a message
		case <-time.After(waitLimit):
			t.Fatal("Next did not go on to receive")
		}
		clock.Add(inReceive)
	}

	// One long wait (an outage of 5 minutes), then quick rounds: nothing.
	round(5*time.Minute, 0)
	for range 4 {
		round(0, 20*time.Second)
	}
	if n, m := count(bound), count(free); n != 0 || m != 0 {
		t.Fatalf("logged %d times %q and %d times %q after one long wait and quick rounds, want neither", n, bound, m, free)
	}
	// A slow MNS: 20 s of every 21 waiting for credit, for two minutes.
	for range 7 {
		round(20*time.Second, time.Second)
	}
	if n := count(bound); n != 1 {
		t.Fatalf("logged %q %d times, want once:\n%s", bound, n, hs.logs)
	}
	n := hs.src.cfg.Names
	for _, want := range []string{"raise " + n.Of(source.FieldCredit) + ", or " + n.Of(source.FieldConnections), "credit=4", "client_id=edge-gw-01"} {
		if !strings.Contains(hs.logs.String(), want) {
			t.Errorf("the line does not say %q:\n%s", want, hs.logs)
		}
	}
	// MNS is fast again: logged once that it is over.
	for range 7 {
		round(0, 20*time.Second)
	}
	if n, m := count(bound), count(free); n != 1 || m != 1 {
		t.Errorf("logged %q %d times and %q %d times, want once each:\n%s", bound, n, free, m, hs.logs)
	}
}

// TestCreditWindowAfterTheLinkEndedIsNotCounted: a window that Next closes
// after its link ended (a grant taken as the connection went) does not
// count the link as credit-bound: the Source's count would stay above zero
// for good, and no later credit-bound connection would be logged again.
func TestCreditWindowAfterTheLinkEndedIsNotCounted(t *testing.T) {
	clock := testclock.New(time.Unix(1_800_000_000, 0))
	src, err := New(filled(Config{Settings: source.Settings{Endpoint: "127.0.0.1:1", Params: testParams}, Now: clock.Now}))
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeConn(0, "c0")
	l := newLink(src, fc, "c0")
	fc.kill(&amqp10.ConnError{})
	<-l.Lost()
	eventually(t, "the link to leave the count", func() bool { return l.creditState.Load() == linkEnded })
	start := clock.Now()
	for range creditBoundRefills {
		clock.Add(creditWatchEvery / creditBoundRefills)
		l.creditWaited(start, clock.Now())
		start = clock.Now()
	}
	if n := src.creditBound.Load(); n != 0 {
		t.Errorf("%d links counted as credit-bound after the only one ended, want 0", n)
	}
}
