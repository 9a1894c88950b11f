package spool

import (
	"slices"
	"sort"
)

// Bounds of a group record (codec version 2): a commit stores its messages
// in groups of at most maxGroup messages and about groupBytes, one bbolt
// record each, instead of one record a message. bbolt's cost is per record
// (a tree descent per put and per delete, node growth, spill), so a group
// cuts it by up to maxGroup; a read-back decodes the group's messages from
// one value. The bounds keep what a partly forwarded group replays after a
// crash (duplicates, never loss), what Close rewrites, and what one
// read-back visit checks (the CRC of the whole group) small.
const (
	maxGroup   = 256
	groupBytes = 64 << 10
)

// group is the in-memory state of a group record: which of its messages
// are not yet deleted. A message of a group is deleted here; the record is
// deleted from the file when its last message is, and rewritten with the
// messages left at Close.
//
// The state is made from the record at the first delete of one of its
// messages (groupAt), not when the record is written or Open reads it:
// the spool keeps state only for the groups MNS is taking, a few around the
// messages in flight, not for every group it holds. A deep spool (an MNS
// outage, toward Options.MaxBytes: millions of small messages) then costs
// disk, not heap; a group without state has all its stored messages live.
type group struct {
	start  uint64  // the record's key: the key of its first message
	sizes  []int32 // by offset: a live message's counted size (encoded + key), 0 when deleted or absent
	left   int     // live messages
	stored int     // messages in the stored record
}

// groupIndex holds the state of the groups that lost some of their
// messages, by key. Groups come in mostly in key order (MNS takes messages
// in about that order, so their first deletes come so) and leave so, so a
// sorted slice with lazy removal serves both.
type groupIndex struct {
	gs   []*group // by start
	dead int      // groups in gs with left == 0
}

// find returns the group that holds key, or nil (a message stored alone,
// or a key that is unknown or whose group is gone).
func (x *groupIndex) find(key uint64) *group {
	i := sort.Search(len(x.gs), func(i int) bool { return x.gs[i].start > key }) - 1
	if i < 0 {
		return nil
	}
	g := x.gs[i]
	if key-g.start >= uint64(len(g.sizes)) {
		return nil
	}
	return g
}

// add adds a group that holds no key of another group in the index; at
// the end of the slice when its start is above every group's.
func (x *groupIndex) add(g *group) {
	i := len(x.gs)
	for i > 0 && x.gs[i-1].start > g.start {
		i--
	}
	x.gs = slices.Insert(x.gs, i, g)
}

// groupAt returns the state of the group record rec, stored under start:
// every message it holds is live.
func groupAt(start uint64, rec []byte) (*group, error) {
	g := &group{start: start}
	err := eachMember(rec, func(off uint64, p []byte) error {
		g.sizes = append(g.sizes, make([]int32, int(off)+1-len(g.sizes))...)
		g.sizes[off] = memberSize(p)
		g.left++
		return nil
	})
	g.stored = g.left
	return g, err
}

// memberSize is what a message stored in a group, with payload p, counts
// against Options.MaxBytes: as much as the same message stored alone.
func memberSize(p []byte) int32 { return int32(headerLen + len(p) + keyLen) }

// compact drops the groups whose messages are all deleted, once they are
// half the index.
func (x *groupIndex) compact() {
	if x.dead < 64 || x.dead*2 < len(x.gs) {
		return
	}
	live := x.gs[:0]
	for _, g := range x.gs {
		if g.left > 0 {
			live = append(live, g)
		}
	}
	clear(x.gs[len(live):])
	x.gs, x.dead = live, 0
}
