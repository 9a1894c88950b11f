package bridge

import (
	"strings"
	"sync"
	"time"
)

// Dedup remembers up to Size recent message ids for at most MaxAge, so that
// the platform's redeliveries of messages MNS already accepted can be
// suppressed. It is safe for concurrent use; every operation is O(1)
// (amortised) and memory is bounded by Size ids.
//
// It is a FIFO window: ids are held in the order they were added, and the
// oldest is forgotten when Size is reached or when it is MaxAge old. A nil
// *Dedup, or one of size 0, never suppresses anything.
type Dedup struct {
	maxAge time.Duration

	mu    sync.Mutex
	ring  []dedupSlot       // len == size; slot seq%size holds entry seq
	index map[string]uint64 // id → seq of its newest entry
	head  uint64            // seq of the oldest entry held
	next  uint64            // seq of the next entry

	onAdd func(id string, at time.Time)
}

type dedupSlot struct {
	id string
	at time.Time
}

// NewDedup returns a window of at most size ids, each remembered for at
// most maxAge (maxAge <= 0: until pushed out by newer ids). size <= 0
// returns a Dedup that never suppresses.
func NewDedup(size int, maxAge time.Duration) *Dedup {
	if size < 0 {
		size = 0
	}
	return &Dedup{
		maxAge: maxAge,
		ring:   make([]dedupSlot, size),
		index:  make(map[string]uint64, size),
	}
}

// Seen reports whether id was added within the window and has not expired
// at now. An empty id is never a duplicate.
func (d *Dedup) Seen(id string, now time.Time) bool {
	if d == nil || len(d.ring) == 0 || id == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	seq, ok := d.index[id]
	if !ok {
		return false
	}
	return !d.expired(d.ring[seq%uint64(len(d.ring))].at, now)
}

// Add records id as delivered at now; the pipeline calls it once MNS has
// accepted the message. Adding an id that is already held renews it. Empty
// ids are not recorded. It keeps its own copy of id, so that the window
// never pins a larger buffer that id may be a slice of.
func (d *Dedup) Add(id string, now time.Time) {
	if d == nil || len(d.ring) == 0 || id == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(now)
	size := uint64(len(d.ring))
	if d.next-d.head == size {
		d.evictOldest()
	}
	if old, ok := d.index[id]; ok {
		id = d.ring[old%size].id // reuse the copy already held
	} else {
		id = strings.Clone(id)
	}
	d.ring[d.next%size] = dedupSlot{id: id, at: now}
	d.index[id] = d.next
	d.next++
	if d.onAdd != nil {
		d.onAdd(id, now)
	}
}

// SetOnAdd registers f, called with every id added (under the window's
// lock, so in order; f must not block). Set it before the window is used;
// it is how the window is journalled to survive restarts.
func (d *Dedup) SetOnAdd(f func(id string, at time.Time)) { d.onAdd = f }

// Len returns the number of ids held, including expired ones not yet
// pruned (pruning happens in Add).
func (d *Dedup) Len() int {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.index)
}

func (d *Dedup) expired(at, now time.Time) bool {
	return d.maxAge > 0 && now.Sub(at) >= d.maxAge
}

// prune forgets the expired entries at the head of the window.
func (d *Dedup) prune(now time.Time) {
	for d.head != d.next && d.expired(d.ring[d.head%uint64(len(d.ring))].at, now) {
		d.evictOldest()
	}
}

// evictOldest forgets the entry at the head; the id stays indexed when a
// newer entry renewed it.
func (d *Dedup) evictOldest() {
	s := &d.ring[d.head%uint64(len(d.ring))]
	if seq, ok := d.index[s.id]; ok && seq == d.head {
		delete(d.index, s.id)
	}
	*s = dedupSlot{}
	d.head++
}

// DedupEntry is one remembered id with the time it was added.
type DedupEntry struct {
	ID string
	At time.Time
}

// Entries returns the window's live entries, oldest first (for persisting
// it). Safe for concurrent use.
func (d *Dedup) Entries() []DedupEntry {
	if d == nil || len(d.ring) == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	size := uint64(len(d.ring))
	out := make([]DedupEntry, 0, d.next-d.head)
	for seq := d.head; seq != d.next; seq++ {
		s := d.ring[seq%size]
		if cur, ok := d.index[s.id]; ok && cur == seq {
			out = append(out, DedupEntry{ID: s.id, At: s.at})
		}
	}
	return out
}
