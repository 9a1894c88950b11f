package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// open opens a spool in a new temporary directory unless opts names one;
// it is closed when the test or benchmark ends.
func open(t testing.TB, opts Options) *Spool {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	s, err := Open(withDefaults(opts))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// configDefaults are config.Default()'s spool.max_bytes and
// spool.commit_interval. config imports this package (its FileName), so
// these tests cannot import config; the external test package hands them
// over before any test runs (defaults_test.go).
var configDefaults Options

// SetConfigDefaults is defaults_test.go's hand-over of config.Default()'s
// spool settings.
func SetConfigDefaults(maxBytes int64, commitInterval time.Duration) {
	configDefaults = Options{MaxBytes: maxBytes, CommitInterval: commitInterval}
}

// withDefaults fills the zero MaxBytes and CommitInterval of opts with the
// config's defaults, as the wiring fills them from config.Default(); a test
// that wants no linger says -1.
func withDefaults(opts Options) Options {
	if configDefaults.MaxBytes == 0 {
		panic("spool tests: config's defaults were not handed over (defaults_test.go)")
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = configDefaults.MaxBytes
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = configDefaults.CommitInterval
	}
	return opts
}

type result struct {
	key uint64
	err error
}

// add appends m and waits for its commit.
func add(t *testing.T, s *Spool, m bridge.Message) uint64 {
	t.Helper()
	ch := make(chan result, 1)
	if err := s.Append(context.Background(), &m, func(k uint64, err error) { ch <- result{k, err} }); err != nil {
		t.Fatalf("Append %q: %v", m.MessageID, err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("commit %q: %v", m.MessageID, r.err)
	}
	return r.key
}

// appendCounted appends m without waiting for its commit: the commit must
// succeed, and done counts it.
func appendCounted(t *testing.T, s *Spool, m bridge.Message, done *atomic.Int64) error {
	return s.Append(context.Background(), &m, func(_ uint64, err error) {
		if err != nil {
			t.Error(err)
		}
		done.Add(1)
	})
}

type stored struct {
	key uint64
	m   bridge.Message
}

func replayAll(t *testing.T, s *Spool) []stored {
	t.Helper()
	var out []stored
	if err := s.Replay(func(k uint64, m bridge.Message) error {
		out = append(out, stored{k, m})
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return out
}

func ids(ss []stored) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.m.MessageID)
	}
	return out
}

func msg(i int) bridge.Message {
	return bridge.Message{
		Topic:     "/pk/dev/user/telemetry",
		MessageID: fmt.Sprintf("m-%d", i),
		Body:      []byte(fmt.Sprintf(`{"n":%d}`, i)),
	}
}

func sameMessage(a, b bridge.Message) bool {
	return a.Topic == b.Topic && a.MessageID == b.MessageID && a.GenerateTime == b.GenerateTime &&
		bytes.Equal(a.Body, b.Body) && maps.Equal(a.Properties, b.Properties) && a.Invalid == b.Invalid
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 16<<10) // 64 KiB
	tests := []struct {
		name string
		m    bridge.Message
	}{
		{"plain", msg(1)},
		{"empty body", bridge.Message{Topic: "/pk/dev/user/x", MessageID: "e"}},
		{"empty everything", bridge.Message{}},
		{"64 KiB body", bridge.Message{Topic: "/pk/dev/user/big", MessageID: "big", Body: big}},
		{"properties", bridge.Message{Topic: "/as/mqtt/status/pk/dev", MessageID: "p", Body: []byte("{}"),
			Properties: map[string]string{"qos": "1", "content-type": "application/json", "": "empty key", "k": ""}}},
		{"more properties than decode keeps on its stack", bridge.Message{MessageID: "many", Body: []byte("{}"), Properties: manyProperties(40)}},
		{"generate time and invalid", bridge.Message{MessageID: "g", GenerateTime: 1700000000123, Invalid: "body is not valid base64", Body: []byte("%%%")}},
		{"negative generate time", bridge.Message{MessageID: "n", GenerateTime: -5}},
		{"binary topic", bridge.Message{Topic: "/\x00/\xff", MessageID: "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, Options{})
			key := add(t, s, tt.m)
			got := replayAll(t, s)
			if len(got) != 1 || got[0].key != key || !sameMessage(got[0].m, tt.m) {
				t.Fatalf("replayed %+v, want key %d %+v", got, key, tt.m)
			}
			if st := s.Stats(); st.Depth != 1 || st.Bytes <= int64(len(tt.m.Body)) {
				t.Errorf("Stats = %+v after one message of %d body bytes", st, len(tt.m.Body))
			}
			if err := s.Delete(key); err != nil {
				t.Fatal(err)
			}
			s.sync()
			if got := replayAll(t, s); len(got) != 0 {
				t.Errorf("replayed %d messages after Delete, want none", len(got))
			}
			if st := s.Stats(); st.Depth != 0 || st.Bytes != 0 {
				t.Errorf("Stats = %+v after Delete, want empty", st)
			}
		})
	}
}

func manyProperties(n int) map[string]string {
	p := make(map[string]string, n)
	for i := range n {
		p[fmt.Sprintf("key-%d", i)] = strings.Repeat("v", i)
	}
	return p
}

// TestDecodeCopiesTheRecord: what decode returns must not change when the
// record's memory does (bbolt owns it only during the transaction).
func TestDecodeCopiesTheRecord(t *testing.T) {
	m := bridge.Message{Topic: "/pk/dev/user/x", MessageID: "id", GenerateTime: 7, Invalid: "why",
		Body: []byte("body"), Properties: map[string]string{"a": "b", "qos": "1"}}
	v := encode(&m)
	got, err := decode(v)
	if err != nil {
		t.Fatal(err)
	}
	for i := range v {
		v[i] = 'Z'
	}
	if !sameMessage(got, m) {
		t.Errorf("decoded %+v changed with the record, want %+v", got, m)
	}
	got.Body[0] = 'X' // the body is the caller's to change
	if !sameMessage(got, bridge.Message{Topic: m.Topic, MessageID: m.MessageID, GenerateTime: 7, Invalid: "why",
		Body: []byte("Xody"), Properties: m.Properties}) {
		t.Errorf("changing the body changed other fields: %+v", got)
	}
}

// TestDecodeAllocations: the feeder decodes every message it reads back, so
// decode allocates the text fields and the body once, together, and the
// properties' map (two allocations: the map and its one group of slots),
// not once per field.
func TestDecodeAllocations(t *testing.T) {
	m := bridge.Message{Topic: "/a1b2c3d4e5f/dev-0001/user/telemetry", MessageID: "1700000000000000001", GenerateTime: 1,
		Body: bytes.Repeat([]byte("x"), 256), Properties: map[string]string{"qos": "1", "content-type": "application/json", "x-trace": "abc"}}
	v := encode(&m)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := decode(v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Errorf("decode of a message with 3 properties: %.0f allocations, want at most 3 (text and body, map)", allocs)
	}
}

func TestDecodeRejectsDamage(t *testing.T) {
	m := bridge.Message{Topic: "/pk/dev/user/x", MessageID: "id", Body: []byte("body"), Properties: map[string]string{"a": "b"}}
	v := encode(&m)
	for n := 0; n < len(v); n++ {
		if _, err := decode(v[:n]); err == nil {
			t.Errorf("decode of the first %d of %d bytes succeeded", n, len(v))
		}
	}
	for i := range v {
		w := bytes.Clone(v)
		w[i] ^= 0x40
		if _, err := decode(w); err == nil {
			t.Errorf("decode with byte %d flipped succeeded", i)
		}
	}
}

func TestRestartReplaysWhatWasNotDeleted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	var keys []uint64
	for i := range 20 {
		keys = append(keys, add(t, s, msg(i)))
	}
	var want []string
	for i, k := range keys {
		if i%3 == 0 {
			if err := s.Delete(k); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want = append(want, msg(i).MessageID)
	}
	if err := s.Delete(keys[0], 999999); err != nil { // a repeated and an unknown key are ignored
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // the deletes are durable now, without any sync
		t.Fatal(err)
	}
	before := s.Stats()

	s = open(t, Options{Dir: dir})
	got := replayAll(t, s)
	if g := ids(got); strings.Join(g, ",") != strings.Join(want, ",") {
		t.Fatalf("after restart replayed %v, want %v", g, want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].key <= got[i-1].key {
			t.Fatalf("keys not increasing: %d after %d", got[i].key, got[i-1].key)
		}
	}
	if after := s.Stats(); after != before {
		t.Errorf("Stats after restart = %+v, before = %+v", after, before)
	}
	// Keys keep growing across restarts, so a key is never reused.
	if k := add(t, s, msg(100)); k <= keys[len(keys)-1] {
		t.Errorf("new key %d after restart, last key before was %d", k, keys[len(keys)-1])
	}
}

func TestReplayDoesNotSeeLaterAppendsAndStopsOnError(t *testing.T) {
	s := open(t, Options{})
	for i := range replayPage + 10 { // more than one page of reads
		add(t, s, msg(i))
	}
	n := 0
	err := s.Replay(func(k uint64, m bridge.Message) error {
		if n == 0 {
			add(t, s, msg(-1)) // appended during Replay: not visited
		}
		n++
		return nil
	})
	if err != nil || n != replayPage+10 {
		t.Fatalf("Replay visited %d messages (err %v), want %d", n, err, replayPage+10)
	}
	stop := errors.New("stop")
	n = 0
	err = s.Replay(func(uint64, bridge.Message) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Replay with a failing fn: %d calls, err %v; want 1 call and the fn's error", n, err)
	}
}

func TestFullAndRecovery(t *testing.T) {
	dir := t.TempDir()
	one := int64(len(encode(ptr(msg(0)))) + keyLen)
	s := open(t, Options{Dir: dir, MaxBytes: 10 * one})
	var keys []uint64
	for i := range 10 {
		keys = append(keys, add(t, s, msg(i)))
	}
	m := msg(10)
	err := s.Append(context.Background(), &m, func(uint64, error) { t.Error("done called for a refused Append") })
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Append to a full spool: %v, want ErrFull", err)
	}
	for _, part := range []string{"spool full", dir, "stops consuming"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not mention %q", err, part)
		}
	}
	if !bridge.Retryable(err) {
		t.Errorf("ErrFull must be retryable")
	}
	if err := s.Delete(keys[:3]...); err != nil { // msg(10) and msg(11) are a byte longer than msg(0)
		t.Fatal(err)
	}
	s.sync()
	add(t, s, msg(10))
	add(t, s, msg(11))
	if st := s.Stats(); st.Depth != 9 || st.Bytes > st.MaxBytes {
		t.Errorf("Stats = %+v, want 9 messages within the bound", st)
	}

	huge := bridge.Message{MessageID: "huge", Body: make([]byte, 11*one)}
	err = s.Append(context.Background(), &huge, func(uint64, error) {})
	if err == nil || bridge.Retryable(err) || errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "huge") {
		t.Errorf("Append of a message larger than the spool: %v, want a permanent error naming it", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestPartialCommitSaysWhatWasNotStored: a commit of 4 messages on a
// disk with room for one stores the first and not the other 3; their
// error says that 3 were not stored, where it said that nothing of the
// commit was (mend2 left it).
func TestPartialCommitSaysWhatWasNotStored(t *testing.T) {
	disk := &roomFor{}
	disk.set(1 << 20)
	blocked, release := make(chan struct{}), make(chan struct{})
	var first sync.Once
	s := open(t, Options{commitHook: func(appends int) error {
		first.Do(func() { close(blocked); <-release }) // the first commit waits while the next 4 queue
		return disk.hook(appends)
	}})
	type result struct {
		id  string
		err error
	}
	results := make(chan result, 5)
	appendOne := func(i int) {
		m := msg(i)
		if err := s.Append(context.Background(), &m, func(_ uint64, err error) { results <- result{m.MessageID, err} }); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(0)
	<-blocked
	for i := 1; i <= 4; i++ {
		appendOne(i)
	}
	disk.set(2) // m-0 fits, then one of the next 4
	close(release)
	var stored []string
	for range 5 {
		r := <-results
		switch {
		case r.err == nil:
			stored = append(stored, r.id)
		case !errors.Is(r.err, syscall.ENOSPC) || !strings.Contains(r.err.Error(), "3 messages were not stored") ||
			strings.Contains(r.err.Error(), "nothing of this commit"):
			t.Errorf("%s: %v, want ENOSPC saying 3 messages were not stored", r.id, r.err)
		}
	}
	if strings.Join(stored, ",") != "m-0,m-1" {
		t.Errorf("stored %v, want m-0,m-1", stored)
	}
}

// TestCommitErrorInjected fails transactions from inside (as a write error
// would) and checks that waiting Appends get the error, nothing of the
// failed commits is visible, queued deletes survive, and the spool works
// again afterwards.
func TestCommitErrorInjected(t *testing.T) {
	var failing atomic.Bool
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, commitHook: func(int) error {
		if failing.Load() {
			return syscall.ENOSPC
		}
		return nil
	}})
	k0 := add(t, s, msg(0))
	add(t, s, msg(1))
	before := s.Stats()

	failing.Store(true)
	if err := s.Delete(k0); err != nil {
		t.Fatal(err)
	}
	const n = 50
	errs := make(chan error, n)
	for i := range n {
		m := msg(100 + i)
		if err := s.Append(context.Background(), &m, func(_ uint64, err error) { errs <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		err := <-errs
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free disk space") {
			t.Fatalf("done got %v, want ENOSPC with advice", err)
		}
	}
	// The counts are as before; CommitError says the commits fail.
	if st, want := s.Stats(), before; !strings.Contains(st.CommitError, syscall.ENOSPC.Error()) {
		t.Errorf("Stats after failed commits = %+v, want CommitError to say %q", st, syscall.ENOSPC.Error())
	} else if want.CommitError = st.CommitError; st != want {
		t.Errorf("Stats after failed commits = %+v, want %+v", st, want)
	}
	if got := ids(replayAll(t, s)); strings.Join(got, ",") != "m-0,m-1" {
		t.Errorf("replayed %v after failed commits, want m-0,m-1", got)
	}

	failing.Store(false)
	add(t, s, msg(2)) // commits the retained delete of m-0 too
	if got := ids(replayAll(t, s)); strings.Join(got, ",") != "m-1,m-2" {
		t.Errorf("replayed %v after recovery, want m-1,m-2", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir})
	if got := ids(replayAll(t, s)); strings.Join(got, ",") != "m-1,m-2" {
		t.Errorf("replayed %v after restart, want m-1,m-2", got)
	}
}

// TestFileCannotGrow lets bbolt fail for real while writing: its file may
// not grow past a limit, as on a full disk. Committed messages stay, failed
// ones never appear, and deletes make room for new ones.
func TestFileCannotGrow(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, maxFileSize: 512 << 10})
	body := bytes.Repeat([]byte("x"), 1000)
	var committed []uint64
	var failure error
	for i := 0; i < 2000 && failure == nil; i++ {
		m := bridge.Message{MessageID: fmt.Sprint(i), Body: body}
		ch := make(chan result, 1)
		if err := s.Append(context.Background(), &m, func(k uint64, err error) { ch <- result{k, err} }); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil {
			failure = r.err
			break
		}
		committed = append(committed, r.key)
	}
	if !errors.Is(failure, berrors.ErrMaxSizeReached) {
		t.Fatalf("after %d messages: %v, want the file size limit to fail a commit", len(committed), failure)
	}
	got := replayAll(t, s)
	if len(got) != len(committed) || got[len(got)-1].key != committed[len(committed)-1] {
		t.Fatalf("replayed %d messages, committed %d", len(got), len(committed))
	}
	if err := s.Delete(committed...); err != nil {
		t.Fatal(err)
	}
	s.sync()
	for i := range 50 {
		add(t, s, bridge.Message{MessageID: fmt.Sprint("after-", i), Body: body})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir})
	if got := replayAll(t, s); len(got) != 50 || got[0].m.MessageID != "after-0" {
		t.Errorf("after restart replayed %d messages starting %q, want the 50 appended after the deletes", len(got), ids(got[:1]))
	}
}

func TestConcurrentAppendsAndDeletes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	const producers, each = 8, 300
	var (
		mu   sync.Mutex
		kept = map[uint64]string{}
		seen = map[uint64]bool{}
		wg   sync.WaitGroup
	)
	wg.Add(producers * each)
	for p := range producers {
		go func() {
			for i := range each {
				m := msg(p*each + i)
				id := m.MessageID
				err := s.Append(context.Background(), &m, func(k uint64, err error) {
					defer wg.Done()
					if err != nil {
						t.Errorf("commit %s: %v", id, err)
						return
					}
					mu.Lock()
					if seen[k] {
						t.Errorf("key %d given twice", k)
					}
					seen[k] = true
					mu.Unlock()
					if k%2 == 0 {
						if err := s.Delete(k); err != nil { // from done, as the pipeline may
							t.Error(err)
						}
						return
					}
					mu.Lock()
					kept[k] = id
					mu.Unlock()
				})
				if err != nil {
					t.Error(err)
					wg.Done()
				}
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir})
	got := replayAll(t, s)
	if len(got) != len(kept) {
		t.Fatalf("replayed %d messages, want %d", len(got), len(kept))
	}
	for i, g := range got {
		if kept[g.key] != g.m.MessageID || (i > 0 && g.key <= got[i-1].key) {
			t.Fatalf("replayed key %d as %q (want %q), previous key %d", g.key, g.m.MessageID, kept[g.key], got[max(i-1, 0)].key)
		}
	}
	if st := s.Stats(); st.Depth != int64(len(kept)) {
		t.Errorf("Depth = %d, want %d", st.Depth, len(kept))
	}
}

// TestCloseCommitsEverythingAccepted uses a linger far longer than the test:
// only Close can commit.
func TestCloseCommitsEverythingAccepted(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	k := add(t, s, msg(0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir, CommitInterval: 1 << 62})
	if err := s.Delete(k); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	for i := range 10 {
		if err := appendCounted(t, s, msg(i+1), &done); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if done.Load() != 10 {
		t.Fatalf("%d done calls when Close returned, want 10", done.Load())
	}
	m := msg(99)
	if err := s.Append(context.Background(), &m, func(uint64, error) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if err := s.Delete(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s = open(t, Options{Dir: dir})
	if got := ids(replayAll(t, s)); len(got) != 10 || got[0] != "m-1" {
		t.Errorf("replayed %v, want m-1..m-10", got)
	}
}

// TestBackpressure blocks the writer inside a commit, fills the queue, and
// checks that Append then waits: a done ctx or Close ends the wait.
func TestBackpressure(t *testing.T) {
	release := make(chan struct{})
	committing := make(chan struct{}, 1)
	var blocked atomic.Bool
	blocked.Store(true)
	s := open(t, Options{CommitInterval: -1, commitHook: func(int) error {
		if blocked.Load() {
			select {
			case committing <- struct{}{}:
			default:
			}
			<-release
		}
		return nil
	}})
	var accepted, done atomic.Int64
	// The writer takes its batch (everything queued) before it commits:
	// the queue stays full only once it is stuck in a commit. So one
	// Append first, and the queue is filled once its commit has begun
	// (filling it before, a writer that ran late drained it, and the
	// Append below found room: 8 of 20 runs with -cpu 1).
	if err := appendCounted(t, s, msg(0), &done); err != nil {
		t.Fatal(err)
	}
	accepted.Add(1)
	<-committing
	for len(s.reqs) < cap(s.reqs) {
		if err := appendCounted(t, s, msg(int(accepted.Load())), &done); err != nil {
			t.Fatal(err)
		}
		accepted.Add(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := msg(-1)
	if err := s.Append(ctx, &m, func(uint64, error) { t.Error("done called for a cancelled Append") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append on a full queue with a cancelled ctx: %v", err)
	}

	waiting := make(chan error)
	go func() {
		m := msg(-2)
		waiting <- s.Append(context.Background(), &m, func(uint64, error) { t.Error("done called for an Append refused by Close") })
	}()
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("Append blocked during Close: %v, want ErrClosed", err)
	}
	blocked.Store(false)
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if done.Load() != accepted.Load() {
		t.Errorf("%d done calls for %d accepted Appends", done.Load(), accepted.Load())
	}
}

// TestOpenTakesOptionsAsGiven: the spool has no defaults of its own (they
// are config.Default()'s): a CommitInterval of 0, which config accepts for
// spool.commit_interval, commits without lingering, as a negative one does,
// instead of standing for a default linger.
func TestOpenTakesOptionsAsGiven(t *testing.T) {
	for _, d := range []time.Duration{0, -1, 3 * time.Millisecond} {
		s, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1 << 20, CommitInterval: d})
		if err != nil {
			t.Fatal(err)
		}
		if s.linger != d || s.maxBytes != 1<<20 {
			t.Errorf("Open with CommitInterval %s, MaxBytes 1MiB: the writer lingers %s, bounds %d bytes", d, s.linger, s.maxBytes)
		}
		s.Close()
	}
}

func TestOpenErrors(t *testing.T) {
	t.Run("no dir", func(t *testing.T) {
		if _, err := Open(Options{}); err == nil || !strings.Contains(err.Error(), "no directory given (Options.Dir)") {
			t.Errorf("Open without Dir: %v", err)
		}
	})
	t.Run("no size bound", func(t *testing.T) {
		for _, n := range []int64{0, -1} {
			if _, err := Open(Options{Dir: t.TempDir(), MaxBytes: n}); err == nil || !strings.Contains(err.Error(), "(Options.MaxBytes)") {
				t.Errorf("Open with MaxBytes %d: %v, want an error naming Options.MaxBytes", n, err)
			}
		}
	})
	t.Run("dir is a file", func(t *testing.T) {
		f := testfile.Write(t, t.TempDir(), "file", "")
		if _, err := Open(withDefaults(Options{Dir: f})); err == nil || !strings.Contains(err.Error(), "writable") {
			t.Errorf("Open on a file: %v", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		s := open(t, Options{})
		_, err := Open(withDefaults(Options{Dir: filepath.Dir(s.path)}))
		if err == nil || !strings.Contains(err.Error(), "another process") {
			t.Errorf("second Open of the same dir: %v", err)
		}
	})
	t.Run("not a bbolt file", func(t *testing.T) {
		dir := t.TempDir()
		testfile.Write(t, dir, FileName, strings.Repeat("\xab", 16<<10))
		if _, err := Open(withDefaults(Options{Dir: dir})); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open of garbage: %v, want ErrCorrupt", err)
		}
	})
	t.Run("damaged record", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, Options{Dir: dir})
		add(t, s, msg(0))
		k := add(t, s, msg(1))
		s.Close()
		db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketName)
			kb := binary8(k)
			v := bytes.Clone(b.Get(kb))
			v[len(v)-1] ^= 1
			return b.Put(kb, v)
		})
		db.Close()
		_, err = Open(withDefaults(Options{Dir: dir}))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("message %d", k)) {
			t.Errorf("Open with a damaged record: %v, want ErrCorrupt naming message %d", err, k)
		}
	})
}

func binary8(k uint64) []byte {
	b := make([]byte, 8)
	for i := range 8 {
		b[i] = byte(k >> (56 - 8*i))
	}
	return b
}

// TestPageSize: a new spool file gets filePageSize, 4 KiB; a file made with
// another page size (the spools of 16 KiB pages) keeps it and its
// messages, and grows with it.
func TestPageSize(t *testing.T) {
	s := open(t, Options{})
	if got := s.db.Info().PageSize; got != 4096 || filePageSize != 4096 {
		t.Errorf("new file: page size %d (filePageSize %d), want 4096", got, filePageSize)
	}
	dir := t.TempDir()
	s = open(t, Options{Dir: dir, pageSize: 16384})
	for i := range 3 {
		add(t, s, msg(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		s = open(t, Options{Dir: dir})
		if got := s.db.Info().PageSize; got != 16384 {
			t.Errorf("reopened file: page size %d, want the 16384 it was made with", got)
		}
		for i := range 200 { // more than fit in the pages it had
			add(t, s, msg(1000*(round+1)+i))
		}
		if got := len(replayAll(t, s)); got != 3+200*(round+1) {
			t.Errorf("round %d: replayed %d messages, want %d", round, got, 3+200*(round+1))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1 << 30: "1.0 GiB", 3 << 29: "1.5 GiB"} {
		if got := formatBytes(n); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestSpoolHoldsThePayload: a message whose body is the platform's base64
// (bridge.Message.Base64) is stored, and replayed, as the payload.
func TestSpoolHoldsThePayload(t *testing.T) {
	m := bridge.Message{MessageID: "1", Topic: "/a/b/user/c", Body: []byte("aGk="), Base64: true}
	got, err := decode(encode(&m))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Body) != "hi" || got.Base64 || got.Invalid != "" {
		t.Fatalf("stored %+v, want the payload \"hi\"", got)
	}
	if !m.Base64 || string(m.Body) != "aGk=" {
		t.Fatalf("encode changed the message it was given: %+v", m)
	}
}

// TestPendingBytesAreBounded: while a commit is slow, Append waits once
// maxPending bytes wait for a commit, whatever the message count: 45 KB
// messages stop at about 180, far below the queue's 4,096 slots.
func TestPendingBytesAreBounded(t *testing.T) {
	release := make(chan struct{})
	s := open(t, Options{CommitInterval: -1, commitHook: func(int) error { <-release; return nil }})
	const n = 400
	var accepted, done atomic.Int64
	fed := make(chan error, 1)
	go func() {
		for i := range n {
			m := msg(i)
			m.Body = bytes.Repeat([]byte{'x'}, 45<<10)
			if err := appendCounted(t, s, m, &done); err != nil {
				fed <- err
				return
			}
			accepted.Add(1)
		}
		fed <- nil
	}()
	pending := func() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.reserved }
	deadline := time.Now().Add(time.Minute)
	for pending()+45<<10+1024 <= maxPending {
		if time.Now().After(deadline) {
			t.Fatalf("pending bytes stayed at %d", pending())
		}
		time.Sleep(time.Millisecond)
	}
	if p, a := pending(), accepted.Load(); p > maxPending || a >= n {
		t.Fatalf("%d bytes pending after %d Appends: want at most %d and Append waiting", p, a, maxPending)
	}
	close(release)
	if err := <-fed; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if done.Load() != n {
		t.Fatalf("%d of %d Appends committed", done.Load(), n)
	}
}

// CommitStats counts the commits, the messages they stored and the time they
// took since Open: the metrics in which a slow disk (an SD card's
// fdatasync of 100 ms and more) shows, as a commit's time, while the
// source's rate alone hides it.
func TestCommitStatsCountCommits(t *testing.T) {
	s := open(t, Options{Dir: t.TempDir(), CommitInterval: -1})
	if st := s.CommitStats(); st != (CommitStats{}) {
		t.Errorf("a new spool's CommitStats %+v: want no commits", st)
	}
	for i := range 3 {
		add(t, s, msg(i))
	}
	if st := s.CommitStats(); st.Commits != 3 || st.Messages != 3 || st.Time <= 0 {
		t.Errorf("CommitStats %+v after 3 Appends committed one by one: want 3 commits of 3 messages and their time", st)
	}
}
