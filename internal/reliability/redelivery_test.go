package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestRedeliveriesOfHeldMessagesAreJoined: the platform drops the bridge's
// connection (expired credentials, an idle time-out, a restart) while MNS
// fails every request, so the bridge holds every message it took, each on
// a link that is now gone; after the reconnect the platform delivers them
// all again. The copies arrive while their originals are held (MNS still
// fails: the test waits for every copy to reach the pipeline before MNS
// recovers), and MNS must still get each message once, and the platform
// see each accepted. The de-dup window (on, the default) knows only what
// MNS accepted, so without joining every copy was sent as well.
func TestRedeliveriesOfHeldMessagesAreJoined(t *testing.T) {
	t.Run("amqp", func(t *testing.T) { redeliverHeld(t, spec{protocol: "amqp"}) })
	t.Run("stomp client-individual", func(t *testing.T) { redeliverHeld(t, spec{ack: "client-individual"}) })
}

// redeliverHeld runs the scenario of TestRedeliveriesOfHeldMessagesAreJoined
// over the source sp configures.
func redeliverHeld(t *testing.T, sp spec) {
	// No ACK timeout within the test: the only redeliveries are
	// those of the dropped connection.
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{AckTimeout: time.Hour})
	if sp.protocol == "amqp" {
		e.srcProxy = e.amqpProxy
	}
	e.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	r := runBridge(t, e.config(t, sp), app.Options{})
	// Below the AMQP credit (64) and the simulator's unacked
	// window per STOMP connection (32): all held at once.
	const n = 30
	pub := &publisher{sim: e.sim, prefix: "held"}
	pub.publish(n)
	received := func(want int64) func() bool {
		return func() bool { return r.b.Stats().Received == want }
	}
	detail := func() string { return fmt.Sprintf("pipeline %+v; simulator %+v", r.b.Stats(), e.sim.Stats()) }
	waitFor(t, "every message held by the bridge", time.Minute, received(n), detail)
	e.sim.CloseConnections()
	waitFor(t, "every message delivered again while held", time.Minute, received(2*n), detail)
	e.emu.SetFaults(mnsemu.Faults{})
	tl := waitAllArrived(t, e.emu, pub.sent(), time.Minute)
	tl.report(t, t.Name())
	waitFor(t, "every message accepted at the platform", time.Minute,
		func() bool { st := e.sim.Stats(); return st.Acked == n && st.Pending == 0 }, detail)
	if tl.Duplicated != 0 {
		t.Errorf("%d duplicates at MNS, want none (the copies join their held originals)", tl.Duplicated)
	}
	if st := r.b.Stats(); st.Joined != n || st.Forwarded != n {
		t.Errorf("pipeline %+v, want %d joined and %d forwarded", st, n, n)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	// The operator sees where the copies went: the last line counts them.
	if want := fmt.Sprintf("duplicates=0 joined=%d", n); !strings.Contains(r.logs.String(), want) {
		t.Errorf("the bridge's log does not say %q:\n%s", want, tail(r.logs.String(), 5))
	}
}
