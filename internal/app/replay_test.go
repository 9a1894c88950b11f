package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestDeadLetterFileAndReplay: messages for a queue that does not exist are
// dead-lettered to the JSONL file with the reason; once the queue exists,
// "replay" sends the file through the routes again and reports it.
func TestDeadLetterFileAndReplay(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Delivery.DeadLetter.File = "dl.jsonl"
	path := p.writeConfig(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	var errb testpeers.SyncBuffer
	go func() { exited <- Main(ctx, []string{"run", "-config", path}, Stdio{Out: &errb, Err: &errb}) }()
	for i := 0; i < 50; i++ {
		p.sim.Publish("g1", iotsim.Message{Topic: "/pk1/dev/user/x", MessageID: fmt.Sprintf("dl-%02d", i), Body: []byte{0, 1, 2, byte(i)}})
	}
	dlFile := filepath.Join(p.dir, "dl.jsonl")
	waitFor(t, "50 dead letters in the file", time.Minute, func() bool { return fileLines(dlFile) >= 50 })
	cancel()
	if code := <-exited; code != ExitOK {
		t.Fatalf("run exited %d: %s", code, errb.String())
	}
	data, _ := os.ReadFile(dlFile)
	first := strings.SplitN(string(data), "\n", 2)[0]
	for _, want := range []string{`"reason":`, "QueueNotExist", `"messageId":"dl-`, `"topic":"/pk1/dev/user/x"`, `"body":"AAEC`} {
		if !strings.Contains(first, want) {
			t.Errorf("dead-letter line lacks %s: %s", want, first)
		}
	}
	if st, _ := os.Stat(dlFile); st.Mode().Perm() != 0o600 {
		t.Errorf("dead-letter file mode %v, want 0600", st.Mode().Perm())
	}

	// Replaying the config's own dead-letter file while the queue is still
	// missing: the file is moved aside first, so what fails again goes to a
	// new file holding exactly those entries, not appended to the 50 being
	// replayed (a second replay would send those twice).
	code, out, errOut := runMain(t, context.Background(), "replay", "-config", path, dlFile)
	if code != ExitOK || !strings.Contains(out, "50 dead-lettered again") || !strings.Contains(out, "moved "+dlFile+" to "+dlFile+".replayed-") {
		t.Fatalf("replay of the config's own file: exit %d\n%s%s", code, out, errOut)
	}
	if n := fileLines(dlFile); n != 50 {
		t.Errorf("the dead-letter file holds %d lines after a replay that failed again, want 50", n)
	}
	aside, _ := filepath.Glob(dlFile + ".replayed-*")
	if len(aside) != 1 {
		t.Fatalf("moved-aside files %v, want one", aside)
	}
	if kept, _ := os.ReadFile(aside[0]); string(kept) != string(data) {
		t.Errorf("the moved-aside file is not the replayed file as it was")
	}
	os.Remove(aside[0])
	os.WriteFile(dlFile, data, 0o600)

	// The dead-letter file of a running bridge (which holds its lock) is
	// not moved under it: it is read as it is, what fails again goes beside
	// it, and replay says to move it away after.
	running, err := deadletter.OpenFile(dlFile)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runMain(t, context.Background(), "replay", "-config", path, dlFile)
	running.Close()
	if code != ExitOK || !strings.Contains(out, "50 dead-lettered again") || !strings.Contains(out, "once the replay is done, move "+dlFile+" away") {
		t.Errorf("replay of a running bridge's own file: exit %d\n%s%s", code, out, errOut)
	}
	if again, _ := os.ReadFile(dlFile); string(again) != string(data) {
		t.Errorf("replay changed the file a running bridge holds")
	}
	beside, _ := filepath.Glob(dlFile + ".replay-*")
	if len(beside) != 1 {
		t.Fatalf("files beside the held one: %v, want one", beside)
	}
	if n := fileLines(beside[0]); n != 50 {
		t.Errorf("%s holds %d lines, want the 50 that failed again", beside[0], n)
	}
	os.Remove(beside[0])

	p.emu.CreateQueue("telemetry-pk1")
	// Replay into a config whose own dead-letter file is elsewhere, so the
	// file being replayed is only read; a running bridge holds that file,
	// so what would fail again goes to a file next to it.
	c.Delivery.DeadLetter.File = "dl-again.jsonl"
	replayCfg := configtest.Write(t, p.dir, "replay.yaml", c)
	running, err = deadletter.OpenFile(filepath.Join(p.dir, "dl-again.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runMain(t, context.Background(), "replay", "-config", replayCfg, dlFile)
	running.Close()
	if code != ExitOK {
		t.Fatalf("replay exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "dl-again.jsonl is held by a running bridge: what fails again is written to "+filepath.Join(p.dir, "dl-again.jsonl.replay-")) {
		t.Errorf("replay beside a running bridge does not say where its dead letters go: %s", out)
	}
	if !strings.Contains(out, "50 entries read") || !strings.Contains(out, "50 forwarded") {
		t.Errorf("replay report: %s", out)
	}
	// Nothing failed again: no empty file is left beside the running
	// bridge's (walk7: a replay as root, as README says, left an empty
	// root-owned dead-letter.jsonl.replay-TIME in the unit's state
	// directory after every replay that failed nothing).
	if beside, _ := filepath.Glob(filepath.Join(p.dir, "dl-again.jsonl.replay-*")); len(beside) != 0 || !strings.Contains(out, "nothing failed again") {
		t.Errorf("after a replay that failed nothing: files beside the held one %v, want none, and the report to say so:\n%s", beside, out)
	}
	msgs := p.emu.Messages("telemetry-pk1")
	if len(msgs) != 50 {
		t.Fatalf("%d messages at MNS after replay, want 50", len(msgs))
	}
	body, _ := msgs[0].DecodedBody()
	if len(body) != 4 || body[0] != 0 || body[2] != 2 {
		t.Errorf("replayed body %v, want the original bytes", body)
	}

	// A corrupt line stops replay with its line number, unless skipped.
	os.WriteFile(dlFile, append(data, []byte("{not json\n")...), 0o600)
	code, _, errOut = runMain(t, context.Background(), "replay", "-config", replayCfg, dlFile)
	if code != ExitFailure || !strings.Contains(errOut, "51") {
		t.Errorf("corrupt line: exit %d, stderr %s", code, errOut)
	}
	code, out, errOut = runMain(t, context.Background(), "replay", "-config", replayCfg, "-skip-corrupt", dlFile)
	if code != ExitOK || !strings.Contains(out, "1 skipped") {
		t.Errorf("skip-corrupt: exit %d\n%s%s", code, out, errOut)
	}
}

// TestReplayOfAnEmptyOwnFileMovesNothing: replaying the config's own
// dead-letter file when it is empty (walked: a second replay right after a
// successful one) reads nothing and leaves no empty .replayed- file to
// delete.
func TestReplayOfAnEmptyOwnFileMovesNothing(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Delivery.DeadLetter.File = "dl.jsonl"
	path := p.writeConfig(t, c)
	dlFile := testfile.Write(t, p.dir, "dl.jsonl", "")
	code, out, errOut := runMain(t, context.Background(), "replay", "-config", path, dlFile)
	if code != ExitOK || !strings.Contains(out, "0 entries read") || strings.Contains(out, "moved ") {
		t.Fatalf("replay of an empty file: exit %d\n%s%s", code, out, errOut)
	}
	if aside, _ := filepath.Glob(dlFile + ".replayed-*"); len(aside) != 0 {
		t.Errorf("moved-aside files %v, want none", aside)
	}
	if st, err := os.Stat(dlFile); err != nil || st.Size() != 0 {
		t.Errorf("the dead-letter file: %v %v, want it kept, empty", st, err)
	}
}

// TestReplayUsageNamesTheFile: replay's -h shows its one argument, the
// dead-letter file, not only the flags.
func TestReplayUsageNamesTheFile(t *testing.T) {
	code, _, errOut := runMain(t, context.Background(), "replay", "-h")
	if code != ExitOK || !strings.Contains(errOut, "iot-mns-bridge replay -config FILE [-skip-corrupt] DEADLETTER.jsonl") || !strings.Contains(errOut, "-skip-corrupt") {
		t.Errorf("replay -h: exit %d\n%s", code, errOut)
	}
}

// TestReplayOfARepeatedEntry: a dead-letter file may hold a message twice
// (dead-lettered by two bridges, or kept at two shutdowns). Replay sends it
// once: the second entry joins the first while that is held, or the de-dup
// window drops it once MNS has the first (always so with max_in_flight 1:
// the second waits until the first is settled). Either way that entry is
// done: the replay finishes and says so, instead of reporting it "not done"
// and asking to run the replay again.
func TestReplayOfARepeatedEntry(t *testing.T) {
	for _, maxInFlight := range []int{0, 1} { // 0: the default
		p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1"}}, iotsim.Config{})
		c := p.config()
		c.Delivery.DeadLetter.File = "dl-again.jsonl"
		if maxInFlight > 0 {
			c.Delivery.MaxInFlight = maxInFlight
		}
		path := p.writeConfig(t, c)
		dlFile := filepath.Join(p.dir, "dl.jsonl")
		f, err := deadletter.OpenFile(dlFile)
		if err != nil {
			t.Fatal(err)
		}
		e := deadletter.NewEntry(bridge.Message{Topic: "/pk1/dev/user/x", MessageID: "twice", Body: []byte("b")}, "QueueNotExist", time.Now())
		if err := f.Write(e, e); err != nil {
			t.Fatal(err)
		}
		f.Close()
		code, out, errOut := runMain(t, context.Background(), "replay", "-config", path, dlFile)
		if code != ExitOK || !strings.Contains(out, "2 entries read") || !strings.Contains(out, "1 forwarded") || !strings.Contains(out, "1 repeated (sent once), 0 not done") {
			t.Errorf("max_in_flight %d: replay of a file holding one message twice: exit %d\n%s%s", maxInFlight, code, out, errOut)
		}
		if n := len(p.emu.Messages("telemetry-pk1")); n != 1 {
			t.Errorf("max_in_flight %d: %d messages at MNS, want the message once", maxInFlight, n)
		}
	}
}

// TestReplayClosesTheCredentialsCaches: replay builds a bridge without
// running it, so Run's closing of the credentials caches never came; a
// cache whose provider fails went on retrying it on its timer until the
// process exited (in tests, into the tests after). replay closes both
// caches, whether or not it finished.
func TestReplayClosesTheCredentialsCaches(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.MNS.Credentials = config.Credentials{CredentialsFile: filepath.Join(t.TempDir(), "not-yet.json")} // fails: no such file
	c.ShutdownTimeout = 200 * time.Millisecond
	b, err := New(mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler),
		Credentials: credentials.CacheOptions{MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	e := deadletter.NewEntry(bridge.Message{Topic: "/pk1/dev/user/x", MessageID: "r-1", Body: []byte("x")}, "test", time.Now())
	st, finished, err := b.replay(context.Background(), []deadletter.Entry{e})
	if err != nil || finished || st.Forwarded != 0 {
		t.Fatalf("replay without MNS credentials: %+v, finished %v, %v; want it cut by shutdown_timeout", st, finished, err)
	}
	if b.creds.mns.Status().Failures == 0 {
		t.Fatal("the MNS credentials never failed: the test does not show a failing cache")
	}
	for name, cache := range map[string]*credentials.Cache{"source": b.creds.source, "mns": b.creds.mns} {
		if !cache.Status().Closed {
			t.Errorf("the %s credentials cache is still open after replay: its timer goes on refreshing", name)
		}
	}
}
