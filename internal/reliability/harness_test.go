package reliability

import (
	"cmp"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/faultproxy"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestMain lets crash tests run the test binary as iot-mns-bridge itself (a
// child process they can kill -9).
func TestMain(m *testing.M) {
	testpeers.RunTests(m, app.MainOS)
}

// Known secrets: the security test scans for them, every other test checks
// the bridge's log for them too.
const (
	testAK     = "LTAIreliabilityAK"
	testSecret = "Rel-Secret-7f3a9c2e5b1d"
	testToken  = "STS.RelToken-4e8b2a6c9d0f"
	group      = "g1"
	queue      = "telemetry-pk1"
)

// env is one scenario's world: the simulator and the emulator, each behind
// a fault proxy, and a directory for the config, spool and dead letters.
type env struct {
	sim      *iotsim.Server
	emu      *mnsemu.Emulator
	emuAddr  string // the emulator's own host:port
	srcProxy *faultproxy.Proxy
	// amqpProxy is in front of the simulator's AMQP listener; runFault
	// makes it srcProxy for an AMQP scenario.
	amqpProxy *faultproxy.Proxy
	mnsProxy  *faultproxy.Proxy
	caFile    string
	dir       string
}

func newEnv(t *testing.T, emuCfg mnsemu.Config, simCfg iotsim.Config) *env {
	t.Helper()
	if emuCfg.AccessKeys == nil {
		emuCfg.AccessKeys = map[string]string{testAK: testSecret}
	}
	if emuCfg.Queues == nil {
		emuCfg.Queues = []string{queue, "unrouted"}
	}
	emu, emuAddr := testpeers.StartMNS(t, emuCfg)
	if simCfg.Secrets == nil {
		simCfg.Secrets = map[string]string{testAK: testSecret}
	}
	if simCfg.AMQPAddr == "" {
		simCfg.AMQPAddr = "127.0.0.1:0"
	}
	dir := t.TempDir()
	sim, ca := testpeers.StartIoT(t, simCfg, dir)
	e := &env{sim: sim, emu: emu, emuAddr: emuAddr, caFile: ca, dir: dir}
	e.srcProxy = startProxy(t, sim.Addr())
	e.amqpProxy = startProxy(t, sim.AMQPAddr())
	e.mnsProxy = startProxy(t, e.emuAddr)
	return e
}

func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// spec is the part of the bridge config a scenario varies. The zero value
// is STOMP ack auto through both proxies, fast reconnects and retries.
type spec struct {
	protocol     string              // stomp (default) | amqp
	amqpAddress  string              // source.amqp.address
	akID, akSec  string              // source AccessKey; default testAK/testSecret
	token        string              // source.credentials.security_token
	mnsCreds     *config.Credentials // default the source's
	ack          string              // auto (default) | client-individual
	heartbeat    time.Duration       // source.stomp.heartbeat, default 2s
	encodeBase64 bool
	spool        bool
	endpoint     string        // source.endpoint; default the source proxy
	caFile       string        // source.tls.ca_file; default the simulator's CA
	serverName   string        // default localhost
	mnsEndpoint  string        // default http://<mns proxy>
	mnsTimeout   time.Duration // mns.request_timeout, default 3s
	bodyEncoding string        // mns.body_encoding, default base64
	logLevel     string        // default info
	httpDefault  bool          // leave http.listen at its default (else httpListen)
	httpListen   string        // http.listen when not httpDefault; "": no listener
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// config writes the bridge config for sp and returns its path: the
// defaults (config.Default()) but for the endpoints through the proxies,
// the spec, short retries and reconnects, no HTTP listener, and no spool
// unless sp.spool (it would be on by default with ack auto).
func (e *env) config(t *testing.T, sp spec) string {
	t.Helper()
	c := configtest.New()
	src := &c.Source
	src.Protocol, src.Endpoint = or(sp.protocol, "stomp"), or(sp.endpoint, e.srcProxy.Addr())
	src.ClientID, src.ConsumerGroupID = "rel-bridge", group
	src.Credentials = config.Credentials{AccessKeyID: or(sp.akID, testAK), AccessKeySecret: config.Secret(or(sp.akSec, testSecret)),
		SecurityToken: config.Secret(sp.token)}
	src.AMQP.Address = or(sp.amqpAddress, "default")
	src.TLS = config.TLS{CAFile: or(sp.caFile, e.caFile), ServerName: or(sp.serverName, "localhost")}
	src.STOMP.Ack, src.STOMP.HeartBeat, src.STOMP.EncodeBase64 = or(sp.ack, "auto"), cmp.Or(sp.heartbeat, 2*time.Second), sp.encodeBase64
	if src.Protocol == "amqp" {
		src.STOMP = config.Default().Source.STOMP // check refuses a stomp block with amqp
	}
	src.DialTimeout, src.ReconnectMinBackoff, src.ReconnectMaxBackoff = 5*time.Second, 100*time.Millisecond, 2*time.Second
	if sp.mnsCreds != nil {
		c.MNS.Credentials = *sp.mnsCreds
	}
	c.MNS.Endpoint = or(sp.mnsEndpoint, "http://"+e.mnsProxy.Addr())
	c.MNS.RequestTimeout, c.MNS.BodyEncoding = cmp.Or(sp.mnsTimeout, 3*time.Second), or(sp.bodyEncoding, "base64")
	c.Routes = []config.Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	c.DefaultRoute.Queue = "unrouted"
	c.Delivery.Retry.InitialBackoff, c.Delivery.Retry.MaxBackoff = 50*time.Millisecond, time.Second
	c.Delivery.DeadLetter.File = filepath.Join(e.dir, "dead-letter.jsonl")
	c.Spool.Dir = ""
	if sp.spool {
		c.Spool.Dir = filepath.Join(e.dir, "spool")
	}
	if !sp.httpDefault {
		c.HTTP.Listen = sp.httpListen
	}
	c.Log.Level, c.Log.SummaryInterval = or(sp.logLevel, "info"), 0
	c.ShutdownTimeout = 10 * time.Second
	return configtest.Write(t, e.dir, "bridge.yaml", c)
}

// syncBuffer is the bridge log capture.
type syncBuffer = testpeers.SyncBuffer

// running is a bridge running in this process.
type running struct {
	b      *app.Bridge
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// runBridge loads the config at path and runs the bridge in process until
// stop or the end of the test. opts.Logger is replaced by one that records
// every line.
func runBridge(t *testing.T, path string, opts app.Options) *running {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	opts.Logger = app.NewLogger(cfg.Log, logs)
	b, err := app.New(cfg, opts)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{b: b, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- b.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the bridge and waits for Run to return (idempotent).
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(time.Minute):
		t.Fatalf("the bridge did not stop within a minute of cancel; log:\n%s", tail(r.logs.String(), 40))
		return nil
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor is waitfor.Until: it polls cond (every 1 ms, backing off to
// 10 ms) until it holds, detail adding to the failure; the deadline only
// fails the test, it is not a performance threshold, and time in which
// this process was frozen does not count against it.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool, detail ...func() string) {
	t.Helper()
	waitfor.Until(t, what, d, cond, detail...)
}

// publisher publishes numbered messages to the simulator at a steady rate
// until stopped, and remembers their ids.
type publisher struct {
	sim    *iotsim.Server
	prefix string
	pad    []byte // appended to each body after a '|'
	mu     sync.Mutex
	ids    []string
	stopc  chan struct{}
	done   chan struct{}
}

// publish publishes n messages at once; their bodies are their ids.
func (p *publisher) publish(n int) {
	for i := 0; i < n; i++ {
		p.mu.Lock()
		id := fmt.Sprintf("%s-%07d", p.prefix, len(p.ids))
		p.ids = append(p.ids, id)
		p.mu.Unlock()
		body := []byte(id)
		if p.pad != nil {
			body = append(append(body, '|'), p.pad...)
		}
		p.sim.Publish(group, iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", len(id)%5), MessageID: id, Body: body})
	}
}

// startPublisher publishes rate messages a second (in 10 ms ticks) until
// stopPublishing.
func startPublisher(sim *iotsim.Server, prefix string, rate int) *publisher {
	p := &publisher{sim: sim, prefix: prefix, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		per := max(rate/100, 1)
		for {
			select {
			case <-p.stopc:
				return
			case <-tick.C:
				p.publish(per)
			}
		}
	}()
	return p
}

// stop stops the publishing loop (idempotent) and returns the ids sent.
func (p *publisher) stop() []string {
	select {
	case <-p.stopc:
	default:
		close(p.stopc)
	}
	<-p.done
	return p.sent()
}

func (p *publisher) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...)
}

// arrived counts how often each body is stored in the emulator's queue
// (bodies are the message ids, base64-encoded by the bridge).
func arrived(t *testing.T, emu *mnsemu.Emulator, q string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for body, n := range testpeers.Bodies(t, emu, q) {
		if i := strings.IndexByte(body, '|'); i >= 0 {
			body = body[:i] // a padded body: the id is before the '|'
		}
		got[body] += n
	}
	return got
}

// tally is what a scenario reports.
type tally struct {
	Sent, Arrived, Lost, Duplicated int
	Recovery                        time.Duration // fault end to the first message forwarded after it
}

func count(sent []string, got map[string]int) tally {
	tl := tally{Sent: len(sent)}
	for _, id := range sent {
		switch n := got[id]; {
		case n == 0:
			tl.Lost++
		default:
			tl.Arrived++
			tl.Duplicated += n - 1
		}
	}
	return tl
}

func (tl tally) report(t *testing.T, scenario string) {
	t.Helper()
	t.Logf("%s: sent %d, arrived %d, lost %d, duplicated %d, time to recover %v",
		scenario, tl.Sent, tl.Arrived, tl.Lost, tl.Duplicated, tl.Recovery.Round(time.Millisecond))
}

// waitAllArrived waits until every sent id is at the emulator and returns
// the tally. It fails the test when nothing new reached the emulator for
// stall (a hang or a loss: the bridge stopped forwarding), or when
// messages still trickle in after 3*stall in all (bounded in time). A
// fixed total limit failed CI run 40 on a starved box (load ~56) while
// messages were still arriving: the limit must tell a stall from slowness.
// Time in which this process was frozen (waitfor.Pause) is no stall.
//
// The full count (every stored body decoded, up to 100,000 of them) runs
// only when the emulator stored something new and holds at least as many
// messages as were sent: polled every 50 ms on a starved box, it took CPU
// from the bridge the test waits for.
func waitAllArrived(t *testing.T, emu *mnsemu.Emulator, sent []string, stall time.Duration) tally {
	t.Helper()
	start := time.Now()
	stored := func() int64 { st := emu.Stats(); return st.Sent + st.Published }
	last, lastAt, counted := stored(), start, int64(-1)
	var tl tally
	for {
		now := stored()
		if now != last {
			last, lastAt = now, time.Now()
		}
		if now != counted && now >= int64(len(sent)) {
			counted = now
			if tl = count(sent, arrived(t, emu, queue)); tl.Lost == 0 {
				return tl
			}
		}
		why := ""
		switch {
		case time.Since(lastAt) > stall:
			why = fmt.Sprintf("nothing new at MNS for %v", stall)
		case time.Since(start) > 3*stall:
			why = fmt.Sprintf("still arriving after %v (the last one %v ago)", 3*stall, time.Since(lastAt).Round(time.Millisecond))
		}
		if why != "" {
			got := arrived(t, emu, queue)
			tl = count(sent, got)
			tl.report(t, "at the deadline")
			var missing []string
			for _, id := range sent {
				if got[id] == 0 && len(missing) < 20 {
					missing = append(missing, id)
				}
			}
			t.Fatalf("%d of %d messages not at MNS: %s; %d messages stored in %v; the first missing ids: %v",
				tl.Lost, tl.Sent, why, last, time.Since(start).Round(time.Millisecond), missing)
		}
		// A freeze of this process (see waitfor.Until) is no stall of the
		// bridge's.
		lastAt = lastAt.Add(waitfor.Pause(50 * time.Millisecond))
	}
}

// timeToProgress measures from now until the emulator stores one more
// message than it has now.
func timeToProgress(t *testing.T, emu *mnsemu.Emulator, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	base := emu.Stats().Sent
	waitFor(t, "a message forwarded after the fault", d, func() bool { return emu.Stats().Sent > base })
	return time.Since(start)
}

// scale returns n, or n/div under -short.
func scale(n, div int) int {
	if testing.Short() {
		return max(n/div, 1)
	}
	return n
}

// scaleDur returns d, or short under -short.
func scaleDur(d, short time.Duration) time.Duration {
	if testing.Short() {
		return short
	}
	return d
}

// noSecrets fails the test when s holds a known secret.
func noSecrets(t *testing.T, where, s string) {
	t.Helper()
	for _, secret := range []string{testSecret, testToken} {
		if strings.Contains(s, secret) {
			t.Errorf("%s contains the secret %.4s…", where, secret)
		}
	}
}

// child is the bridge as a child process (for kill -9).
type child struct{ *testpeers.Child }

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	return &child{testpeers.StartChild(t, testpeers.AsMainEnv+"=1", args...)}
}

// waitFor is the package's waitFor that shows the child's log on failure.
func (c *child) waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitFor(t, what, d, cond, func() string { return "bridge log:\n" + tail(c.Out.String(), 30) })
}

// term sends SIGTERM and returns the exit code.

// loadConfig loads and validates the config at path.
func loadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}
