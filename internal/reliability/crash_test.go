package reliability

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// crashCase is a kill -9 run: n messages, the bridge killed with SIGKILL
// kills times at even intervals of progress, then run once more to the end.
type crashCase struct {
	name string
	sp   spec
	// zeroLoss: every message must arrive. Otherwise the loss is measured
	// and reported (STOMP ack auto without the spool has a loss window).
	zeroLoss bool
}

// TestKill9 kills the bridge ten times during a 100,000-message run (10,000
// and two kills under -short) for each STOMP delivery mode and for AMQP. Messages are
// offered at crashRate.
func TestKill9(t *testing.T) {
	tests := []crashCase{
		{name: "STOMP client-individual", sp: spec{ack: "client-individual"}, zeroLoss: true},
		// With ack auto the platform settles on send: what the bridge has
		// read but not yet made durable is lost on a crash. The spool makes
		// that window one group commit (~ms); every message that reached the
		// spool must arrive (checked after each kill).
		{name: "STOMP auto with the spool", sp: spec{ack: "auto", spool: true}},
		// Without the spool the window is everything read but not yet
		// accepted by MNS (up to delivery.max_in_flight): measured, not
		// asserted.
		{name: "STOMP auto without the spool", sp: spec{ack: "auto"}},
		// AMQP 1.0 against the simulator's AMQP listener, which follows the
		// platform's rules: accepted only after MNS has the message, so the
		// platform redelivers everything in flight at a kill.
		{name: "AMQP (platform simulator)", sp: spec{protocol: "amqp"}, zeroLoss: true},
	}
	for _, cc := range tests {
		t.Run(cc.name, func(t *testing.T) { runCrash(t, cc) })
	}
}

// crashRate is the messages per second the simulator is offered in kill
// runs.
const crashRate = 2000

// paced publishes ids at rate messages per second, in 10 ms steps.
func paced(sim *iotsim.Server, ids []string, rate int) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(rate/100, 1)
	for i := 0; i < len(ids); {
		for j := 0; j < per && i < len(ids); j, i = j+1, i+1 {
			sim.Publish(group, iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%5), MessageID: ids[i], Body: []byte(ids[i])})
		}
		<-tick.C
	}
}

func runCrash(t *testing.T, cc crashCase) {
	n, kills := scale(100000, 10), scale(10, 2)
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{AckTimeout: 10 * time.Second})
	sp := cc.sp
	// Straight to the peers: the proxies are not part of this scenario.
	sp.endpoint, sp.mnsEndpoint, sp.logLevel = e.sim.Addr(), "http://"+e.emuAddr, "warn"
	if sp.protocol == "amqp" {
		sp.endpoint = e.sim.AMQPAddr()
	}
	// The bridge's /status tells when it has nothing left to forward.
	sp.httpListen = freeLoopbackAddr(t)
	path := e.config(t, sp)
	spoolDir := filepath.Join(e.dir, "spool")

	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("k-%07d", i)
	}
	// Paced like the platform (which pushes about 1,000 messages/s per
	// connection), not all at once: with ack auto, a backlog pushed in one go
	// sits "delivered" in the kernel's socket buffers, and a kill then loses
	// whatever the buffers hold, which measures the buffers, not the bridge.
	go paced(e.sim, ids, crashRate)

	spooled := map[string]bool{} // every id seen in the spool after a kill
	var restarts []time.Duration
	start := time.Now()
	for round := 1; round <= kills; round++ {
		c := startChild(t, "run", "-config", path)
		if round > 1 {
			restarts = append(restarts, timeToConsume(t, e, c))
		}
		// Kill at even steps of what the simulator delivered: with ack auto
		// the messages lost on a kill never reach MNS, so MNS counts would
		// fall behind.
		target := int64(round * n / (kills + 1))
		c.waitFor(t, fmt.Sprintf("%d messages delivered before kill %d", target, round), 5*time.Minute, func() bool {
			return e.sim.Stats().Delivered-e.sim.Stats().Redelivered >= target
		})
		c.Kill9(t)
		if sp.spool {
			for _, id := range spoolContents(t, spoolDir) {
				spooled[id] = true
			}
		}
	}
	c := startChild(t, "run", "-config", path)
	restarts = append(restarts, timeToConsume(t, e, c))

	var tl tally
	if cc.zeroLoss {
		tl = waitAllArrived(t, e.emu, ids, 5*time.Minute)
	} else {
		waitQuiet(t, e)
		waitIdle(t, c, sp.httpListen)
		tl = count(ids, arrived(t, e.emu, queue))
	}
	elapsed := time.Since(start)
	if code := c.Term(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM:\n%s", code, tail(c.Out.String(), 30))
	}
	noSecrets(t, "the bridge log", c.Out.String())
	tl.Recovery = maxDur(restarts)
	tl.report(t, fmt.Sprintf("%s, %d kills", cc.name, kills))
	st := e.sim.Stats()
	t.Logf("%s: simulator delivered %d (redelivered %d), acked %d; %d arrived; %.0f msg/s over %v; restart to first delivery: %v",
		cc.name, st.Delivered, st.Redelivered, st.Acked, tl.Arrived, float64(n)/elapsed.Seconds(), elapsed.Round(time.Second), restarts)
	if sp.spool {
		got := arrived(t, e.emu, queue)
		lostFromSpool := 0
		for id := range spooled {
			if got[id] == 0 {
				lostFromSpool++
			}
		}
		t.Logf("%s: %d distinct messages were in the spool at some kill; %d of them lost; loss before the spool: %d (%.3f%% of sent, %.1f a kill)",
			cc.name, len(spooled), lostFromSpool, tl.Lost, 100*float64(tl.Lost)/float64(n), float64(tl.Lost)/float64(kills))
		if lostFromSpool != 0 {
			t.Errorf("%d messages that were in the spool never arrived", lostFromSpool)
		}
	} else if !cc.zeroLoss {
		t.Logf("%s: loss window measured: %d lost over %d kills (%.1f a kill, %.3f%% of sent)",
			cc.name, tl.Lost, kills, float64(tl.Lost)/float64(kills), 100*float64(tl.Lost)/float64(n))
	}
	if cc.zeroLoss && tl.Lost != 0 {
		t.Fatalf("%d messages lost", tl.Lost)
	}
}

// spoolOptions are the options of the bridge's spool in dir, at the
// config's defaults, for a test that opens it after the bridge.
func spoolOptions(dir string) spool.Options {
	def := config.Default().Spool
	return spool.Options{Dir: dir, MaxBytes: int64(def.MaxBytes), CommitInterval: def.CommitInterval}
}

// spoolContents returns the bodies (message ids) in the spool at dir. The
// bridge must not be running.
func spoolContents(t *testing.T, dir string) []string {
	t.Helper()
	s, err := spool.Open(spoolOptions(dir))
	if err != nil {
		t.Fatalf("opening the spool after kill -9: %v", err)
	}
	defer s.Close()
	var ids []string
	if err := s.Replay(func(_ uint64, m bridge.Message) error {
		ids = append(ids, string(m.Body))
		return nil
	}); err != nil {
		t.Fatalf("reading the spool after kill -9: %v", err)
	}
	return ids
}

// waitQuiet waits until the simulator has nothing left to deliver and the
// emulator has stored nothing new for two seconds.
func waitQuiet(t *testing.T, e *env) {
	t.Helper()
	waitFor(t, "the simulator to deliver everything", 5*time.Minute, func() bool {
		st := e.sim.Stats()
		return st.Pending == 0 && st.Published > 0
	})
	last, since := e.emu.Stats().Sent, time.Now()
	waitFor(t, "MNS to stop receiving", 5*time.Minute, func() bool {
		if now := e.emu.Stats().Sent; now != last {
			last, since = now, time.Now()
		}
		return time.Since(since) > 2*time.Second
	})
}

// waitIdle waits until the bridge listening on addr has nothing in flight
// and nothing in its spool (its /status): every message the spool held at
// a kill has then been forwarded or dead-lettered. A quiet MNS alone does
// not tell: on a loaded machine a commit or a request may take longer
// than any quiet period, with messages still in the spool (CI saw 81).
func waitIdle(t *testing.T, c *child, addr string) {
	t.Helper()
	var first, last string
	c.waitFor(t, "the bridge to have nothing in flight and nothing in its spool (/status)", 5*time.Minute, func() bool {
		if first == "" {
			defer func() { first = last }()
		}
		resp, err := http.Get("http://" + addr + "/status")
		if err != nil {
			last = err.Error()
			return false
		}
		defer resp.Body.Close()
		var st app.Status
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("in flight %d, spool %+v", st.Pipeline.InFlight, st.Spool)
		return st.Pipeline.InFlight == 0 && (st.Spool == nil || st.Spool.Messages == 0)
	})
	t.Logf("bridge idle: %s (first seen: %s)", last, first)
}

// freeLoopbackAddr returns a loopback address with a port free now, for a
// child bridge's http.listen.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// timeToConsume measures from now until the simulator delivers one more
// message: the restarted bridge logged in and consumes.
func timeToConsume(t *testing.T, e *env, c *child) time.Duration {
	t.Helper()
	start := time.Now()
	base := e.sim.Stats().Delivered
	c.waitFor(t, "the restarted bridge to consume", 3*time.Minute, func() bool {
		st := e.sim.Stats()
		return st.Delivered > base || st.Pending == 0
	})
	return time.Since(start)
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
