//go:build linux

package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMappedPagesAreGivenBack reads back a spool of about 16 MiB, after a
// restart, and checks that the pages of its file stay mapped into the
// process (resident, counted in its RSS) for at most releaseEvery bytes
// read and a little more: not the whole file after Open's checks, not the
// whole backlog after the read-back.
func TestMappedPagesAreGivenBack(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, CommitInterval: -1})
	const n = 16 << 10
	body := bytes.Repeat([]byte("x"), 1<<10)
	for i := range n {
		m := msg(i)
		m.Body = body
		if err := s.Append(context.Background(), &m, func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, FileName)
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir})
	const slack = 1 << 20
	if rss := mappedRSS(t, file); rss > slack {
		t.Errorf("after Open of a %d-byte spool file, %d bytes of it are mapped (want at most %d)", fi.Size(), rss, slack)
	}
	if got := len(replayAll(t, s)); got != n {
		t.Fatalf("replayed %d messages, want %d", got, n)
	}
	if rss := mappedRSS(t, file); rss > releaseEvery+slack {
		t.Errorf("after reading back a %d-byte spool file, %d bytes of it are mapped (want at most %d)", fi.Size(), rss, releaseEvery+slack)
	}
}

// mappedRSS is the resident size of this process's mappings of file
// (/proc/self/smaps).
func mappedRSS(t *testing.T, file string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[len(fields)-1] == file
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatal(fmt.Errorf("smaps: %q: %w", line, err))
			}
			total += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
