package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	waitFor(t, "50 dead letters in the file", time.Minute, func() bool {
		data, _ := os.ReadFile(dlFile)
		return strings.Count(string(data), "\n") >= 50
	})
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

	p.emu.CreateQueue("telemetry-pk1")
	// Replay into a config whose own dead-letter file is elsewhere, so the
	// file being replayed is only read.
	replayCfg := filepath.Join(p.dir, "replay.yaml")
	cfgData, _ := os.ReadFile(path)
	os.WriteFile(replayCfg, []byte(strings.Replace(string(cfgData), "file: dl.jsonl", "file: dl-again.jsonl", 1)), 0o600)
	code, out, errOut := runMain(t, context.Background(), "replay", "-config", replayCfg, dlFile)
	if code != ExitOK {
		t.Fatalf("replay exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "50 entries read") || !strings.Contains(out, "50 forwarded") {
		t.Errorf("replay report: %s", out)
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
