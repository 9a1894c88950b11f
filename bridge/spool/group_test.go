package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	bolt "go.etcd.io/bbolt"
)

// gate stops the writer inside one commit, once armed, so that Appends
// queue up meanwhile and the next commit takes them all: one group.
type gate struct {
	armed   atomic.Bool
	fail    atomic.Bool // every commit fails (ENOSPC)
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) hook(int) error {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
	}
	if g.fail.Load() {
		return syscall.ENOSPC
	}
	return nil
}

// addGroup commits ms[0] alone (a version 1 record) while ms[1:] queue,
// then ms[1:] in the next commit (one group record), and returns their keys.
func addGroup(t *testing.T, s *Spool, g *gate, ms ...bridge.Message) []uint64 {
	t.Helper()
	keys := make([]uint64, len(ms))
	var wg sync.WaitGroup
	wg.Add(len(ms))
	appendOne := func(i int) {
		if err := s.Append(context.Background(), &ms[i], func(k uint64, err error) {
			if err != nil {
				t.Errorf("commit %q: %v", ms[i].MessageID, err)
			}
			keys[i] = k
			wg.Done()
		}); err != nil {
			t.Fatalf("Append %q: %v", ms[i].MessageID, err)
		}
	}
	g.armed.Store(true)
	appendOne(0)
	<-g.entered
	for i := 1; i < len(ms); i++ {
		appendOne(i)
	}
	g.release <- struct{}{}
	wg.Wait()
	return keys
}

func msgs(from, to int) []bridge.Message {
	var out []bridge.Message
	for i := from; i < to; i++ {
		out = append(out, msg(i))
	}
	return out
}

// groupSizes returns, for each group record in s's file, its live and its
// stored messages: from the spool's state of the group when it has one (a
// message of it was deleted), else from the record (all live).
func groupSizes(s *Spool) (live, stored []int) {
	s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		return b.ForEach(func(k, v []byte) error {
			rec := recordAt(b, k, v)
			if rec[0] != groupVersion {
				return nil
			}
			start := binary.BigEndian.Uint64(k)
			s.gmu.Lock()
			g := s.groups.find(start)
			s.gmu.Unlock()
			if g == nil || g.start != start {
				g, _ = groupAt(start, rec)
			}
			live = append(live, g.left)
			stored = append(stored, g.stored)
			return nil
		})
	})
	return live, stored
}

func joinIDs(ss []stored) string { return strings.Join(ids(ss), ",") }

// records counts the records in a closed spool's file by version.
func records(t *testing.T, dir string) (v1, v2 int) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		return b.ForEach(func(k, v []byte) error {
			if recordAt(b, k, v)[0] == groupVersion {
				v2++
			} else {
				v1++
			}
			return nil
		})
	})
	return v1, v2
}

// TestGroupDeletesSomeMembersAndRestarts: the messages of one commit share a
// record; deleting some of them hides them from Replay at once, counts them
// out of Depth, and Close rewrites the record so that the next start
// replays only the others, under the same keys. In either layout of the
// file (layouts), and when the spool that reopens it writes the other.
func TestGroupDeletesSomeMembersAndRestarts(t *testing.T) {
	for _, before := range layouts {
		for _, after := range layouts {
			t.Run(before.name+", then "+after.name, func(t *testing.T) { testGroupDeletes(t, before.ownBytes, after.ownBytes) })
		}
	}
}

// layouts are the two places a record can live in the file (record.go),
// as Options.ownBytes: every record a value of the messages bucket (files
// of earlier versions; small records), every record in a bucket of its own
// (large records). A spool reads, deletes and rewrites records of both.
var layouts = []struct {
	name     string
	ownBytes int
}{{"values", math.MaxInt}, {"own buckets", 1}}

func testGroupDeletes(t *testing.T, ownBefore, ownAfter int) {
	dir := t.TempDir()
	g := newGate()
	s := open(t, Options{Dir: dir, CommitInterval: -1, commitHook: g.hook, ownBytes: ownBefore})
	keys := addGroup(t, s, g, msgs(0, 10)...)
	for i := range keys {
		if keys[i] != keys[0]+uint64(i) {
			t.Fatalf("keys %v are not consecutive", keys)
		}
	}
	if live, stored := groupSizes(s); len(live) != 1 || live[0] != 9 || stored[0] != 9 {
		t.Fatalf("groups live %v stored %v, want one of 9 (m-1..m-9)", live, stored)
	}
	// m-0 is alone, m-2, m-5 and m-9 in the group; a repeated and an unknown key are ignored.
	if err := s.Delete(keys[2], keys[5], keys[9], keys[0], keys[5], keys[9]+100); err != nil {
		t.Fatal(err)
	}
	s.sync()
	const want = "m-1,m-3,m-4,m-6,m-7,m-8"
	got := replayAll(t, s)
	if joinIDs(got) != want {
		t.Fatalf("replayed %v, want %s", ids(got), want)
	}
	for _, st := range got {
		if i := int(st.key - keys[0]); msg(i).MessageID != st.m.MessageID || !sameMessage(st.m, msg(i)) {
			t.Errorf("key %d holds %+v, want m-%d", st.key, st.m, i)
		}
	}
	if d := s.Stats().Depth; d != 6 {
		t.Errorf("Depth = %d, want 6", d)
	}
	// Replay from inside the group, and from a deleted key.
	for _, tc := range []struct {
		from uint64
		want string
	}{{keys[4], "m-4,m-6,m-7,m-8"}, {keys[5], "m-6,m-7,m-8"}, {keys[9], ""}, {keys[0], want}} {
		var from []string
		if err := s.ReplayFrom(tc.from, func(_ uint64, m bridge.Message) error {
			from = append(from, m.MessageID)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if strings.Join(from, ",") != tc.want {
			t.Errorf("ReplayFrom(%d) = %v, want %s", tc.from, from, tc.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	if v1, v2 := records(t, dir); v1 != 0 || v2 != 1 {
		t.Errorf("file holds %d single and %d group records, want the group alone", v1, v2)
	}

	s = open(t, Options{Dir: dir, CommitInterval: -1, commitHook: g.hook, ownBytes: ownAfter})
	got2 := replayAll(t, s)
	if joinIDs(got2) != want {
		t.Fatalf("after restart replayed %v, want %s", ids(got2), want)
	}
	for i := range got2 {
		if got2[i].key != got[i].key {
			t.Errorf("after restart %s has key %d, before %d", got2[i].m.MessageID, got2[i].key, got[i].key)
		}
	}
	if after := s.Stats(); after != before {
		t.Errorf("Stats after restart = %+v, before = %+v", after, before)
	}
	if live, stored := groupSizes(s); len(live) != 1 || live[0] != 6 || stored[0] != 6 {
		t.Errorf("after restart groups live %v stored %v, want one of 6", live, stored)
	}
	if k := add(t, s, msg(100)); k <= keys[9] {
		t.Errorf("new key %d after restart, last key before was %d", k, keys[9])
	}
	// The last of the group's messages deleted: the record goes.
	for _, st := range got2 {
		s.Delete(st.key)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v1, v2 := records(t, dir); v1 != 1 || v2 != 0 {
		t.Errorf("file holds %d single and %d group records, want only m-100", v1, v2)
	}
}

// ownBuckets counts the records of s that are in a bucket of their own.
func ownBuckets(s *Spool) (n int) {
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketName).ForEach(func(_, v []byte) error {
			if v == nil {
				n++
			}
			return nil
		})
	})
	return n
}

// TestLargeRecordIsWrittenOnce: a record of ownBucketPages pages or more
// lives in a bucket of its own, and later commits (appends, deletes of
// other records) leave its pages where they are: its commit wrote it once,
// where before every later commit wrote it again with the records after it
// in its leaf (the bytes: BenchmarkStage/5000/s, written-B/msg). A smaller
// record stays a value. Deleting a large record's messages deletes its
// bucket.
func TestLargeRecordIsWrittenOnce(t *testing.T) {
	g := newGate()
	s := open(t, Options{CommitInterval: -1, commitHook: g.hook})
	large := func(from, to int) []bridge.Message { // 1 KB messages
		ms := msgs(from, to)
		for i := range ms {
			ms[i].Body = bytes.Repeat([]byte{'x'}, 1000)
		}
		return ms
	}
	// root is the first page of the bucket of the record at key, 0 if the
	// record is a value or absent.
	root := func(key uint64) (pgid uint64) {
		s.db.View(func(tx *bolt.Tx) error {
			if own := tx.Bucket(bucketName).Bucket(binary8(key)); own != nil {
				pgid = uint64(own.Root())
			}
			return nil
		})
		return pgid
	}
	keys := addGroup(t, s, g, large(0, 11)...) // m-0 alone (1 KB), m-1..m-10 a group (10 KB)
	if s.ownBytes != 2*4096 {
		t.Fatalf("records of %d bytes get a bucket of their own, want 2 pages of 4 KiB", s.ownBytes)
	}
	if p := root(keys[0]); p != 0 {
		t.Errorf("m-0's 1 KB record is a bucket of its own (page %d), want a value", p)
	}
	first := root(keys[1])
	if first == 0 {
		t.Fatalf("the 10 KB group record of m-1..m-10 is not in a bucket of its own")
	}
	later := addGroup(t, s, g, large(20, 31)...)
	if err := s.Delete(keys[0], later[0], later[1]); err != nil {
		t.Fatal(err)
	}
	s.sync()
	if p := root(keys[1]); p != first {
		t.Errorf("after later commits the record of m-1..m-10 is at page %d, was at %d: written again", p, first)
	}
	if err := s.Delete(keys[1:]...); err != nil {
		t.Fatal(err)
	}
	s.sync()
	if p := root(keys[1]); p != 0 {
		t.Errorf("every message of m-1..m-10 deleted: their bucket is still there (page %d)", p)
	}
	if got, want := joinIDs(replayAll(t, s)), "m-22,m-23,m-24,m-25,m-26,m-27,m-28,m-29,m-30"; got != want {
		t.Errorf("replayed %s, want %s", got, want)
	}
	if err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("bbolt's check of the file: %v", err)
	}
}

// TestGroupPartlyDeletedAtACrash: a crash (the file as it is between
// commits, without Close's rewrite) replays every message of a partly
// forwarded group again, the forwarded ones too: duplicates, never a loss;
// a group whose messages were all deleted does not come back.
func TestGroupPartlyDeletedAtACrash(t *testing.T) {
	dir := t.TempDir()
	g := newGate()
	s := open(t, Options{Dir: dir, CommitInterval: -1, commitHook: g.hook})
	a := addGroup(t, s, g, msgs(0, 4)...) // m-0 alone, group m-1..m-3
	b := addGroup(t, s, g, msgs(4, 8)...) // m-4 alone, group m-5..m-7
	s.Delete(a[0], a[1], a[2], a[3], b[5-4], b[7-4])
	s.sync()
	if got := joinIDs(replayAll(t, s)); got != "m-4,m-6" {
		t.Fatalf("replayed %s, want m-4,m-6", got)
	}
	crashed := t.TempDir()
	copyFile(t, filepath.Join(dir, FileName), filepath.Join(crashed, FileName))

	c := open(t, Options{Dir: crashed})
	if got := joinIDs(replayAll(t, c)); got != "m-4,m-5,m-6,m-7" {
		t.Errorf("after a crash replayed %s, want m-4,m-5,m-6,m-7 (m-5 and m-7 again)", got)
	}
	if d := c.Stats().Depth; d != 4 {
		t.Errorf("after a crash Depth = %d, want 4", d)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestVersion1FileReplays opens a spool file written by the bridge before
// group records (testdata/v1-spool.db, made by main at 0038f59 with 4 KiB
// pages: m-0..m-9 and m-props appended one commit each, then m-0, m-3 and
// m-4 deleted), replays it, adds groups beside its records and reopens it.
func TestVersion1FileReplays(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join("testdata", "v1-spool.db"), filepath.Join(dir, FileName))
	if v1, v2 := records(t, dir); v1 != 8 || v2 != 0 {
		t.Fatalf("testdata holds %d single and %d group records, want 8 single", v1, v2)
	}
	g := newGate()
	s := open(t, Options{Dir: dir, CommitInterval: -1, commitHook: g.hook})
	const want = "m-1,m-2,m-5,m-6,m-7,m-8,m-9,m-props"
	got := replayAll(t, s)
	if joinIDs(got) != want {
		t.Fatalf("replayed %v, want %s", ids(got), want)
	}
	props := bridge.Message{Topic: "/pk/dev/user/props", MessageID: "m-props", GenerateTime: 1700000000123,
		Invalid: "why", Properties: map[string]string{"qos": "1", "destination": "/topic/x"}, Body: []byte{0, 1, 2, 0xff}}
	if last := got[len(got)-1]; last.key != 11 || !sameMessage(last.m, props) {
		t.Errorf("key %d holds %+v, want key 11 holding %+v", last.key, last.m, props)
	}
	if d := s.Stats().Depth; d != 8 {
		t.Errorf("Depth = %d, want 8", d)
	}
	keys := addGroup(t, s, g, msgs(20, 25)...)
	if keys[0] != 12 {
		t.Errorf("first new key %d, want 12 (after the file's last, 11)", keys[0])
	}
	s.Delete(got[0].key, keys[2])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir})
	const want2 = "m-2,m-5,m-6,m-7,m-8,m-9,m-props,m-20,m-21,m-23,m-24"
	if got := joinIDs(replayAll(t, s)); got != want2 {
		t.Errorf("after restart replayed %s, want %s", got, want2)
	}
	if d := s.Stats().Depth; d != 11 {
		t.Errorf("after restart Depth = %d, want 11", d)
	}
}

// TestGroupDeleteInAFailedCommit: deletes of a group's messages whose commit
// fails are kept and committed later; until then the messages are in the
// spool (Depth, Stats) as before the deletes.
func TestGroupDeleteInAFailedCommit(t *testing.T) {
	dir := t.TempDir()
	g := newGate()
	s := open(t, Options{Dir: dir, CommitInterval: -1, commitHook: g.hook})
	keys := addGroup(t, s, g, msgs(0, 4)...)
	before := s.Stats()
	g.fail.Store(true)
	s.Delete(keys[1], keys[2], keys[3]) // the whole group
	s.sync()
	// The counts are as before; CommitError says the commit failed.
	if st, want := s.Stats(), before; !strings.Contains(st.CommitError, syscall.ENOSPC.Error()) {
		t.Errorf("Stats after a failed delete commit = %+v, want CommitError to say %q", st, syscall.ENOSPC.Error())
	} else if want.CommitError = st.CommitError; st != want {
		t.Errorf("Stats after a failed delete commit = %+v, want %+v", st, want)
	}
	if live, _ := groupSizes(s); len(live) != 1 || live[0] != 3 {
		t.Errorf("after a failed delete commit groups live %v, want one of 3", live)
	}
	m := msg(9)
	err := s.Append(context.Background(), &m, func(_ uint64, err error) {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("commit while failing: %v, want ENOSPC", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	s.sync()
	g.fail.Store(false)
	add(t, s, msg(10)) // commits the kept deletes too
	if got := joinIDs(replayAll(t, s)); got != "m-0,m-10" {
		t.Errorf("replayed %s, want m-0,m-10", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if v1, v2 := records(t, dir); v1 != 2 || v2 != 0 {
		t.Errorf("file holds %d single and %d group records, want m-0 and m-10", v1, v2)
	}
}

// TestGroupRejectsDamage: every flipped byte, and every truncation, of a
// group record fails verify (Open then refuses the file with ErrCorrupt).
func TestGroupRejectsDamage(t *testing.T) {
	var members []groupMember
	for i, off := range []uint64{0, 2, 5} {
		m := msg(i)
		m.Properties = map[string]string{"qos": "1"}
		members = append(members, groupMember{off, encode(&m)[headerLen:]})
	}
	v := encodeGroup(members)
	if err := verify(v); err != nil {
		t.Fatalf("verify of a good group: %v", err)
	}
	var offs []uint64
	eachMember(v, func(off uint64, p []byte) error {
		if _, err := decodePayload(p); err != nil {
			t.Errorf("member %d: %v", off, err)
		}
		offs = append(offs, off)
		return nil
	})
	if len(offs) != 3 || offs[2] != 5 {
		t.Errorf("offsets %v, want 0 2 5", offs)
	}
	for n := 0; n < len(v); n++ {
		if err := verify(v[:n]); err == nil {
			t.Errorf("verify of the first %d of %d bytes succeeded", n, len(v))
		}
	}
	for i := range v {
		w := bytes.Clone(v)
		w[i] ^= 0x40
		if err := verify(w); err == nil {
			t.Errorf("verify with byte %d flipped succeeded", i)
		}
	}
	// Framing errors behind a valid checksum: offsets not growing.
	bad := encodeGroup([]groupMember{{3, members[0].payload}, {1, members[1].payload}})
	if err := verify(bad); err == nil || !strings.Contains(err.Error(), "offset") {
		t.Errorf("verify of offsets 3, 1: %v, want an offset error", err)
	}
	if _, err := decode(v); err == nil {
		t.Error("decode of a group as one message succeeded")
	}
}
