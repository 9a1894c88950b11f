package bridge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

func TestDedup(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type op struct {
		add  bool // Add, else Seen
		id   string
		sec  int
		seen bool // want, for Seen
	}
	add := func(id string, sec int) op { return op{add: true, id: id, sec: sec} }
	seen := func(id string, sec int, want bool) op { return op{id: id, sec: sec, seen: want} }
	tests := []struct {
		name    string
		size    int
		maxAge  time.Duration
		ops     []op
		wantLen int
	}{
		{"unknown id", 3, time.Minute, []op{add("a", 0), seen("b", 0, false)}, 1},
		{"seen after add", 3, time.Minute, []op{seen("a", 0, false), add("a", 0), seen("a", 1, true)}, 1},
		{"evicted by size, oldest first", 3, time.Minute,
			[]op{add("a", 0), add("b", 0), add("c", 0), add("d", 0),
				seen("a", 1, false), seen("b", 1, true), seen("c", 1, true), seen("d", 1, true)}, 3},
		{"expired by age", 3, 10 * time.Second,
			[]op{add("a", 0), seen("a", 9, true), seen("a", 10, false), seen("a", 100, false)}, 1},
		{"expired entries are pruned on add", 3, 10 * time.Second,
			[]op{add("a", 0), add("b", 5), add("c", 11), seen("a", 11, false), seen("b", 11, true)}, 2},
		{"no age limit", 3, 0, []op{add("a", 0), seen("a", 1e6, true)}, 1},
		{"renewal keeps a renewed id when its old entry leaves", 3, time.Minute,
			[]op{add("a", 0), add("b", 0), add("a", 0), add("c", 0),
				seen("a", 1, true), seen("b", 1, true), seen("c", 1, true),
				add("d", 1), seen("a", 1, true), seen("b", 1, false)}, 3},
		{"renewal refreshes the age", 3, 10 * time.Second,
			[]op{add("a", 0), add("a", 8), add("x", 12), seen("a", 15, true), seen("a", 18, false)}, 2},
		{"renewal at size 2 uses both slots", 2, time.Minute,
			[]op{add("a", 0), add("b", 0), add("a", 0), add("c", 0), seen("a", 0, true), seen("b", 0, false)}, 2},
		{"empty id is never a duplicate", 3, time.Minute, []op{add("", 0), seen("", 0, false)}, 0},
		{"size 0 never suppresses", 0, time.Minute, []op{add("a", 0), seen("a", 0, false)}, 0},
		{"negative size never suppresses", -1, time.Minute, []op{add("a", 0), seen("a", 0, false)}, 0},
		{"clock going back counts as fresh", 3, 10 * time.Second, []op{add("a", 10), seen("a", 0, true)}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDedup(tt.size, tt.maxAge)
			for i, o := range tt.ops {
				if o.add {
					d.Add(o.id, at(o.sec))
					continue
				}
				if got := d.Seen(o.id, at(o.sec)); got != o.seen {
					t.Errorf("op %d: Seen(%q, +%ds) = %v, want %v", i, o.id, o.sec, got, o.seen)
				}
			}
			if got := d.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
		})
	}
}

func TestDedupNil(t *testing.T) {
	var d *Dedup
	d.Add("a", time.Now())
	if d.Seen("a", time.Now()) || d.Len() != 0 {
		t.Error("a nil Dedup suppressed something")
	}
}

// TestDedupBounded checks that memory stays bounded by size however many
// ids pass through, with and without renewals.
func TestDedupBounded(t *testing.T) {
	const size = 100
	d := NewDedup(size, time.Hour)
	now := time.Now()
	for i := 0; i < 50*size; i++ {
		d.Add(strconv.Itoa(i%(3*size/2)), now)
		if n := d.Len(); n > size {
			t.Fatalf("after %d adds Len() = %d, bound is %d", i+1, n, size)
		}
	}
	if len(d.ring) != size {
		t.Errorf("ring grew to %d", len(d.ring))
	}
}

// TestDedupClonesID checks that the window does not depend on the caller's
// memory: an id that aliases a buffer the source reuses must stay intact.
// (The window holds keys, not strings: nothing of the buffer is kept.)
func TestDedupClonesID(t *testing.T) {
	buf := []byte("id-1 and the rest of a large frame")
	id := unsafe.String(&buf[0], 4)
	d := NewDedup(4, time.Hour)
	d.Add(id, time.Now())
	copy(buf, "XXXX")
	if !d.Seen("id-1", time.Now()) {
		t.Error("id-1 not seen after the caller's buffer changed")
	}
	if d.Seen("XXXX", time.Now()) {
		t.Error("the window follows the caller's buffer")
	}
}

func TestDedupConcurrent(t *testing.T) {
	const workers, perWorker = 8, 500
	d := NewDedup(workers*perWorker, time.Hour)
	now := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				id := fmt.Sprintf("%d-%d", w, i)
				if d.Seen(id, now) {
					errs <- id + " seen before it was added"
					return
				}
				d.Add(id, now)
				if !d.Seen(id, now) {
					errs <- id + " not seen after it was added"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := d.Len(); got != workers*perWorker {
		t.Errorf("Len() = %d, want %d", got, workers*perWorker)
	}
}

// BenchmarkDedup measures one Seen + Add per message, as the pipeline does,
// on a full 100,000-id window.
func BenchmarkDedup(b *testing.B) {
	const size = 100_000
	ids := make([]string, 4*size)
	for i := range ids {
		ids[i] = fmt.Sprintf("17000000000%08d", i)
	}
	d := NewDedup(size, time.Hour)
	now := time.Now()
	for i := 0; i < size; i++ {
		d.Add(ids[i], now)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			id := ids[i%len(ids)]
			if !d.Seen(id, now) {
				d.Add(id, now)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				id := ids[i%len(ids)]
				if !d.Seen(id, now) {
					d.Add(id, now)
				}
				i += 7
			}
		})
	})
}

// TestDedupKeysTellIDsApart: ids that the key packs (short ones, decimals
// of 16 to 19 digits) and ids it hashes are never taken for one another,
// nor for an id that differs in length only.
func TestDedupKeysTellIDsApart(t *testing.T) {
	ids := []string{
		"a", "a\x00", "\x00", "\x00\x00", "123456789012345", "1234567890123456", "0234567890123456",
		"234567890123456", "12345678901234567890", "9999999999999999999", "09999999999999999999",
		"1597828463573745664", "01597828463573745664", "159782846357374566", "1597828463573745664a",
		"bench-123456", "bench-1234567890123", "bench-12345678901234", "a-very-long-message-id-that-is-hashed",
		"a-very-long-message-id-that-is-hashee", string(make([]byte, 15)), string(make([]byte, 16)),
	}
	for i, a := range ids {
		d := NewDedup(4, time.Hour)
		d.Add(a, time.Now())
		for j, b := range ids {
			if got := d.Seen(b, time.Now()); got != (i == j) {
				t.Errorf("after Add(%q): Seen(%q) = %v", a, b, got)
			}
		}
	}
}

// TestDedupBytesIsWhatNewDedupAllocates: the memory CheckDedupSize quotes
// is what a window takes (BenchmarkDedupWindowMemory's 45 bytes an id at
// 100,000). Other goroutines can only add to what the process allocated
// meanwhile, so a try may count more; one of a few must be within 64 KiB
// above DedupBytes, none may be below it. Small windows only: nothing big is
// ever allocated to check the bound.
func TestDedupBytesIsWhatNewDedupAllocates(t *testing.T) {
	for _, size := range []int{1000, 100_000, 300_000} {
		want := DedupBytes(size)
		var got float64
		for range 5 {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			d := NewDedup(size, time.Hour)
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(d)
			got = float64(after.TotalAlloc - before.TotalAlloc)
			if got < want {
				t.Fatalf("NewDedup(%d) allocated %.0f bytes, less than DedupBytes %.0f", size, got, want)
			}
			if got <= want+64<<10 {
				break
			}
		}
		if got > want+64<<10 {
			t.Errorf("NewDedup(%d) allocated %.0f bytes, DedupBytes says %.0f", size, got, want)
		}
	}
	if perID := DedupBytes(100_000) / 100_000; perID < 44 || perID > 46 {
		t.Errorf("DedupBytes(100000) = %.1f bytes an id, want about 45 (the measured)", perID)
	}
}

// TestCheckDedupSize: 0 to MaxDedupSize pass; above, the reason says what
// the window would take in memory, computed, never allocated.
func TestCheckDedupSize(t *testing.T) {
	for _, n := range []int{0, 1, 100_000, MaxDedupSize} {
		if err := CheckDedupSize(n); err != nil {
			t.Errorf("CheckDedupSize(%d) = %v, want nil", n, err)
		}
	}
	for n, want := range map[int]string{
		-1:               "must be 0 (off) to 10000000, got -1",
		MaxDedupSize + 1: "must be 0 (off) to 10000000, got 10000001: the window is allocated whole at start, about 45 bytes an id, so it would take 508 MB of memory (10000000 ids: 508 MB)",
		1_000_000_000:    "got 1000000000: the window is allocated whole at start, about 45 bytes an id, so it would take 41.2 GB of memory",
		math.MaxInt:      "so it would take ",
	} {
		if err := CheckDedupSize(n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckDedupSize(%d) = %v, want %q", n, err, want)
		}
	}
}

// BenchmarkDedupWindowMemory reports the heap a full 100,000-id window of
// platform-like ids takes, per id.
func BenchmarkDedupWindowMemory(b *testing.B) {
	const size = 100_000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		d := NewDedup(size, time.Hour)
		now := time.Now()
		for i := range size {
			d.Add("17000000000"+strconv.Itoa(10_000_000+i), now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/size, "heap-B/id")
		runtime.KeepAlive(d)
	}
}

// refDedup is the window as a map of strings, the way it was written
// before the table of keys: the model TestDedupMatchesModel checks against.
type refDedup struct {
	size       int
	maxAge     time.Duration
	ring       []refSlot
	index      map[string]uint64
	head, next uint64
}

type refSlot struct {
	id string
	at time.Time
}

func (r *refDedup) expired(at, now time.Time) bool {
	return r.maxAge > 0 && now.Sub(at) >= r.maxAge
}

func (r *refDedup) seen(id string, now time.Time) bool {
	seq, ok := r.index[id]
	return ok && !r.expired(r.ring[seq%uint64(r.size)].at, now)
}

func (r *refDedup) evict() {
	s := &r.ring[r.head%uint64(r.size)]
	if seq, ok := r.index[s.id]; ok && seq == r.head {
		delete(r.index, s.id)
	}
	*s = refSlot{}
	r.head++
}

func (r *refDedup) add(id string, now time.Time) {
	for r.head != r.next && r.expired(r.ring[r.head%uint64(r.size)].at, now) {
		r.evict()
	}
	if r.next-r.head == uint64(r.size) {
		r.evict()
	}
	r.ring[r.next%uint64(r.size)] = refSlot{id: id, at: now}
	r.index[id] = r.next
	r.next++
}

// TestDedupMatchesModel runs random adds and checks (renewals, evictions by
// size and by age, ids that collide in the table) against the model.
func TestDedupMatchesModel(t *testing.T) {
	for _, size := range []int{1, 2, 3, 7, 64} {
		rng := rand.New(rand.NewPCG(uint64(size), 7))
		d := NewDedup(size, 10*time.Second)
		ref := &refDedup{size: size, maxAge: 10 * time.Second, ring: make([]refSlot, size), index: map[string]uint64{}}
		t0 := time.Unix(1_700_000_000, 0)
		now := t0
		pool := 3 * size
		id := func() string {
			k := rng.IntN(pool)
			switch k % 3 {
			case 0:
				return strconv.FormatInt(1_000_000_000_000_000_000+int64(k), 10) // a platform-like decimal
			case 1:
				return "id-" + strconv.Itoa(k) // short
			}
			return "a-long-message-id-that-the-window-hashes-" + strconv.Itoa(k)
		}
		for op := range 20_000 {
			now = now.Add(time.Duration(rng.IntN(300)) * time.Millisecond)
			x := id()
			if rng.IntN(2) == 0 {
				d.Add(x, now)
				ref.add(x, now)
			}
			if got, want := d.Seen(x, now), ref.seen(x, now); got != want {
				t.Fatalf("size %d, op %d: Seen(%q) = %v, model says %v", size, op, x, got, want)
			}
			if got, want := d.Len(), len(ref.index); got != want {
				t.Fatalf("size %d, op %d: Len() = %d, model says %d", size, op, got, want)
			}
		}
	}
}
