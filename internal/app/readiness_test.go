package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/faultproxy"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// runInProcess runs the bridge for cfg with its HTTP endpoints on a free
// port and its log captured; it returns the base URL, the log and a channel
// closed at READY=1 (OnReady).
func runInProcess(t *testing.T, path string) (string, *testpeers.SyncBuffer, chan struct{}) {
	t.Helper()
	logs := &testpeers.SyncBuffer{}
	ready := make(chan struct{})
	b, base := runBridgeHTTP(t, mustLoad(t, path), Options{Logger: slog.New(slog.NewTextHandler(logs, nil)), OnReady: func() { close(ready) }})
	b.stopCleanly(t)
	return base, logs, ready
}

// TestReadinessSendOnlyUser is issue 12 item 4: a RAM user that may only
// send (Get*Attributes refused with AccessDenied) is ready and forwards;
// the destination is reported once as not verifiable; an MNS outage shows
// in /readyz with the first failed send, not at the next periodic check,
// and the recovery with the first success.
func TestReadinessSendOnlyUser(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, SendOnly: true}, iotsim.Config{})
	base, logs, ready := runInProcess(t, p.writeConfig(t, p.config()))
	waitReady(t, ready)
	waitFor(t, "/readyz 200 for a send-only user", time.Minute, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 })
	waitFor(t, "three destination checks", time.Minute, func() bool { return p.emu.Stats().Errors["AccessDenied"] >= 3 })
	if n := strings.Count(logs.String(), "MNS destination not verifiable"); n != 1 {
		t.Errorf("'not verifiable' logged %d times over 3 checks, want once:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "destination check failed") {
		t.Errorf("AccessDenied on Get*Attributes reported as a failure:\n%s", logs)
	}

	p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "r-1", Body: []byte(`{}`)})
	waitFor(t, "/readyz 503 naming the failing sends", time.Minute, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "MNS sends to queue telemetry-pk1 failing")
	})
	p.emu.SetFaults(mnsemu.Faults{})
	waitFor(t, "/readyz 200 after MNS is back", time.Minute, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == 200 })
	waitFor(t, "the message at MNS", time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) == 1 })
}

// TestSendAccessDeniedIsHeldAndNamed: a RAM user that may look a queue up
// but not send to it: the running bridge logs which queue and which
// permission (the hint said "send/publish permission on this queue"),
// holds the message (retries; nothing dead-lettered) and /readyz names the
// failing sends.
func TestSendAccessDeniedIsHeldAndNamed(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Deny: []string{"BatchSendMessage:telemetry-pk1"}}, iotsim.Config{})
	c := p.config()
	base, logs, ready := runInProcess(t, p.writeConfig(t, c))
	waitReady(t, ready)
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "d-1", Body: []byte(`{}`)})
	waitFor(t, "two refused sends", time.Minute, func() bool { return p.emu.Stats().Errors["AccessDenied"] >= 2 })
	waitFor(t, "/readyz 503 naming the queue", time.Minute, func() bool {
		code, body := httpGet(t, base+"/readyz")
		return code == 503 && strings.Contains(body, "queue telemetry-pk1")
	})
	if want := "grant the AccessKey's RAM user mns:SendMessage and mns:BatchSendMessage on queue telemetry-pk1"; !strings.Contains(logs.String(), want) {
		t.Errorf("the log does not say %q:\n%s", want, logs)
	}
	// The dead-letter file is relative to the config's directory.
	if data, err := os.ReadFile(filepath.Join(p.dir, c.Delivery.DeadLetter.File)); err == nil && len(data) > 0 {
		t.Errorf("a message refused for a permission was dead-lettered:\n%s", data)
	}
}

// TestReadinessMissingQueue: a missing queue keeps /readyz at 503 with the
// reason, but READY=1 is sent once the source is connected (systemd must
// not kill a bridge that forwards the other routes), and the failing check
// is logged once, not at every check.
func TestReadinessMissingQueue(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1"}}, iotsim.Config{})
	c := p.config()
	c.DefaultRoute.Queue = "not-there"
	base, logs, ready := runInProcess(t, p.writeConfig(t, c))
	waitReady(t, ready) // READY=1 although a destination is missing
	waitFor(t, "three failed checks", time.Minute, func() bool { return p.emu.Stats().Errors["QueueNotExist"] >= 3 })
	code, body := httpGet(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "MNS queue not-there (default_route.queue): ") || !strings.Contains(body, "QueueNotExist") {
		t.Errorf("/readyz = %d %q, want 503 naming the missing queue and its config key", code, body)
	}
	// /status says so by count, for the status table's mns row.
	var st Status
	if code, body := httpGet(t, base+"/status"); code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.MNSLookupsFailing != 1 {
		t.Errorf("/status = %d %q, want mns_lookups_failing 1", code, body)
	}
	if n := strings.Count(logs.String(), "MNS destination check failed"); n != 1 {
		t.Errorf("the failing check was logged %d times over 3 checks, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "MNS queue not-there (default_route.queue): ") {
		t.Errorf("the failing check's log line does not name the config key (default_route.queue):\n%s", logs)
	}
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "m-1", Body: []byte(`{}`)})
	waitFor(t, "the other route forwarding", time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) == 1 })
}

// TestReadinessMNSUnreachableLoggedOnce: while MNS gives no reply at all
// (every connection dropped: an outage, a firewall), the failing check is
// logged once, not at every check. Each lookup's error names its own user
// request id, which must not count as a change of state (it made the warning
// repeat every 2 s for as long as MNS was unreachable).
func TestReadinessMNSUnreachableLoggedOnce(t *testing.T) {
	p := startPeers(t, mnsemu.Config{}, iotsim.Config{})
	var lookups atomic.Int64
	dead := testpeers.Serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		lookups.Add(1)
		panic(http.ErrAbortHandler) // drop the connection without an answer
	}))
	c := p.config()
	c.MNS.Endpoint = "http://" + dead
	base, logs, ready := runInProcess(t, p.writeConfig(t, c))
	waitReady(t, ready) // the source is up; MNS is not
	waitFor(t, "three failed checks", time.Minute, func() bool { return lookups.Load() >= 3 })
	code, body := httpGet(t, base+"/readyz")
	if code != 503 || !strings.Contains(body, "MNS queue unrouted") || !strings.Contains(body, "no reply from MNS") {
		t.Errorf("/readyz = %d %q, want 503 naming the unreachable MNS", code, body)
	}
	if n := strings.Count(logs.String(), "MNS destination check failed"); n != 1 {
		t.Errorf("the failing check was logged %d times over %d checks, want once:\n%s", n, lookups.Load(), logs)
	}
}

// TestReadyWhileThePlatformIsUnreachable: a bridge started while the
// platform refuses every connection (an uplink that comes up late, an
// outage) sends READY=1 once it has started, without waiting for the
// platform (READY=1 waited for the first connection, so systemd's start
// timeout killed and restarted it every ~125 s), and its status line
// (systemd STATUS=) says that it waits for the platform, since when and
// why, once however many attempts fail alike; /readyz keeps saying 503
// meanwhile. Once the platform answers, the line says it is connected and
// messages flow, from the same Run.
func TestReadyWhileThePlatformIsUnreachable(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	proxy, err := faultproxy.Start(p.sim.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	proxy.SetRefuse(true)
	c := p.config()
	c.Source.Endpoint = proxy.Addr()
	c.Source.ReconnectMinBackoff, c.Source.ReconnectMaxBackoff = 100*time.Millisecond, 200*time.Millisecond
	var mu sync.Mutex
	var lines []string
	statusLines := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(lines) }
	last := func() string {
		if l := statusLines(); len(l) > 0 {
			return l[len(l)-1]
		}
		return ""
	}
	ready := make(chan struct{})
	b, base := runBridgeHTTP(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler),
		OnReady:  func() { close(ready) },
		OnStatus: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
	b.stopCleanly(t)
	waitReady(t, ready) // while every connection is refused
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "source connection e2e-bridge is down") {
		t.Errorf("/readyz = %d %q while the platform refuses, want 503 naming the connection", code, body)
	}
	waitFor(t, "three refused attempts and the line saying why", time.Minute, func() bool {
		return proxy.Stats().Refused >= 3 && strings.Contains(last(), "e2e-bridge: stomp")
	})
	if l := last(); !strings.HasPrefix(l, "waiting for the platform since ") || !strings.Contains(l, "(connected 0/1)") {
		t.Errorf("status line %q, want it to say that it waits for the platform, since when, connected 0/1", l)
	}
	// The attempts fail alike but for their local ports: the line is sent
	// again only when the failure changes (the proxy's reset shows as a
	// read or a write error), not per attempt.
	waitFor(t, "two more refused attempts", time.Minute, func() bool { return proxy.Stats().Refused >= 5 })
	got := statusLines()
	for i := 1; i < len(got); i++ {
		if source.FailureShape(got[i]) == source.FailureShape(got[i-1]) {
			t.Errorf("status line %q sent again as %q: the state did not change (%d attempts)", got[i-1], got[i], proxy.Stats().Refused)
		}
	}

	proxy.SetRefuse(false)
	waitFor(t, "the status line to say connected", time.Minute, func() bool { return last() == "connected 1/1; forwarding" })
	waitReadyz(t, base)
	p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev1/user/data", MessageID: "late-1", Body: []byte(`{}`)})
	waitFor(t, "the message at MNS", time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) == 1 })
}

// TestStatusLine: the status line's forms, and its shape (what decides
// whether it is sent again) ignoring the since times and the numbers in an
// error, but not the connection count.
func TestStatusLine(t *testing.T) {
	at := time.Date(2026, 12, 2, 2, 10, 5, 0, time.UTC)
	down := bridge.ConnState{Name: "gw-0", LastError: "dial tcp 10.0.0.1:61614: connect: connection refused"}
	up := bridge.ConnState{Name: "gw-1", Connected: true}
	for _, tc := range []struct {
		v    statusView
		want string
	}{
		{statusView{conns: []bridge.ConnState{up, up}}, "connected 2/2; forwarding"},
		{statusView{conns: []bridge.ConnState{{Name: "gw-0"}}, platformSince: at},
			"waiting for the platform since 2026-12-02T02:10:05Z (connected 0/1): gw-0: connecting"},
		{statusView{conns: []bridge.ConnState{down, up}, platformSince: at},
			"waiting for the platform since 2026-12-02T02:10:05Z (connected 1/2): gw-0: dial tcp 10.0.0.1:61614: connect: connection refused"},
		{statusView{conns: []bridge.ConnState{up}, mnsFailing: 2, mnsSince: at, lookups: "queue a: no reply"},
			"connected 1/1; MNS sends failing since 2026-12-02T02:10:05Z (2 destination(s); see /readyz), messages held; MNS lookup failing: queue a: no reply"},
		{statusView{conns: []bridge.ConnState{up}, deadLetter: true, spoolFull: true, stuck: true},
			"connected 1/1; dead letters cannot be written (see /readyz); spool full (source paused); pipeline STUCK (see /healthz): not feeding the watchdog"},
		{statusView{conns: []bridge.ConnState{up}, spoolWritesFailing: "spool: commit to /var/lib/b/spool.db: no space left on device"},
			"connected 1/1; spool writes FAILING (source paused): spool: commit to /var/lib/b/spool.db: no space left on device"},
		{statusView{conns: []bridge.ConnState{up}, reloadRefused: "bridge.yaml:3: routes[0].queue: bad"},
			"connected 1/1; forwarding; config reload refused, running config kept: bridge.yaml:3: routes[0].queue: bad"},
	} {
		if got := tc.v.line(false); got != tc.want {
			t.Errorf("line =\n%q, want\n%q", got, tc.want)
		}
	}
	again := statusView{conns: []bridge.ConnState{{Name: "gw-0", LastError: "dial tcp 10.0.0.1:61615: connect: connection refused"}, up},
		platformSince: at.Add(time.Hour)}
	first := statusView{conns: []bridge.ConnState{down, up}, platformSince: at}
	if again.line(true) != first.line(true) {
		t.Errorf("a failure that differs in numbers only is a new state: %q, %q", first.line(true), again.line(true))
	}
	if (statusView{conns: []bridge.ConnState{up, up}}).line(true) == first.line(true) {
		t.Error("a connection coming up is no new state")
	}
	if long := (statusView{conns: []bridge.ConnState{{Name: "gw-0", LastError: strings.Repeat("x", 500)}}}).line(false); len(long) > 300 {
		t.Errorf("a long error makes a line of %d bytes, want it cut", len(long))
	}
}

// TestStoppingLine: the stop's status line (STOPPING=1) says how many
// messages the drain waits for and, while MNS fails, when it ends and where
// they go, by source and spool.
func TestStoppingLine(t *testing.T) {
	const head = "stopping: intake stopped, draining 7 message(s) held until MNS takes them, up to shutdown_timeout 20s"
	for _, tc := range []struct {
		protocol, ack string
		spooled       bool
		held          int64
		failing       int
		want          string
	}{
		{"stomp", "auto", true, 0, 1, "stopping: intake stopped, no message held; closing"},
		{"stomp", "auto", true, 7, 0, head},
		{"stomp", "auto", true, 7, 2, head + "; MNS sends failing (2 destination(s)): the drain ends once MNS failed twice in a row or left a request unanswered, and they stay in the spool for the next start"},
		{"amqp", "auto", false, 7, 1, head + "; MNS sends failing (1 destination(s)): the drain ends once MNS failed twice in a row or left a request unanswered, and the platform redelivers them"},
		{"stomp", "client-individual", false, 7, 1, head + "; MNS sends failing (1 destination(s)): the drain ends once MNS failed twice in a row or left a request unanswered, and the platform redelivers them"},
		{"stomp", "auto", false, 7, 1, head + "; MNS sends failing (1 destination(s)): what MNS has not taken by then goes to the dead-letter file (stomp ack auto without the spool)"},
	} {
		c := config.Default()
		c.Source.Protocol, c.Source.STOMP.Ack, c.ShutdownTimeout = tc.protocol, tc.ack, 20*time.Second
		b := &Bridge{cfg: &c}
		if got := b.stoppingLine(tc.held, tc.failing, tc.spooled); got != tc.want {
			t.Errorf("%s ack %s spool %v, %d held, %d failing:\n%q, want\n%q", tc.protocol, tc.ack, tc.spooled, tc.held, tc.failing, got, tc.want)
		}
	}
}

// waitReady waits for READY=1 (a generous, failure-only deadline).
func waitReady(t *testing.T, ready <-chan struct{}) {
	t.Helper()
	select {
	case <-ready:
	case <-time.After(time.Minute):
		t.Fatal("no READY=1 within a minute of the start")
	}
}

// TestCheckConnectSendOnlyUser: check -connect with a RAM user that may
// only send reports the destinations as not verifiable, not as failures.
func TestCheckConnectSendOnlyUser(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, SendOnly: true}, iotsim.Config{})
	code, out, errOut := runMain(t, context.Background(), "check", "-config", p.writeConfig(t, p.config()), "-connect", "-timeout", "20s")
	if code != ExitOK || !strings.Contains(out, "warn MNS queue unrouted: not verifiable") || strings.Contains(out, "FAIL") {
		t.Errorf("check -connect as a send-only user: exit %d\n%s%s", code, out, errOut)
	}
	if want := "whether the queue exists is not verified either; sending not tried: the first message sent tells whether " +
		"the RAM user has mns:SendMessage and mns:BatchSendMessage (-probe sends one marked test message)"; !strings.Contains(out, want) {
		t.Errorf("check -connect as a send-only user does not say what it left unverified (%q):\n%s", want, out)
	}
}

// TestCheckConnectSaysWhatItVerified: check -connect's ok line says that
// it looked the queue up and did not try sending (the RAM user may lack
// mns:SendMessage): it said "ok   MNS queue unrouted", nothing more. It puts
// nothing into the queue.
func TestCheckConnectSaysWhatItVerified(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{})
	code, out, errOut := runMain(t, context.Background(), "check", "-config", p.writeConfig(t, p.config()), "-connect", "-timeout", "20s")
	want := "ok   MNS queue unrouted: exists (looked up with mns:GetQueueAttributes); sending not tried: the first message sent " +
		"tells whether the RAM user has mns:SendMessage and mns:BatchSendMessage (-probe sends one marked test message)\n"
	if code != ExitOK || !strings.Contains(out, want) {
		t.Errorf("check -connect: exit %d, want the line %q\n%s%s", code, want, out, errOut)
	}
	if n := len(p.emu.Messages("unrouted")); n != 0 {
		t.Errorf("check -connect without -probe left %d message(s) in the queue", n)
	}
}

// TestCheckConnectProbe: check -connect -probe sends one marked message to
// each fixed destination as the bridge sends (BatchSendMessage), so that a
// RAM user without the send permission fails the check, naming the queue
// and the permission, and one that may only send passes.
func TestCheckConnectProbe(t *testing.T) {
	for _, c := range []struct {
		name     string
		emu      mnsemu.Config
		code     int
		want     string
		messages int
	}{
		{"send only", mnsemu.Config{SendOnly: true}, ExitOK,
			"ok   MNS queue unrouted: not verifiable: the RAM user may not read its attributes (mns:GetQueueAttributes); sending does not need it, " +
				"but whether the queue exists is not verified either; sent one probe message (mns:SendMessage and mns:BatchSendMessage granted)", 1},
		{"lookup only", mnsemu.Config{Deny: []string{"BatchSendMessage"}}, ExitFailure,
			"FAIL MNS queue unrouted (default_route.queue): exists (looked up with mns:GetQueueAttributes); probe message refused: mns: BatchSendMessage queue unrouted: " +
				"AccessDenied (HTTP 403)", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.emu.Queues = []string{"telemetry-pk1", "unrouted"}
			p := startPeers(t, c.emu, iotsim.Config{})
			code, out, errOut := runMain(t, context.Background(), "check", "-config", p.writeConfig(t, p.config()), "-connect", "-probe", "-timeout", "20s")
			if code != c.code || !strings.Contains(out, c.want) {
				t.Errorf("exit %d (want %d), want %q\n%s%s", code, c.code, c.want, out, errOut)
			}
			if c.code != ExitOK && !strings.Contains(out, "grant the AccessKey's RAM user mns:SendMessage and mns:BatchSendMessage on queue unrouted") {
				t.Errorf("the failure does not say which permission to grant:\n%s", out)
			}
			msgs := p.emu.Messages("unrouted")
			if len(msgs) != c.messages {
				t.Fatalf("%d message(s) in the queue, want %d", len(msgs), c.messages)
			}
			for _, m := range msgs {
				if body, _ := m.DecodedBody(); !strings.HasPrefix(string(body), probeMark+" a test message from e2e-bridge-check at ") {
					t.Errorf("probe message body %q", body)
				}
			}
		})
	}
	code, _, errOut := runMain(t, context.Background(), "check", "-config", "x.yaml", "-probe")
	if code != ExitUsage || !strings.Contains(errOut, "-probe goes with -connect") {
		t.Errorf("-probe without -connect: exit %d\n%s", code, errOut)
	}
}

// wedgingSink passes sends on to the MNS sink until wedge is called; from
// then on every send blocks, ignoring its context (a wedged goroutine, a
// sink that ignores its time-out), until release.
type wedgingSink struct {
	*mns.Sink
	wedged  atomic.Bool
	entered chan struct{} // a token per send that blocked
	release chan struct{}
	once    sync.Once
}

func (s *wedgingSink) Send(ctx context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	if s.wedged.Load() {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.release
	}
	return s.Sink.Send(ctx, dest, msgs)
}

func (s *wedgingSink) unwedge() { s.once.Do(func() { close(s.release) }) }

// TestHealthzTellsAnMNSOutageFromAStuckBridge: /healthz (and the systemd
// watchdog, which follows the same rule) stays 200 while MNS answers 503
// for longer than the stall limit, with the messages held and none
// forwarded, since a restart cannot fix MNS: /readyz and `status` say MNS
// fails; every message arrives after the outage. A bridge whose sends never
// return (they ignore their time-out) while it holds messages is stuck:
// /healthz turns 503 after the limit, saying what and since when. Before,
// "held and none forwarded for the limit" failed /healthz in an outage.
func TestHealthzTellsAnMNSOutageFromAStuckBridge(t *testing.T) {
	// No ACK timeout within the test: the held messages are not redelivered
	// (and joined), so the counts below are exact however slow the run.
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}}, iotsim.Config{AckTimeout: time.Hour})
	c := p.config()
	c.Envelope = "json"
	// A short stall limit: 10 s, above twice max_backoff + request_timeout.
	c.MNS.RequestTimeout = time.Second
	c.Delivery.Retry.MaxBackoff = time.Second
	sink := &wedgingSink{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b, base := runBridgeHTTP(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler),
		stallAfter: 10 * time.Second, wrapSink: func(s *mns.Sink) bridge.Sink { sink.Sink = s; return sink }})
	t.Cleanup(sink.unwedge) // before the bridge's own cleanup stops it
	limit := b.stallLimit()
	if limit != 10*time.Second {
		t.Fatalf("stall limit %s, want the test's 10s", limit)
	}
	waitReadyz(t, base)
	p.publishSeq("before", 1)
	waitFor(t, "the first message at MNS", time.Minute, func() bool { return b.pipeline.Stats().Forwarded == 1 })

	// MNS fails every request for longer than the limit.
	p.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	p.publishSeq("outage", 20)
	waitFor(t, "20 messages held and none forwarded for longer than the stall limit", time.Minute, func() bool {
		st := b.pipeline.Stats()
		return st.InFlight == 20 && time.Since(st.LastProgress) > limit
	})
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz during an MNS outage longer than the stall limit: %d %q, want 200 ok", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "MNS sends to queue telemetry-pk1 failing") {
		t.Errorf("/readyz during the outage: %d %q, want 503 saying MNS sends fail", code, body)
	}
	_, out, _ := runMain(t, context.Background(), "status", "-url", base, "-interval", "0")
	if !strings.Contains(out, "NOT READY") || strings.Contains(out, "UNHEALTHY") || !strings.Contains(out, "503") {
		t.Errorf("status during the outage: want NOT READY, not UNHEALTHY, MNS's 503 shown:\n%s", out)
	}
	// The image's HEALTHCHECK command says the same.
	if code, out, errOut := runMain(t, context.Background(), "healthcheck", "-url", base+"/healthz"); code != ExitOK || strings.TrimSpace(out) != "ok" {
		t.Errorf("healthcheck during the outage: exit %d, %q, %q; want 0 and ok", code, out, errOut)
	}

	// MNS back: every message arrives.
	p.emu.SetFaults(mnsemu.Faults{})
	waitFor(t, "the held messages at MNS", time.Minute, func() bool { return b.pipeline.Stats().Forwarded == 21 })
	if n, _ := countIDs(t, p.emu, "telemetry-pk1", "outage", 20); n != 20 {
		t.Errorf("%d of the 20 messages held during the outage arrived", n)
	}

	// Every send hangs, ignoring its time-out: stuck after the limit.
	sink.wedged.Store(true)
	p.publishSeq("wedged", 5)
	select {
	case <-sink.entered:
	case <-time.After(time.Minute):
		t.Fatal("no send reached the wedged sink within a minute")
	}
	var body string
	waitFor(t, "/healthz 503 for the wedged sends", time.Minute, func() bool {
		var code int
		code, body = httpGet(t, base+"/healthz")
		return code == 503
	})
	for _, want := range []string{"unhealthy: pipeline stuck since ", "5 messages held"} {
		if !strings.Contains(body, want) {
			t.Errorf("/healthz = %q, want it to say %q", body, want)
		}
	}
	// The 5 messages go in one request or, when they reach the lane apart,
	// in two: either way the wedged requests are named.
	if !strings.Contains(body, "1 request to MNS is in progress and has not returned") &&
		!strings.Contains(body, "2 requests to MNS are in progress and none has returned") {
		t.Errorf("/healthz = %q, want it to say the wedged request(s) to MNS are in progress and have not returned", body)
	}
	if _, out, _ := runMain(t, context.Background(), "status", "-url", base, "-interval", "0"); !strings.Contains(out, "UNHEALTHY: pipeline stuck since ") {
		t.Errorf("status with wedged sends: want UNHEALTHY naming the stuck pipeline:\n%s", out)
	}
	// The image's HEALTHCHECK command fails (the container turns unhealthy
	// after its retries), naming what is stuck.
	if code, _, errOut := runMain(t, context.Background(), "healthcheck", "-url", base+"/healthz"); code != ExitFailure || !strings.Contains(errOut, "unhealthy: 503 Service Unavailable: unhealthy: pipeline stuck since ") {
		t.Errorf("healthcheck with wedged sends: exit %d, %q; want 1 naming the stuck pipeline", code, errOut)
	}
	sink.wedged.Store(false)
	sink.unwedge()
	waitFor(t, "the wedged messages at MNS", time.Minute, func() bool { return b.pipeline.Stats().Forwarded == 26 })
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz once the sends returned: %d %q, want 200", code, body)
	}
}

// TestStallLimitCoversSlowSettings: the stall limit is 2 minutes, or twice
// the quietest a working pipeline gets (a retry's wait up to
// delivery.retry.max_backoff, then a request up to mns.request_timeout)
// when that is longer, after a reload too: slow settings are not stuck.
func TestStallLimitCoversSlowSettings(t *testing.T) {
	cfg := config.Default()
	b := &Bridge{cfg: &cfg}
	b.live.Store(&cfg)
	if got := b.stallLimit(); got != 2*time.Minute {
		t.Errorf("stall limit with the defaults: %s, want 2m0s", got)
	}
	slow := cfg
	slow.Delivery.Retry.MaxBackoff = 5 * time.Minute
	slow.MNS.RequestTimeout = 30 * time.Second
	b.cfg = &slow
	b.live.Store(&slow)
	if got := b.stallLimit(); got != 11*time.Minute {
		t.Errorf("stall limit with max_backoff 5m and request_timeout 30s: %s, want 11m0s", got)
	}
}

// TestDeadLetterQueueAnswersAreLife: the bridge hands each answer of a
// dead-letter queue write to the pipeline's liveness (Pipeline.Answered),
// not only the end of the write; bridge/deadletter's
// TestLongDeadLetterWriteIsNotStuck shows why, request by request. Without
// the wiring, a write leaves LastAnswer where it was.
func TestDeadLetterQueueAnswersAreLife(t *testing.T) {
	_, addr := testpeers.StartMNS(t, mnsemu.Config{Queues: []string{"unrouted", "dlq"}, AccessKeys: map[string]string{testAK: testSecret}})
	c := configtest.New()
	c.Source.Endpoint, c.Source.ClientID, c.Source.ConsumerGroupID = "127.0.0.1:61614", "dl-life", "g1"
	c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
	c.MNS.Endpoint = "http://" + addr
	c.DefaultRoute.Queue = "unrouted"
	c.Delivery.DeadLetter = config.DeadLetter{Queue: "dlq"}
	c.HTTP.Listen = ""
	b, err := New(mustLoad(t, configtest.Write(t, t.TempDir(), "bridge.yaml", c)), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	before := b.pipeline.Stats().LastAnswer
	m := bridge.Message{Topic: "/pk/dev/user/x", MessageID: "m1", Body: []byte("b")}
	if err := b.dead.DeadLetter(context.Background(), []bridge.DeadLetter{{Message: &m, Reason: "test", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if after := b.pipeline.Stats().LastAnswer; !after.After(before) {
		t.Errorf("LastAnswer %s after a dead-letter queue write, want later than %s (the write's answer)", after, before)
	}
}

// TestDestinationCheckStateOfExpiredCredentials: while no valid credentials
// can be had (a credentials file that expired), the destination checks'
// state stays the same although the error's text counts down to the next
// refresh ("next attempt in 900ms", "... 1.3s"): the failing check is logged
// once (it was logged at every check, every 2 s; walked).
func TestDestinationCheckStateOfExpiredCredentials(t *testing.T) {
	dir := t.TempDir()
	exp := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	file := testfile.Write(t, dir, "sts.json", `{"AccessKeyId": "STS.x", "AccessKeySecret": "s", "SecurityToken": "t", "Expiration": "`+exp+`"}`)
	c := configtest.New()
	c.Source.Endpoint, c.Source.ClientID = "127.0.0.1:1", "c1"
	c.Source.Credentials = config.Credentials{CredentialsFile: file}
	c.MNS.Endpoint = "http://127.0.0.1:1"
	c.Routes = []config.Route{{Match: "/#", Queue: "q"}}
	b, err := newUnrun(t, mustLoad(t, configtest.Write(t, dir, "b.yaml", c)))
	if err != nil {
		t.Fatal(err)
	}
	failed, _, first := b.checkDestinations(context.Background())
	if len(failed) != 1 || !strings.Contains(failed[0], "next attempt in") {
		t.Fatalf("failed = %q, want the queue's check failing for the credentials", failed)
	}
	// Check again until the text has changed (the countdown moved).
	waitFor(t, "a check whose text differs", time.Minute, func() bool {
		f, _, state := b.checkDestinations(context.Background())
		if len(f) == 1 && f[0] != failed[0] {
			if state != first {
				t.Errorf("state %q, then %q: the failing check would be logged again", first, state)
			}
			return true
		}
		return false
	})
}

// TestDestinationCheckOutOfTimeSaysSo: the destination check bounds all its
// lookups together (checkTimeout, 10 s, as mns.request_timeout's default):
// against an MNS that does not answer, the first lookup uses it up and the
// others, and every one of the next check, failed with a bare "context
// deadline exceeded", which named no time limit and, being another text than
// the first check's "no reply", was logged as a new failure 10 s after the
// first (walked: MNS frozen). Each such lookup now says it had no reply
// within the check's time limit, and its state is "no reply", as a lookup's
// own timeout.
func TestDestinationCheckOutOfTimeSaysSo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { // accepts and never answers: MNS frozen
		defer close(done)
		var conns []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	dir := t.TempDir()
	c := configtest.New()
	c.Source.Endpoint, c.Source.ClientID = "127.0.0.1:1", "c1"
	c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: testSecret}
	c.MNS.Endpoint = "http://" + ln.Addr().String()
	c.Routes = []config.Route{{Match: "/a/#", Queue: "q1"}, {Match: "/b/#", Queue: "q2"}}
	b, err := newUnrun(t, mustLoad(t, configtest.Write(t, dir, "b.yaml", c)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	failed, _, state := b.checkDestinations(ctx)
	if len(failed) != 2 {
		t.Fatalf("failed = %q, want both queues", failed)
	}
	for i, f := range failed {
		if !strings.HasPrefix(f, fmt.Sprintf("MNS queue q%d (routes[%d].queue): no reply within the destination check's time limit (10s for all its lookups): MNS or the network is slow", i+1, i)) {
			t.Errorf("failed: %q, want it to say that no reply came within the check's time limit", f)
		}
	}
	if want := "queue q1: no reply; queue q2: no reply"; state != want {
		t.Errorf("state %q, want %q (a lookup's own timeout's)", state, want)
	}
}
