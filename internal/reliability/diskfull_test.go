package reliability

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// TestSpoolCommitFailsThenQuiet: MNS is down (the spool grows), the disk
// under the spool fills (a filler file takes the rest of a 1 MiB tmpfs),
// and the source goes quiet right after a message whose spool commit failed
// (ack auto: the platform does not send it again). Once the space and MNS
// are back every message reaches MNS with no further message arriving;
// stopped while the disk is still full, the bridge keeps every message (in
// the spool or the dead-letter file).
func TestSpoolCommitFailsThenQuiet(t *testing.T) {
	for _, space := range []string{"back", "still full at shutdown"} {
		t.Run(space, func(t *testing.T) {
			e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
			spoolDir := filepath.Join(e.dir, "spool")
			smallFS(t, spoolDir, "1m")
			e.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
			r := runBridge(t, e.config(t, spec{spool: true}), app.Options{})
			waitFor(t, "the spool open", time.Minute, func() bool { return strings.Contains(r.logs.String(), "spool open") })
			filler := filepath.Join(spoolDir, "filler")
			fill(t, filler)

			// One message at a time until one fails to commit: it is then the
			// last the source hands over.
			pub := &publisher{sim: e.sim, prefix: "q", pad: bytes.Repeat([]byte("p"), 4000)}
			failing := func() bool { return strings.Contains(r.logs.String(), "spool writes failing") }
			for i := 1; !failing(); i++ {
				if i > 100 {
					t.Fatalf("100 messages of 4 KB spooled on a full disk; log:\n%s", tail(r.logs.String(), 20))
				}
				pub.publish(1)
				waitFor(t, "the message spooled or its commit failed", time.Minute, func() bool {
					return failing() || r.b.Status().Spool.Messages == int64(i)
				})
			}
			sent := pub.sent()
			t.Logf("the commit of message %d, the last sent, failed", len(sent))
			if space == "back" {
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
				e.emu.SetFaults(mnsemu.Faults{})
				tl := waitAllArrived(t, e.emu, sent, 30*time.Second)
				tl.report(t, "a spool commit failed, then the source went quiet")
				waitFor(t, "the recovery logged", time.Minute, func() bool {
					return strings.Contains(r.logs.String(), "spool writes succeed again")
				})
				return
			}
			if err := r.stop(t); err != nil {
				t.Errorf("Run: %v", err)
			}
			kept := deadLetters(t, e)
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			var inSpool []string
			for _, body := range spoolContents(t, spoolDir) {
				inSpool = append(inSpool, strings.SplitN(body, "|", 2)[0])
			}
			got := arrived(t, e.emu, queue)
			t.Logf("kept at shutdown: %d in the dead-letter file, %d in the spool", len(kept), len(inSpool))
			for _, id := range sent {
				if _, ok := kept[id]; !ok && got[id] == 0 && !slices.Contains(inSpool, id) {
					t.Errorf("%s lost: neither at MNS, nor in the dead-letter file (%d entries), nor in the spool (%d); log:\n%s",
						id, len(kept), len(inSpool), tail(r.logs.String(), 20))
				}
			}
		})
	}
}

// fill writes path until the file system is full (ENOSPC), 64 KiB at a
// time; the file system is small (smallFS).
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for range 1 << 10 { // at most 64 MiB
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatalf("%s: the file system is not full after 64 MiB", path)
}
