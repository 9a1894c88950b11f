package reliability

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// smallFS mounts a tmpfs of size (a mount option such as "1m") at dir and
// returns a function that resizes it. It skips the test when this process
// cannot mount (not root, or no CAP_SYS_ADMIN), or fails it under CI=true.
func smallFS(t *testing.T, dir, size string) (resize func(size string)) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := "cannot mount a small tmpfs for the disk-full test (needs root): " + strings.TrimSpace(string(out))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return func(size string) {
		if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
			t.Fatalf("resizing the tmpfs: %v: %s", err, out)
		}
	}
}

// TestSpoolDiskFull fills the disk under the spool (a 1 MiB tmpfs) while
// MNS is down, then gives the space back and brings MNS back. The bridge
// must log a clear error, stop consuming (backpressure) instead of dropping
// messages, keep the spool readable, and deliver everything once space and
// MNS return.
func TestSpoolDiskFull(t *testing.T) {
	for _, ack := range []string{"client-individual", "auto"} {
		t.Run("ack "+ack, func(t *testing.T) {
			e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
			spoolDir := filepath.Join(e.dir, "spool")
			resize := smallFS(t, spoolDir, "1m")
			e.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
			r := runBridge(t, e.config(t, spec{ack: ack, spool: true, mnsEndpoint: "http://" + e.emuAddr}), app.Options{})

			pub := &publisher{sim: e.sim, prefix: "d", pad: bytes.Repeat([]byte("p"), 1000)}
			// 3,000 messages of 1 KB: three times what the disk holds.
			for i := 0; i < 30; i++ {
				pub.publish(100)
				time.Sleep(20 * time.Millisecond)
			}
			waitFor(t, "an error about the full disk", time.Minute, func() bool {
				return strings.Contains(strings.ToLower(warnings(r.logs.String())), "space")
			})
			full := time.Now()
			t.Logf("ack %s: %s", ack, firstLine(lineWith(r.logs.String(), "spool")))
			time.Sleep(2 * time.Second) // it must hold, not spin or drop
			select {
			case err := <-r.done:
				t.Fatalf("the bridge stopped on a full disk: %v", err)
			default:
			}
			st := e.sim.Stats()
			t.Logf("ack %s: while full: simulator %+v", ack, st)

			resize("64m")
			e.emu.SetFaults(mnsemu.Faults{})
			sent := pub.sent()
			deadline := time.Now().Add(2 * time.Minute)
			var tl tally
			for {
				tl = count(sent, arrived(t, e.emu, queue))
				if tl.Lost == 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			tl.Recovery = time.Since(full)
			tl.report(t, "spool disk full, ack "+ack)
			if err := r.stop(t); err != nil {
				t.Errorf("Run: %v", err)
			}
			// No corruption: the spool opens and is empty.
			s, err := spool.Open(spoolOptions(spoolDir))
			if err != nil {
				t.Fatalf("the spool does not open after the disk was full: %v", err)
			}
			if d := s.Stats().Depth; d != 0 {
				t.Errorf("%d messages left in the spool after everything arrived", d)
			}
			s.Close()
			if tl.Lost != 0 {
				t.Fatalf("%d messages lost", tl.Lost)
			}
			if st.Nacked > int64(len(sent)) {
				t.Errorf("%d NACKs for %d messages while the disk was full: a redelivery storm instead of backpressure", st.Nacked, len(sent))
			}
		})
	}
}
