package bridge

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// Dedup remembers up to Size recent message ids for at most MaxAge, so that
// the platform's redeliveries of messages MNS already accepted can be
// suppressed. It is safe for concurrent use; every operation is O(1)
// (amortised) and memory is bounded by Size ids.
//
// It is a FIFO window: ids are held in the order they were added, and the
// oldest is forgotten when Size is reached or when it is MaxAge old. A nil
// *Dedup, or one of size 0, never suppresses anything.
//
// The window holds a 16-byte key per id, not the id: the id itself when it
// is at most 15 bytes or a decimal number of up to 19 digits (the
// platform's message ids), else a 128-bit hash of it (two 64-bit hashes
// with seeds of this process), in a ring of Size entries indexed by an
// open-addressing table of ring positions made once: it allocates nothing
// after NewDedup and holds no pointer for the garbage collector to scan
// (about 45 bytes an id). Each table entry carries 32 bits of its key's
// hash beside the ring position, so a probe reads the ring (a cache miss in
// a window of megabytes) only for a key whose hash bits match, and a
// deletion moves entries back without reading the ring or hashing again. Two different ids share a key
// only in the hashed case, with a chance of about 2⁻¹²⁶ per pair: for a
// window of 100,000 ids, a new message would be taken for a duplicate once
// in 10³³ messages.
type Dedup struct {
	maxAge time.Duration
	seeds  [2]maphash.Seed

	mu   sync.Mutex
	ring []dedupSlot // len == size; slot seq%size holds entry seq
	// table indexes the ring: linear probing from a key's hash, each used
	// entry the ring position + 1 of its key's newest entry in the low 32
	// bits and the low 32 bits of the key's hash (tagged) in the high ones,
	// 0 free; its length is a power of two of at least twice the size, so
	// it is at most half full. Deletion shifts entries back (no tombstones).
	table []uint64
	live  int    // used entries of table: ids held
	head  uint64 // seq of the oldest entry held
	next  uint64 // seq of the next entry

	onAdd   func(id string, at time.Time)
	onFlush func()
}

// dedupKey identifies an id; the top byte of its second word says how:
// 0..15 the id's length (its bytes in the rest), 0x50..0x53 a decimal of
// 16..19 digits (the number in the first word), 0x80 and up a hash.
type dedupKey [2]uint64

type dedupSlot struct {
	key dedupKey
	at  int64 // unix nanoseconds
}

// NewDedup returns a window of at most size ids, each remembered for at
// most maxAge (maxAge <= 0: until pushed out by newer ids). size <= 0
// returns a Dedup that never suppresses. It allocates DedupBytes(size) at
// once: the caller keeps size within MaxDedupSize (CheckDedupSize).
func NewDedup(size int, maxAge time.Duration) *Dedup {
	if size < 0 {
		size = 0
	}
	n := 1
	for n < 2*size {
		n <<= 1
	}
	return &Dedup{
		maxAge: maxAge,
		seeds:  [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		ring:   make([]dedupSlot, size),
		table:  make([]uint64, n),
	}
}

// MaxDedupSize bounds a window's size (config's delivery.dedup.size): NewDedup
// allocates the whole window at once, and DedupBytes(MaxDedupSize) is about
// 510 MB. Ten million ids hold 10 minutes (the default max_age) of more than
// 16,000 messages a second, the rate of 16 connections at the platform's
// 1,000 a second each.
const MaxDedupSize = 10_000_000

// DedupBytes is the memory NewDedup(size, ...) allocates: the ring's slot
// per id and the table's entries, at least two per id (about 45 bytes an
// id in all; BenchmarkDedupWindowMemory measures it). It computes, it
// allocates nothing, so it can size a window that would not fit.
func DedupBytes(size int) float64 {
	if size <= 0 {
		return 0
	}
	table := 1.0
	for table < 2*float64(size) {
		table *= 2
	}
	return float64(size)*float64(unsafe.Sizeof(dedupSlot{})) + table*float64(unsafe.Sizeof(uint64(0)))
}

// CheckDedupSize checks a window size: 0 (off) to MaxDedupSize. The reason
// names no field (the caller puts the config key in front) and says what
// the size would cost and how to choose one.
func CheckDedupSize(n int) error {
	switch {
	case n < 0:
		return fmt.Errorf("must be 0 (off) to %d, got %d", MaxDedupSize, n)
	case n > MaxDedupSize:
		return fmt.Errorf("must be 0 (off) to %d, got %d: the window is allocated whole at start, about 45 bytes an id, "+
			"so it would take %s of memory (%d ids: %s); it needs to hold the ids of max_age's worth of messages "+
			"at the peak rate, e.g. 600000 for 1,000 messages a second over 10m",
			MaxDedupSize, n, memory(DedupBytes(n)), MaxDedupSize, memory(DedupBytes(MaxDedupSize)))
	}
	return nil
}

// memory formats a byte count for an operator: "508 MB", "41.2 GB".
func memory(b float64) string {
	if b >= 1e9 {
		return strconv.FormatFloat(b/1e9, 'f', 1, 64) + " GB"
	}
	return strconv.FormatFloat(b/1e6, 'f', 0, 64) + " MB"
}

// hash is k's hash in the table: its probe starts at hash & (len(table)-1),
// and an entry keeps it (tagged) to tell keys apart without the ring. The
// table has at most 2³² entries, so the low 32 bits give the start.
func (d *Dedup) hash(k dedupKey) uint32 {
	return uint32(maphash.Comparable(d.seeds[0], k))
}

// tagged is the table entry for ring position pos of a key with hash h.
func tagged(pos uint64, h uint32) uint64 { return uint64(h)<<32 | (pos + 1) }

// entryPos is the ring position of a used table entry.
func entryPos(e uint64) uint64 { return uint64(uint32(e)) - 1 }

// find returns the table index of k's entry (h is d.hash(k)) and whether
// it has one; when not, the index is the free entry where it would go.
func (d *Dedup) find(k dedupKey, h uint32) (int, bool) {
	mask := len(d.table) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		e := d.table[i]
		if e == 0 {
			return i, false
		}
		if uint32(e>>32) == h && d.ring[entryPos(e)].key == k {
			return i, true
		}
	}
}

// remove frees table entry i, shifting back the entries after it that
// would no longer be found past the gap.
func (d *Dedup) remove(i int) {
	mask := len(d.table) - 1
	for j := (i + 1) & mask; d.table[j] != 0; j = (j + 1) & mask {
		h := int(d.table[j]>>32) & mask // the entry's home
		// The entry at j stays when its home lies cyclically in (i, j].
		if (i < j && i < h && h <= j) || (i > j && (h > i || h <= j)) {
			continue
		}
		d.table[i] = d.table[j]
		i = j
	}
	d.table[i] = 0
	d.live--
}

// key returns id's key (see dedupKey).
func (d *Dedup) key(id string) dedupKey {
	if len(id) <= 15 {
		var b [16]byte
		copy(b[:], id)
		b[15] = byte(len(id))
		return dedupKey{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
	}
	if len(id) <= 19 && decimal(id) {
		n, _ := strconv.ParseUint(id, 10, 64) // 19 digits always fit
		return dedupKey{n, uint64(0x40|len(id)) << 56}
	}
	return dedupKey{maphash.String(d.seeds[0], id), maphash.String(d.seeds[1], id) | 1<<63}
}

func decimal(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Seen reports whether id was added within the window and has not expired
// at now. An empty id is never a duplicate.
func (d *Dedup) Seen(id string, now time.Time) bool {
	s, ok := d.entry(id)
	return ok && !d.expired(s.at, now)
}

// Holds reports whether the entry id has in the window was added at the
// millisecond of at and has not expired at now: the de-dup journal keeps
// only such lines when it compacts.
func (d *Dedup) Holds(id string, at, now time.Time) bool {
	s, ok := d.entry(id)
	return ok && time.Unix(0, s.at).UnixMilli() == at.UnixMilli() && !d.expired(s.at, now)
}

// entry returns the slot the window has for id, expired or not; false for
// an empty id, a window of size 0 and an id it does not have.
func (d *Dedup) entry(id string) (dedupSlot, bool) {
	if d == nil || len(d.ring) == 0 || id == "" {
		return dedupSlot{}, false
	}
	k := d.key(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.find(k, d.hash(k))
	if !ok {
		return dedupSlot{}, false
	}
	return d.ring[entryPos(d.table[i])], true
}

// Add records id as delivered at now; the pipeline calls it once MNS has
// accepted the message. Adding an id that is already held renews it. Empty
// ids are not recorded. The window keeps a key, not id (see Dedup), so it
// never pins a buffer that id may be a slice of.
func (d *Dedup) Add(id string, now time.Time) {
	if d == nil || len(d.ring) == 0 || id == "" {
		return
	}
	k := d.key(id)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.prune(now)
	size := uint64(len(d.ring))
	if d.next-d.head == size {
		d.evictOldest()
	}
	pos := d.next % size
	d.ring[pos] = dedupSlot{key: k, at: now.UnixNano()}
	h := d.hash(k)
	i, ok := d.find(k, h) // an entry of k renewed: it points here now
	if !ok {
		d.live++
	}
	d.table[i] = tagged(pos, h)
	d.next++
	if d.onAdd != nil {
		d.onAdd(id, now)
	}
}

// SetOnAdd registers f, called with every id added (under the window's
// lock, so in order; f must not block, nor keep id: it may be a slice of
// the caller's buffer). Set it before the window is used; it is how the
// window is journalled to survive restarts.
func (d *Dedup) SetOnAdd(f func(id string, at time.Time)) { d.onAdd = f }

// SetOnFlush registers f, which Flush calls. Set it before the window is
// used; the journal sets it to write what it buffered.
func (d *Dedup) SetOnFlush(f func()) { d.onFlush = f }

// Flush writes the ids added so far to the window's journal file
// (SetOnFlush) before it returns: handed to the kernel, not fsynced. So a
// crash of the process (kill -9) after the caller settles their deliveries
// upstream still finds them on restart and suppresses the redeliveries of
// any the source had not yet settled (a settlement may wait in the source,
// e.g. AMQP's settle linger, or the spool's deletes); a crash of the machine
// may lose the last ones, whose redeliveries are then forwarded once more
// (at-least-once). A write error is the journal's to log; Flush does not
// fail. Without a journal it does nothing. Safe for concurrent use.
func (d *Dedup) Flush() {
	if d.onFlush != nil {
		d.onFlush()
	}
}

// Len returns the number of ids held, including expired ones not yet
// pruned (pruning happens in Add).
func (d *Dedup) Len() int {
	if d == nil {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live
}

// expired reports whether an entry added at (unix nanoseconds) is MaxAge
// old at now, by the wall clock (an entry loaded from the journal has no
// other); a clock gone back counts as fresh. A step of the clock changes
// only which redeliveries are suppressed, never what is forwarded.
func (d *Dedup) expired(at int64, now time.Time) bool {
	return d.maxAge > 0 && now.UnixNano()-at >= int64(d.maxAge)
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
	pos := d.head % uint64(len(d.ring))
	k := d.ring[pos].key
	if i, ok := d.find(k, d.hash(k)); ok && entryPos(d.table[i]) == pos {
		d.remove(i)
	}
	d.ring[pos] = dedupSlot{}
	d.head++
}
