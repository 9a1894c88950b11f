package spool

import (
	"context"
	"runtime"
	"testing"
)

// TestHeapDoesNotGrowWithTheSpool spools n and then 20n messages that
// nobody deletes (an MNS outage: the spool fills toward Options.MaxBytes)
// and checks that the heap the spool holds does not grow with them, while
// it writes and after a restart (Open reads a deep spool): the messages are
// on disk, and what the spool keeps in memory for a message must end when
// the message is forwarded, not when it is spooled. 1 GiB of small
// messages is millions of them; a few bytes of heap each would be tens of
// MB on a box with 256 MB.
func TestHeapDoesNotGrowWithTheSpool(t *testing.T) {
	if testing.Short() {
		t.Skip("spools 800,000 messages")
	}
	const n = 40_000
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, CommitInterval: -1})
	fill := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			m := msg(i)
			if err := s.Append(context.Background(), &m, func(_ uint64, err error) {
				if err != nil {
					t.Error(err)
				}
			}); err != nil {
				t.Fatal(err)
			}
		}
		s.sync()
	}
	fill(0, n)
	atN := heapInUse()
	fill(n, 20*n)
	at20N := heapInUse()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Bytes a message. Under -race the heap also holds up to ~0.7 MB that
	// is not the spool's state and varies from run to run: pooled encode
	// buffers (the race detector makes sync.Pool keep or drop them at
	// random) and bbolt's freelist, which follows the file's size. The
	// depth grows by 19n messages so that stays under 0.9 a message (seen:
	// 0.4-0.9 under -race, about 0 without); group state made 4.8 a message
	// here (4.3 at 256-message groups, more at small ones).
	const most = 2.0
	if per := float64(at20N-atN) / (19 * n); per > most {
		t.Errorf("while spooling: the heap grew by %d bytes from %d to %d spooled messages (%.2f bytes a message, want at most %.2f)",
			at20N-atN, n, 20*n, per, most)
	}

	// After a restart: Open of the 20n-message spool against Open of an n-message one.
	small := t.TempDir()
	s = open(t, Options{Dir: small, CommitInterval: -1})
	fill(0, n)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := func(dir string) int64 {
		t.Helper()
		base := heapInUse()
		sp := open(t, Options{Dir: dir})
		held := heapInUse() - base
		if err := sp.Close(); err != nil {
			t.Fatal(err)
		}
		return held
	}
	openN, open20N := reopened(small), reopened(dir)
	if per := float64(open20N-openN) / (19 * n); per > most {
		t.Errorf("after a restart: Open of %d messages holds %d bytes more heap than Open of %d (%.2f bytes a message, want at most %.2f)",
			20*n, open20N-openN, n, per, most)
	}
	t.Logf("heap: spooling %d -> %d messages %+d bytes; Open of %d / %d messages %d / %d bytes", n, 20*n, at20N-atN, n, 20*n, openN, open20N)
}

// heapInUse is the heap's live bytes after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestGroupStateComesOutOfOrder deletes a message of a later group
// (m-5..m-7) before one of an earlier group (m-1..m-3): the later group's
// state is made first, the index stays in key order, and every delete
// counts and replays as one.
func TestGroupStateComesOutOfOrder(t *testing.T) {
	g := newGate()
	s := open(t, Options{CommitInterval: -1, commitHook: g.hook})
	first := addGroup(t, s, g, msgs(0, 4)...)
	second := addGroup(t, s, g, msgs(4, 8)...)
	before := s.Stats()
	if err := s.Delete(second[2]); err != nil {
		t.Fatal(err)
	}
	s.sync()
	if err := s.Delete(first[2], second[3]); err != nil {
		t.Fatal(err)
	}
	s.sync()
	if got, want := joinIDs(replayAll(t, s)), "m-0,m-1,m-3,m-4,m-5"; got != want {
		t.Errorf("replayed %s, want %s", got, want)
	}
	if st := s.Stats(); st.Depth != before.Depth-3 {
		t.Errorf("depth %d after 3 deletes, want %d", st.Depth, before.Depth-3)
	}
	s.gmu.Lock()
	defer s.gmu.Unlock()
	for i := 1; i < len(s.groups.gs); i++ {
		if s.groups.gs[i-1].start >= s.groups.gs[i].start {
			t.Fatalf("group states out of order: %d before %d", s.groups.gs[i-1].start, s.groups.gs[i].start)
		}
	}
}
