package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestStatusCommandAgainstARunningBridge runs a bridge with a spool, makes
// MNS refuse 300 messages (missing queue: dead-lettered) and accept 500,
// and reads it with `iot-mns-bridge status` as table and as JSON; then the
// source goes down and status says so.
func TestStatusCommandAgainstARunningBridge(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Spool.Dir = t.TempDir()
	b, base := p.runReady(t, c)

	p.publishPlain(300)
	waitFor(t, "300 dead letters", 30*time.Second, func() bool { return b.Status().Pipeline.DeadLettered >= 300 })
	p.emu.CreateQueue("telemetry-pk1")
	p.publishPlain(500)
	waitFor(t, "500 forwarded", 30*time.Second, func() bool {
		st := b.Status()
		return st.Pipeline.Forwarded >= 500 && st.Pipeline.InFlight == 0
	})
	// The spool deletes what was forwarded in its next group commit, a
	// moment after the settle.
	waitFor(t, "the spool to be empty", 30*time.Second, func() bool {
		st := b.Status()
		return st.Spool != nil && st.Spool.Messages == 0
	})

	code, out, errOut := runMain(t, context.Background(), "status", "-url", base, "-interval", "10ms")
	if code != ExitOK {
		t.Fatalf("status exited %d: %s", code, errOut)
	}
	t.Logf("status:\n%s", out)
	for _, re := range []string{
		`(?m)^iot-mns-bridge .*, up [0-9].*, ready$`,
		`(?m)^PART +STATE +RATE/s +TOTAL +IN FLIGHT +LAST ERROR$`,
		`(?m)^source e2e-bridge +connected, 0 reconnects +[0-9.]+ +800 +-$`,
		`(?m)^mns +ok, [0-9]+ retried +[0-9.]+ +500 +0 / 8192 +queue telemetry-pk1: message .*QueueNotExist.* ago\)$`,
		`(?m)^dead letters +0 duplicates dropped +[0-9.]+ +300 +last: message .*QueueNotExist.* ago\)$`,
		`(?m)^spool +[0-9.]+% full +0 msgs, 0 bytes +-$`,
		// The stop line's names: what came in, and where it went.
		`(?m)^messages: in_spool_at_start=0 source_received=800 received=800 forwarded=500 dead_lettered=300 duplicates=0 joined=0 released=0 stranded=0 in_flight=0 in_spool=0$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output does not match %s", re)
		}
	}

	code, out, errOut = runMain(t, context.Background(), "status", "-url", base+"/", "-json", "-interval", "0")
	if code != ExitOK {
		t.Fatalf("status -json exited %d: %s", code, errOut)
	}
	var got struct {
		Status Status       `json:"status"`
		Rates  *StatusRates `json:"rates"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status -json printed no JSON: %v\n%s", err, out)
	}
	st := got.Status
	if !st.Ready || !st.Healthy || len(st.Source) != 1 || !st.Source[0].Connected || st.Source[0].Name != "e2e-bridge" {
		t.Errorf("status -json: ready %v healthy %v source %+v; want ready, healthy, e2e-bridge connected", st.Ready, st.Healthy, st.Source)
	}
	if st.Pipeline.Received != 800 || st.Pipeline.Forwarded != 500 || st.Pipeline.DeadLettered != 300 || st.Pipeline.MaxInFlight != 8192 {
		t.Errorf("status -json pipeline %+v, want 800 received, 500 forwarded, 300 dead-lettered, max 8192", st.Pipeline)
	}
	if at := st.Pipeline.InSpoolAtStart; at == nil || *at != 0 || st.Pipeline.SourceReceived != 800 {
		t.Errorf("status -json pipeline %+v, want in_spool_at_start 0 and source_received 800 (as the stop line)", st.Pipeline)
	}
	if !strings.Contains(st.MNS.LastError, "QueueNotExist") || st.MNS.LastErrorAt == nil {
		t.Errorf("status -json mns %+v, want the QueueNotExist failure with its time", st.MNS)
	}
	if !strings.Contains(st.DeadLetters.LastReason, "QueueNotExist") || st.DeadLetters.LastError != "" {
		t.Errorf("status -json dead letters %+v, want the QueueNotExist reason and no write error", st.DeadLetters)
	}
	if st.Spool == nil || st.Spool.MaxBytes != int64(c.Spool.MaxBytes) {
		t.Errorf("status -json spool %+v, want max_bytes %d", st.Spool, c.Spool.MaxBytes)
	}
	if got.Rates != nil {
		t.Errorf("status -json -interval 0: rates %+v, want none from one snapshot", got.Rates)
	}

	// The source goes down: the connection row and the header say so.
	p.sim.Close()
	waitFor(t, "the source down in /status", 30*time.Second, func() bool {
		st := b.Status()
		return len(st.Source) == 1 && !st.Source[0].Connected && st.Source[0].LastError != ""
	})
	_, out, _ = runMain(t, context.Background(), "status", "-url", base, "-interval", "0")
	for _, re := range []string{`(?m)^iot-mns-bridge .*NOT READY$`, `(?m)^  not ready: source connection e2e-bridge is down`,
		`(?m)^source e2e-bridge +DOWN, [0-9]+ reconnects +- +800 +\S`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output with the source down does not match %s:\n%s", re, out)
		}
	}
}

func TestStatusCommandErrors(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testpeers.FreePort(t)) // nothing listens there
	code, _, errOut := runMain(t, context.Background(), "status", "-url", "http://"+addr)
	if code != ExitFailure || !strings.Contains(errOut, "is the bridge running with http.listen at http://"+addr) {
		t.Errorf("status against nothing: exit %d, %q; want 1 naming the address", code, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "status", "-interval", "-1s")
	if code != ExitUsage || !strings.Contains(errOut, "-interval") {
		t.Errorf("status -interval -1s: exit %d, %q; want 2 naming -interval", code, errOut)
	}
	// A server that is not a bridge.
	notBridge := testpeers.Serve(t, http.NotFoundHandler())
	code, _, errOut = runMain(t, context.Background(), "status", "-url", "http://"+notBridge)
	if code != ExitFailure || !strings.Contains(errOut, "404") {
		t.Errorf("status against a 404: exit %d, %q; want 1 with the status", code, errOut)
	}
}

// TestStatusTableCountsWhatCameIn: with an earlier run's backlog in the
// spool, the source row counts what this run took from the platform
// (source_received), not what entered the pipeline from the spool, and
// the messages line has the stop line's counts, which add up: 200 + 50 =
// 30 forwarded + 220 in the spool. A bridge that does not report
// source_received (older) shows received, as before.
func TestStatusTableCountsWhatCameIn(t *testing.T) {
	now := time.Now()
	atStart := int64(200)
	st := Status{Version: "iot-mns-bridge test", StartedAt: now, Time: now, Healthy: true, Ready: true,
		Source:   []SourceConnStatus{{Name: "c1", Connected: true}},
		Pipeline: PipelineStatus{InSpoolAtStart: &atStart, SourceReceived: 50, Received: 60, Forwarded: 30, InFlight: 30, MaxInFlight: 64},
		Spool:    &SpoolStatus{Messages: 220, Bytes: 22000, MaxBytes: 1 << 20}}
	var out strings.Builder
	if err := printStatus(&out, st, nil); err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{`(?m)^source c1 +connected, 0 reconnects +- +50 +-$`,
		`(?m)^messages: in_spool_at_start=200 source_received=50 received=60 forwarded=30 dead_lettered=0 duplicates=0 joined=0 released=0 stranded=0 in_flight=30 in_spool=220$`} {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("status output does not match %s:\n%s", re, out.String())
		}
	}
	b, err := json.Marshal(st.Pipeline)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"in_spool_at_start":200,"source_received":50,"received":60`) {
		t.Errorf("/status pipeline JSON %s, want in_spool_at_start and source_received", b)
	}
	older := Status{Version: "iot-mns-bridge older", StartedAt: now, Time: now, Healthy: true, Ready: true,
		Source: []SourceConnStatus{{Name: "c1", Connected: true}}, Pipeline: PipelineStatus{Received: 70, Forwarded: 70}}
	out.Reset()
	if err := printStatus(&out, older, nil); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^source c1 +connected, 0 reconnects +- +70 +-$`).MatchString(out.String()) {
		t.Errorf("a bridge without source_received: the source row does not show received:\n%s", out.String())
	}
}

func TestStatusRates(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := Status{StartedAt: t0, Time: t0.Add(time.Minute), Pipeline: PipelineStatus{Received: 100, Forwarded: 90, DeadLettered: 1}}
	b := Status{StartedAt: t0, Time: t0.Add(time.Minute + 2*time.Second), Pipeline: PipelineStatus{Received: 300, Forwarded: 290, DeadLettered: 5}}
	r := statusRates(a, b)
	if r == nil || r.Seconds != 2 || r.Received != 100 || r.Forwarded != 100 || r.DeadLettered != 2 {
		t.Errorf("statusRates = %+v, want 2 s, 100/s received and forwarded, 2/s dead-lettered", r)
	}
	if r := statusRates(a, a); r != nil {
		t.Errorf("statusRates of one snapshot = %+v, want nil", r)
	}
	restarted := b
	restarted.StartedAt = t0.Add(time.Second)
	if r := statusRates(a, restarted); r != nil {
		t.Errorf("statusRates across a restart = %+v, want nil", r)
	}
}

func TestLocalURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9477": "http://127.0.0.1:9477",
		"0.0.0.0:9477":   "http://127.0.0.1:9477",
		":9477":          "http://127.0.0.1:9477",
		"[::]:9477":      "http://127.0.0.1:9477",
		"[::1]:9477":     "http://[::1]:9477",
		"localhost:80":   "http://localhost:80",
	} {
		if got := localURL(in); got != want {
			t.Errorf("localURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestStatusAndHealthcheckNeedOnlyTheHTTPSection runs `status -config` and
// `healthcheck -config` the way an operator does on a systemd box: from a
// shell without the env file's variables and without the right to read the
// secret files. They only need http.listen, so the rest of the config must
// not stop them.
func TestStatusAndHealthcheckNeedOnlyTheHTTPSection(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	addr := testpeers.Serve(t, mux)
	dir := t.TempDir()
	cfg := `source:
  endpoint: iot-06z00xxxx.amqp.iothub.aliyuncs.com
  client_id: ${QA_TEST_UNSET_CLIENT_ID}
  credentials:
    access_key_id: ${QA_TEST_UNSET_KEY_ID}
    access_key_secret_file: no-such-secret
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /{productKey}/#
    queue: telemetry-{productKey}
http:
  listen: ` + addr + "\n"
	file := writeConfigFile(t, dir, cfg)
	code, out, errOut := runMain(t, context.Background(), "healthcheck", "-config", file)
	if code != ExitOK || strings.TrimSpace(out) != "ok" {
		t.Errorf("healthcheck -config: exit %d, %q, %q; want 0 and ok", code, out, errOut)
	}
	// Not a bridge's /status: the command got past the config to the request.
	code, _, errOut = runMain(t, context.Background(), "status", "-config", file, "-interval", "0")
	if code != ExitFailure || !strings.Contains(errOut, "404") {
		t.Errorf("status -config: exit %d, %q; want 1 with the server's 404", code, errOut)
	}
	// A mistake in the http section itself is still named.
	writeConfigFile(t, dir, cfg+"  lisen: x\n")
	code, _, errOut = runMain(t, context.Background(), "healthcheck", "-config", file)
	if code != ExitUsage || !strings.Contains(errOut, `unknown key "lisen" in http`) {
		t.Errorf("healthcheck with a typo in http: exit %d, %q; want 2 naming the key", code, errOut)
	}
}

// TestStatusTableMNSLookupFailing: with the MNS key wrong, the destination
// lookups fail before any message is sent; the mns row must not say "ok".
func TestStatusTableMNSLookupFailing(t *testing.T) {
	now := time.Now()
	st := Status{Version: "iot-mns-bridge test", StartedAt: now, Time: now,
		NotReady:          []string{"MNS queue iot-unrouted: mns: GetQueueAttributes queue iot-unrouted: SignatureDoesNotMatch (HTTP 403)"},
		MNSLookupsFailing: 1,
		Healthy:           true, Source: []SourceConnStatus{{Name: "gw", Connected: true}},
		Pipeline: PipelineStatus{MaxInFlight: 8192}}
	var out strings.Builder
	if err := printStatus(&out, st, nil); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^mns +lookups failing \(see not ready\), 0 retried`).MatchString(out.String()) {
		t.Errorf("the mns row does not say its lookups fail:\n%s", out.String())
	}
	st.NotReady, st.MNSLookupsFailing = []string{"source connection gw is down"}, 0
	out.Reset()
	printStatus(&out, st, nil)
	if !regexp.MustCompile(`(?m)^mns +ok, 0 retried`).MatchString(out.String()) {
		t.Errorf("the mns row is not ok when only the source is down:\n%s", out.String())
	}
}

// TestStatusTableSpoolWritesFailing: while the spool's commits fail (a
// full disk) its row says so, with the error, and the JSON has it: the row
// said '0.1% full' and '-' while the source was paused and the messages
// held in memory (walked on a 2 MiB tmpfs).
func TestStatusTableSpoolWritesFailing(t *testing.T) {
	now := time.Now()
	const diskFull = "spool: commit to /var/lib/iot-mns-bridge/spool/spool.db: write ...: no space left on device"
	st := Status{Version: "iot-mns-bridge test", StartedAt: now, Time: now, Ready: true, Healthy: true,
		Source:   []SourceConnStatus{{Name: "gw", Connected: true}},
		Pipeline: PipelineStatus{MaxInFlight: 8192},
		Spool:    &SpoolStatus{Messages: 1136, Bytes: 1296852, MaxBytes: 1 << 30, WritesFailing: diskFull}}
	var out strings.Builder
	if err := printStatus(&out, st, nil); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^spool +0\.1% full, writes FAILING \(source paused\) .*no space left on device$`).MatchString(out.String()) {
		t.Errorf("the spool row does not say its writes fail:\n%s", out.String())
	}
	b, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(b), `"writes_failing":"spool: commit to`) {
		t.Errorf("the JSON (%v) lacks writes_failing: %s", err, b)
	}
}

// TestStatusCountsJoinedCopies: the dead letters row's "duplicates
// dropped" counts both kinds of redelivery the bridge did not send again,
// those the de-dup window suppressed and those joined to their held
// original, and the JSON has each.
func TestStatusCountsJoinedCopies(t *testing.T) {
	now := time.Now()
	st := Status{Version: "iot-mns-bridge test", StartedAt: now, Time: now, Healthy: true,
		Pipeline: PipelineStatus{Duplicates: 2, Joined: 30, MaxInFlight: 8192}}
	var out strings.Builder
	if err := printStatus(&out, st, nil); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^dead letters +32 duplicates dropped`).MatchString(out.String()) {
		t.Errorf("the dead letters row does not count the joined copies as dropped duplicates:\n%s", out.String())
	}
	b, err := json.Marshal(st.Pipeline)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"duplicates":2,"joined":30`) {
		t.Errorf("/status pipeline JSON %s, want duplicates and joined", b)
	}
}

// TestStatusShowsTheDeadLetterQueue: the dead-letter queue's requests are
// not the pipeline's, so the mns row never showed them. With the file set,
// a queue that does not exist was seen nowhere in /status. Its own row
// counts its requests and says it fails while the entries are held (a
// missing queue holds them as a route's literal queue does, also when the
// file has them), then that it is ok again once the queue exists and has
// taken them.
func TestStatusShowsTheDeadLetterQueue(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Delivery.DeadLetter.File = filepath.Join(t.TempDir(), "dead.jsonl")
	c.Delivery.DeadLetter.Queue = "dlq"
	b, base := runBridgeHTTP(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler)})

	// telemetry-pk1 is missing: the messages are dead-lettered, and held
	// while dlq is missing.
	p.publishPlain(20)
	waitFor(t, "the dead-letter queue to fail", 30*time.Second, func() bool {
		q := b.Status().DeadLetterQueue
		return q != nil && q.Failing && q.Requests > 0
	})
	st := b.Status()
	q := st.DeadLetterQueue
	if st.Pipeline.DeadLettered != 0 {
		t.Errorf("dead_lettered %d while the dead-letter queue is missing, want 0 (held)", st.Pipeline.DeadLettered)
	}
	if q == nil || q.Name != "dlq" || q.Requests == 0 || q.Failed != q.Requests || q.Accepted != 0 || !q.Failing ||
		!strings.Contains(q.LastError, "queue dlq: message ") || !strings.Contains(q.LastError, "QueueNotExist") {
		t.Fatalf("/status dead_letter_queue %+v, want dlq with every request failed on QueueNotExist", q)
	}
	if strings.Contains(st.MNS.LastError, "dlq") || st.MNS.Failed == 0 || st.MNS.Accepted != 0 {
		t.Errorf("/status mns %+v, want the pipeline's failed sends to telemetry-pk1 only", st.MNS)
	}
	// The held entries are retried meanwhile: the command's counts may be
	// later ones than q's, every request failed all the same.
	_, out, _ := runMain(t, context.Background(), "status", "-url", base, "-interval", "0")
	re := `(?m)^dead-letter queue dlq +FAILING, ([0-9]+) of ([0-9]+) requests failed +0 +queue dlq: message .*QueueNotExist.* ago\)$`
	if m := regexp.MustCompile(re).FindStringSubmatch(out); m == nil || m[1] != m[2] || fewerThan(m[2], q.Requests) {
		t.Errorf("status output does not match %s with every request failed, at least the %d of /status:\n%s", re, q.Requests, out)
	}

	p.emu.CreateQueue("dlq")
	p.publishPlain(10)
	waitFor(t, "the dead-letter queue to take the 30 entries", 30*time.Second, func() bool {
		q := b.Status().DeadLetterQueue
		return q.Accepted >= 30 && !q.Failing && b.Status().Pipeline.DeadLettered >= 30
	})
	_, out, _ = runMain(t, context.Background(), "status", "-url", base, "-interval", "0")
	if re := `(?m)^dead-letter queue dlq +ok, [0-9]+ of [0-9]+ requests failed +30 +queue dlq: message .*QueueNotExist.* ago\)$`; !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("status output after the queue was created does not match %s:\n%s", re, out)
	}
}

// TestStatusTableMNSStateIsLive: the mns row's state says what holds now.
// It said "retrying" whenever some send had ever failed and messages were
// in flight, so a busy bridge an hour after an outage still read
// "retrying" (the README's own example, an error 2h ago with 73 in flight,
// could not be printed). Sends failing now say so, with or without failing
// lookups; a dead-letter queue not asked yet does not say "ok".
func TestStatusTableMNSStateIsLive(t *testing.T) {
	now := time.Now()
	hourAgo := now.Add(-time.Hour)
	st := Status{Version: "iot-mns-bridge test", StartedAt: now.Add(-2 * time.Hour), Time: now, Ready: true, Healthy: true,
		Source:          []SourceConnStatus{{Name: "gw", Connected: true}},
		Pipeline:        PipelineStatus{Forwarded: 900, InFlight: 73, MaxInFlight: 8192, Retried: 12},
		MNS:             RequestStatus{Requests: 100, Failed: 3, Accepted: 900, PartError: PartError{LastError: "queue q: 503", LastErrorAt: &hourAgo}},
		DeadLetterQueue: &DeadLetterQueueStatus{Name: "dlq"}}
	for _, tc := range []struct {
		sends, lookups int
		want           string
	}{
		{0, 0, `(?m)^mns +ok, 12 retried +- +900 +73 / 8192 +queue q: 503 \(1h0m0s ago\)$`},
		{1, 0, `(?m)^mns +FAILING to 1 destination\(s\), retrying, 12 retried `},
		{2, 1, `(?m)^mns +FAILING to 2 destination\(s\), retrying; lookups failing \(see not ready\), 12 retried `},
	} {
		st.MNSSendsFailing, st.MNSLookupsFailing = tc.sends, tc.lookups
		var out strings.Builder
		if err := printStatus(&out, st, nil); err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(tc.want).MatchString(out.String()) {
			t.Errorf("%d sends and %d lookups failing: the mns row does not match %s:\n%s", tc.sends, tc.lookups, tc.want, out.String())
		}
		if re := `(?m)^dead-letter queue dlq +no requests yet, 0 of 0 requests failed +0 +-$`; !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("a dead-letter queue not asked yet: the row does not match %s:\n%s", re, out.String())
		}
	}
}

// fewerThan reports whether the decimal count n is less than want, or not
// a number.
func fewerThan(n string, want int64) bool {
	v, err := strconv.ParseInt(n, 10, 64)
	return err != nil || v < want
}
