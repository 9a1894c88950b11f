package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/demo"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// syncWriter is an io.Writer that a test can read while the demo writes, and
// that closes seen once the output contains want.
type syncWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if w.want != "" && strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, err
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// An interrupted demo (Ctrl-C) reports the messages the platform still holds
// for redelivery as requeued, not as lost.
func TestDemoInterruptedReportsRequeuedNotLost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan demo.Bridge, 1)
	o := demo.Options{
		Devices: 5, Rate: 2000, Duration: 30 * time.Second, Ack: "client-individual", EncodeBase64: true,
		Connections: 1, MNSLatency: 200 * time.Millisecond, Dir: t.TempDir(), LogLevel: "error",
		Start: func(cfg *config.Config, level string, onReady func()) (demo.Bridge, error) {
			b, err := startDemoBridge(cfg, level, onReady)
			if err == nil {
				started <- b
			}
			return b, err
		},
	}
	interrupted := make(chan struct{})
	go func() {
		// Interrupt once the bridge has forwarded something and holds more.
		defer close(interrupted)
		b := <-started
		for ctx.Err() == nil {
			if st := b.Stats(); st.Forwarded > 0 && st.InFlight > 0 {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	out := &syncWriter{}
	res, err := demo.Run(ctx, o, out)
	<-interrupted
	if err != nil && ctx.Err() == nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if res.Lost != 0 || res.Requeued == 0 {
		t.Fatalf("interrupted demo: lost %d, requeued %d; want 0 lost and the held messages requeued\n%s", res.Lost, res.Requeued, out)
	}
	if !strings.Contains(out.String(), "still held by the platform") {
		t.Errorf("the summary does not say the messages are held by the platform:\n%s", out)
	}
}

// demo -keep stops at Ctrl-C even when the simulator's group is full and
// nothing consumes it (the fleet used to block in Publish forever).
func TestDemoKeepStopsWhenInterruptedWithAFullGroup(t *testing.T) {
	interruptKept(t, demo.Options{
		Devices: 2, Rate: 500, Duration: 200 * time.Millisecond, Ack: "client-individual", EncodeBase64: true,
		Connections: 1, Dir: t.TempDir(), LogLevel: "error", Keep: true, SimQueueSize: 10,
		Start: startDemoBridge,
	}, "nothing consumes it", "the group filled", nil)
}

// interruptKept runs demo -keep (o) until its output says want (what names
// that moment in a failure), interrupts it as Ctrl-C does and fails unless
// it then returns without an error. It returns the demo's output.
func interruptKept(t *testing.T, o demo.Options, want, what string, during func()) *syncWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncWriter{want: want, seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := demo.Run(ctx, o, out)
		done <- err
	}()
	select {
	case <-out.seen:
	case err := <-done:
		t.Fatalf("demo -keep returned before %s: %v\n%s", what, err, out)
	}
	if during != nil {
		during()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo -keep: %v", err)
		}
	case <-time.After(2 * time.Minute): // a hang detector, not a timing assertion
		t.Fatalf("demo -keep did not return after the interrupt:\n%s", out)
	}
	return out
}

// demo -keep without -dir leaves its temporary directory (the config the
// user was told to edit, the CA, the dead-letter file) after Ctrl-C: it must
// say where, and how to remove it.
func TestDemoKeepSaysWhereItsFilesStay(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // os.MkdirTemp's directory; removed with the test
	out := interruptKept(t, demo.Options{
		Devices: 2, Rate: 200, Duration: 200 * time.Millisecond, Ack: "client-individual", EncodeBase64: true,
		Connections: 1, LogLevel: "error", Keep: true, Start: startDemoBridge,
	}, "Keeping the simulator and emulator running", "keeping the peers", nil)
	dirs, err := filepath.Glob(filepath.Join(tmp, "iot-mns-bridge-demo-*"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("temporary directories after demo -keep: %v %v, want one", dirs, err)
	}
	if want := "The demo's files stay in " + dirs[0]; !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "rm -r "+dirs[0]) {
		t.Errorf("demo -keep output does not say %q and how to remove it:\n%s", want, out)
	}
}

// TestDemoKeepPeersFollowThePlatformsRules: the peers demo -keep leaves
// running for the user's own config refuse what the platform and MNS
// refuse, so that check -connect against them shows a mistake: a consumer
// group that does not exist, a queue that does not exist. (They accepted
// any group and created any queue on first use: check -connect said ok.)
func TestDemoKeepPeersFollowThePlatformsRules(t *testing.T) {
	dir := t.TempDir()
	interruptKept(t, demo.Options{
		Devices: 2, Rate: 200, Duration: 200 * time.Millisecond, Ack: "client-individual", EncodeBase64: true,
		Connections: 1, LogLevel: "error", Keep: true, Dir: dir, Start: startDemoBridge,
	}, "Keeping the simulator and emulator running", "keeping the peers", func() {
		cfg, err := os.ReadFile(filepath.Join(dir, "demo.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ name, from, to, want string }{
			{"group", "  client_id: demo-bridge\n", "  client_id: demo-bridge\n  consumer_group_id: cg-typo\n", "source.consumer_group_id"},
			{"queue", "  queue: iot-unrouted\n", "  queue: iot-unrouted-typo\n", "QueueNotExist"},
		} {
			if !strings.Contains(string(cfg), tc.from) {
				t.Fatalf("the demo config lacks %q:\n%s", tc.from, cfg)
			}
			file := testfile.Write(t, dir, tc.name+".yaml", strings.Replace(string(cfg), tc.from, tc.to, 1))
			code, out, errOut := runMain(t, context.Background(), "check", "-config", file, "-connect")
			if code == ExitOK || !strings.Contains(out, "FAIL") || !strings.Contains(out, tc.want) {
				t.Errorf("check -connect with a wrong %s against the kept peers: exit %d, want a FAIL naming %s:\n%s%s", tc.name, code, tc.want, out, errOut)
			}
		}
		if code, out, errOut := runMain(t, context.Background(), "check", "-config", filepath.Join(dir, "demo.yaml"), "-connect"); code != ExitOK {
			t.Errorf("check -connect of the demo's own config: exit %d:\n%s%s", code, out, errOut)
		}
	})
}
