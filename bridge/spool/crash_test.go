package spool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const crashHelperEnv = "SPOOL_CRASH_HELPER_DIR"

// TestCrash kills a process that appends and deletes as fast as it can,
// with SIGKILL, and checks the reopened spool: every message whose commit
// was reported is there with its content, nothing is damaged, keys are in
// order, whether stored alone or in a group record. The helper process is
// this test binary; it stops by itself after a bounded number of messages
// or seconds if nobody kills it.
func TestCrash(t *testing.T) {
	if dir := os.Getenv(crashHelperEnv); dir != "" {
		crashHelper(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	committed := map[uint64]string{} // key → message id, reported after the commit
	deleted := map[uint64]bool{}
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		key, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "C":
			committed[key] = f[2]
		case "D":
			deleted[key] = true
		}
		if !killed && len(committed) >= 3000 {
			cmd.Process.Kill()
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the helper ended by itself after %d commits", len(committed))
	}

	s := open(t, Options{Dir: dir})
	got := replayAll(t, s)
	present := map[uint64]bool{}
	for i, g := range got {
		present[g.key] = true
		if i > 0 && g.key <= got[i-1].key {
			t.Fatalf("keys out of order: %d after %d", g.key, got[i-1].key)
		}
		if want, ok := committed[g.key]; ok && g.m.MessageID != want {
			t.Fatalf("key %d holds %q, want %q", g.key, g.m.MessageID, want)
		}
		if !ok(g.m.MessageID) {
			t.Fatalf("key %d holds a message id %q the helper never wrote", g.key, g.m.MessageID)
		}
	}
	lost := 0
	for k := range committed {
		if !present[k] && !deleted[k] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d committed messages lost after the crash (%d committed, %d replayed)", lost, len(committed), len(got))
	}
	if st := s.Stats(); st.Depth != int64(len(got)) {
		t.Errorf("Depth = %d, replayed %d", st.Depth, len(got))
	}
	// The helper's commits hold many messages each, so the kill hit group
	// records with some of their messages deleted (duplicates, never loss).
	if live, _ := groupSizes(s); len(live) == 0 {
		t.Error("the reopened spool holds no group records: the test no longer covers a crash inside a group")
	}
	if ownBuckets(s) == 0 {
		t.Error("the reopened spool holds no record in a bucket of its own: the test no longer covers a crash with them")
	}
	add(t, s, msg(-1))
	t.Logf("killed after %d reported commits; %d messages replayed", len(committed), len(got))
}

func ok(id string) bool {
	_, err := strconv.Atoi(strings.TrimPrefix(id, "m-"))
	return strings.HasPrefix(id, "m-") && err == nil
}

// crashHelper appends from 4 producers and deletes every fourth message once
// committed, printing "C key id" after each commit and "D key id" after each
// Delete call, until killed (or 200,000 messages or 20 s).
func crashHelper(dir string) {
	s, err := Open(withDefaults(Options{Dir: dir}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out sync.Mutex
	print := func(format string, a ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format, a...)
		out.Unlock()
	}
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < 200000 && time.Now().Before(deadline); i += 4 {
				m := msg(i)
				id := m.MessageID
				s.Append(context.Background(), &m, func(k uint64, err error) {
					if err != nil {
						return
					}
					print("C %d %s\n", k, id)
					if i%4 == 0 {
						s.Delete(k)
						print("D %d %s\n", k, id)
					}
				})
			}
		}()
	}
	wg.Wait()
	s.Close()
	os.Exit(0)
}
