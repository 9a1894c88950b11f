package deadletter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func entry(i int) Entry {
	return Entry{Time: t0, Reason: "MNS QueueNotExist", Destination: "queue q", Topic: "/pk/dev/user/x",
		MessageID: fmt.Sprint("m-", i), Body: []byte(fmt.Sprint(i)), Attempts: 1}
}

func same(a, b Entry) bool {
	return a.Time.Equal(b.Time) && a.Reason == b.Reason && a.Destination == b.Destination && a.Topic == b.Topic &&
		a.MessageID == b.MessageID && a.GenerateTime == b.GenerateTime && bytes.Equal(a.Body, b.Body) &&
		maps.Equal(a.Properties, b.Properties) && a.Attempts == b.Attempts
}

type line struct {
	no int
	e  Entry
}

func readAll(t *testing.T, path string) []line {
	t.Helper()
	var out []line
	if err := ReadFile(path, func(no int, e Entry) error { out = append(out, line{no, e}); return nil }); err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	return out
}

func openFile(t *testing.T, path string) *File {
	t.Helper()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestRoundTrip(t *testing.T) {
	m := bridge.Message{Topic: "/pk/dev/user/ü", MessageID: "id-1", GenerateTime: 1700000000123,
		Body: []byte{0, 0xff, '\n', '"'}, Properties: map[string]string{"qos": "1"}}
	fromMessage := NewEntry(m, "no route", t0)
	tests := []struct {
		name string
		e    Entry
	}{
		{"full", entry(1)},
		{"from a message", fromMessage},
		{"empty body", Entry{Time: t0, Reason: "r", MessageID: "e", Body: []byte{}}},
		{"nil body", Entry{Time: t0, Reason: "r", MessageID: "n"}},
		{"64 KiB body", Entry{Time: t0, Reason: "body over 64 KB", MessageID: "big", Body: bytes.Repeat([]byte{1, 2, 3, 4}, 16<<10)}},
		{"newline in reason", Entry{Time: t0, Reason: "line 1\nline 2", MessageID: "nl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dl.jsonl")
			f := openFile(t, path)
			if err := f.Write(tt.e); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, path)
			if len(got) != 1 || got[0].no != 1 || !same(got[0].e, tt.e) {
				t.Fatalf("read %+v, want line 1 %+v", got, tt.e)
			}
		})
	}
	if got := fromMessage.Message(); got.Topic != m.Topic || got.MessageID != m.MessageID || got.GenerateTime != m.GenerateTime ||
		!bytes.Equal(got.Body, m.Body) || !maps.Equal(got.Properties, m.Properties) {
		t.Errorf("NewEntry(m).Message() = %+v, want %+v", got, m)
	}
}

func TestFileFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	f := openFile(t, path)
	if err := f.Write(Entry{Time: t0, Reason: "r", Topic: "/t", MessageID: "1", Body: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := `{"time":"2024-05-06T07:08:09.123456789Z","reason":"r","topic":"/t","messageId":"1","body":"aGk="}` + "\n"
	if string(b) != want {
		t.Errorf("file holds\n%s\nwant\n%s", b, want)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
}

func TestAppendsAcrossOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	for i := range 3 {
		f, err := OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Write(entry(2*i), entry(2*i+1)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, path)
	if len(got) != 6 {
		t.Fatalf("read %d entries, want 6", len(got))
	}
	for i, g := range got {
		if g.no != i+1 || !same(g.e, entry(i)) {
			t.Errorf("line %d = %+v, want line %d %+v", g.no, g.e, i+1, entry(i))
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenFile(filepath.Join(dir, "missing", "dl.jsonl")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("OpenFile in a missing directory: %v", err)
	}
	notDir := testfile.Write(t, dir, "file", "")
	if _, err := OpenFile(filepath.Join(notDir, "dl.jsonl")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("OpenFile under a file: %v", err)
	}
	// The path once, with the reason and what to do.
	want := "deadletter: open " + dir + ": it is a directory: name a file in it, like " + filepath.Join(dir, "dead-letter.jsonl")
	if _, err := OpenFile(dir); err == nil || err.Error() != want {
		t.Errorf("OpenFile of a directory: %v, want %q", err, want)
	}
	path := filepath.Join(dir, "dl.jsonl")
	openFile(t, path)
	if runtime.GOOS != "windows" {
		if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), "another") {
			t.Errorf("second OpenFile of the same file: %v", err)
		}
	}
}

func TestTornTailStaysVisible(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	f := openFile(t, path)
	f.Write(entry(0))
	f.Close()
	fh, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	fh.WriteString(`{"time":"2024-05-06T07:0`) // a crash in the middle of a write
	fh.Close()

	f = openFile(t, path)
	if err := f.Write(entry(2)); err != nil {
		t.Fatal(err)
	}
	var le *LineError
	if err := ReadFile(path, func(int, Entry) error { return nil }); !errors.As(err, &le) || le.Line != 2 {
		t.Fatalf("ReadFile: %v, want a LineError for line 2", err)
	}
	var got []line
	var skipped []int
	err := ReadFileSkipping(path, func(no int, e Entry) error { got = append(got, line{no, e}); return nil },
		func(le *LineError) error { skipped = append(skipped, le.Line); return nil })
	if err != nil || len(got) != 2 || got[1].no != 3 || !same(got[1].e, entry(2)) || fmt.Sprint(skipped) != "[2]" {
		t.Errorf("ReadFileSkipping: entries %+v, skipped %v, err %v; want lines 1 and 3, line 2 skipped", got, skipped, err)
	}
}

func TestReadCorruptLines(t *testing.T) {
	good := `{"time":"2024-05-06T07:08:09Z","reason":"r","topic":"/t","messageId":"1","body":"aGk="}`
	tests := []struct {
		name     string
		content  string
		wantLine int // 0: no corrupt line
		entries  int // read before the error or in all
	}{
		{"good", good + "\n" + good + "\n", 0, 2},
		{"blank lines", "\n" + good + "\n  \n" + good, 0, 2},
		{"no final newline", good, 0, 1},
		{"not json", good + "\nhello\n" + good + "\n", 2, 1},
		{"empty object", "{}\n", 1, 0},
		{"array", "[1]\n", 1, 0},
		{"bad base64", `{"time":"2024-05-06T07:08:09Z","reason":"r","body":"!!"}` + "\n", 1, 0},
		{"truncated", good[:40] + "\n", 1, 0},
		{"crlf", good + "\r\n", 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := testfile.Write(t, t.TempDir(), "dl.jsonl", tt.content)
			n := 0
			err := ReadFile(path, func(int, Entry) error { n++; return nil })
			var le *LineError
			switch {
			case tt.wantLine == 0 && err != nil:
				t.Errorf("ReadFile: %v", err)
			case tt.wantLine != 0 && (!errors.As(err, &le) || le.Line != tt.wantLine || !strings.Contains(err.Error(), fmt.Sprintf("line %d", tt.wantLine))):
				t.Errorf("ReadFile: %v, want a LineError naming line %d", err, tt.wantLine)
			}
			if n != tt.entries {
				t.Errorf("fn called %d times, want %d", n, tt.entries)
			}
		})
	}
	stop := errors.New("stop")
	path := testfile.Write(t, t.TempDir(), "dl.jsonl", good+"\n"+good+"\n")
	if err := ReadFile(path, func(int, Entry) error { return stop }); err != stop {
		t.Errorf("ReadFile with a failing fn: %v, want fn's error", err)
	}
	if err := ReadFile(filepath.Join(t.TempDir(), "none"), func(int, Entry) error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile of a missing file: %v", err)
	}
}

// faultyFile wraps the real file and fails on command.
type faultyFile struct {
	*os.File
	mu            sync.Mutex
	writeBudget   int // bytes written before WriteAt fails; <0: never fails
	failSync      bool
	failTruncate  bool
	syncs         int
	syncEntered   chan struct{} // if set, Sync signals here, then waits for syncRelease
	syncRelease   chan struct{}
	writesStarted int
}

func (f *faultyFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writesStarted++
	if f.writeBudget >= 0 && len(p) > f.writeBudget {
		n, _ := f.File.WriteAt(p[:f.writeBudget], off)
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(p, off)
}

func (f *faultyFile) Sync() error {
	f.mu.Lock()
	f.syncs++
	fail, entered, release := f.failSync, f.syncEntered, f.syncRelease
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
		<-release
	}
	if fail {
		return syscall.EIO
	}
	return f.File.Sync()
}

func (f *faultyFile) Truncate(n int64) error {
	f.mu.Lock()
	fail := f.failTruncate
	f.mu.Unlock()
	if fail {
		return syscall.EIO
	}
	return f.File.Truncate(n)
}

func withFaults(t *testing.T, path string) (*File, *faultyFile) {
	f := openFile(t, path)
	ff := &faultyFile{File: f.f.(*os.File), writeBudget: -1}
	f.f = ff
	return f, ff
}

func TestWriteFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name   string
		set    func(*faultyFile)
		errIs  error
		broken bool // the failed write could not be removed at once
	}{
		{"disk full mid-line", func(f *faultyFile) { f.writeBudget = 30 }, syscall.ENOSPC, false},
		{"disk full between lines", func(f *faultyFile) { f.writeBudget = 0 }, syscall.ENOSPC, false},
		{"fsync fails", func(f *faultyFile) { f.failSync = true }, syscall.EIO, false},
		{"truncate fails too", func(f *faultyFile) { f.writeBudget = 30; f.failTruncate = true }, syscall.ENOSPC, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dl.jsonl")
			f, ff := withFaults(t, path)
			if err := f.Write(entry(0)); err != nil {
				t.Fatal(err)
			}
			ff.mu.Lock()
			tt.set(ff)
			ff.mu.Unlock()
			err := f.Write(entry(1), entry(2))
			if !errors.Is(err, tt.errIs) || !strings.Contains(err.Error(), "free disk space") || !strings.Contains(err.Error(), path) {
				t.Fatalf("Write: %v, want %v naming the file and saying what to do", err, tt.errIs)
			}
			if !tt.broken {
				if got := readAll(t, path); len(got) != 1 || !same(got[0].e, entry(0)) {
					t.Errorf("after the failed write the file holds %d entries, want only the first", len(got))
				}
			}
			ff.mu.Lock()
			ff.writeBudget, ff.failSync, ff.failTruncate = -1, false, false // space returns
			ff.mu.Unlock()
			if err := f.Write(entry(3)); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, path)
			if len(got) != 2 || !same(got[0].e, entry(0)) || !same(got[1].e, entry(3)) || got[1].no != 2 {
				t.Errorf("after recovery read %+v, want entries 0 and 3 on lines 1 and 2", got)
			}
		})
	}
}

// TestGroupCommit holds the first Write inside its fsync until every other
// writer has queued, then checks that they all share one more fsync.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	f, ff := withFaults(t, path)
	ff.syncEntered = make(chan struct{})
	ff.syncRelease = make(chan struct{})
	const writers = 20
	errs := make(chan error, writers)
	go func() { errs <- f.Write(entry(0)) }()
	<-ff.syncEntered // the leader is in its fsync
	for i := 1; i < writers; i++ {
		go func() { errs <- f.Write(entry(i)) }()
	}
	for queued := 0; queued < writers-1; {
		runtime.Gosched()
		f.mu.Lock()
		if f.pending != nil {
			queued = f.pending.n
		}
		f.mu.Unlock()
	}
	ff.syncRelease <- struct{}{} // the leader's fsync
	<-ff.syncEntered             // the group's fsync
	ff.syncRelease <- struct{}{}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if ff.syncs != 2 {
		t.Errorf("%d writers used %d fsyncs, want 2", writers, ff.syncs)
	}
	seen := map[string]bool{}
	for _, l := range readAll(t, path) {
		seen[l.e.MessageID] = true
	}
	if len(seen) != writers {
		t.Errorf("read %d distinct entries, want %d", len(seen), writers)
	}
}

func TestConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dl.jsonl")
	f := openFile(t, path)
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := f.Write(entry(w*each + i)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(entry(0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close: %v, want ErrClosed", err)
	}
	got := readAll(t, path)
	seen := map[string]bool{}
	for _, l := range got {
		if seen[l.e.MessageID] {
			t.Errorf("%s written twice", l.e.MessageID)
		}
		seen[l.e.MessageID] = true
	}
	if len(seen) != writers*each {
		t.Errorf("read %d entries, want %d", len(seen), writers*each)
	}
}

// BenchmarkWrite measures durable dead-letter writes of one 256-byte
// message each from 1 and 8 concurrent writers; one op is one entry.
func BenchmarkWrite(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			f, err := OpenFile(filepath.Join(b.TempDir(), "dl.jsonl"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			ff := &faultyFile{File: f.f.(*os.File), writeBudget: -1}
			f.f = ff
			e := entry(0)
			e.Body = bytes.Repeat([]byte("x"), 256)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < b.N; i += writers {
						if err := f.Write(e); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "entries/s")
			b.ReportMetric(float64(ff.syncs)/elapsed.Seconds(), "fsyncs/s")
		})
	}
}

// TestBoundedFileHoldsAtTheBound: a bounded file refuses the write that
// would pass its bound with a FullError, writes nothing of it, and takes
// writes again once the operator moved the file away (a new file is
// started) or truncated it.
func TestBoundedFileHoldsAtTheBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	line, _ := json.Marshal(entry(0))
	max := int64(3*(len(line)+1) + 10) // room for three entries, not four
	f, err := OpenFileBounded(path, max)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := range 3 {
		if err := f.Write(entry(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	err = f.Write(entry(3))
	var full *FullError
	if !errors.As(err, &full) || full.Max != max || !strings.Contains(err.Error(), "is full") {
		t.Fatalf("write past the bound = %v, want a FullError", err)
	}
	if st, _ := os.Stat(path); st.Size() > max {
		t.Fatalf("file of %d bytes, more than the bound %d", st.Size(), max)
	}
	if n := countEntries(t, path); n != 3 {
		t.Fatalf("%d entries in the file, want 3", n)
	}

	// The operator moves the full file away: a new one is started.
	moved := path + ".1"
	if err := os.Rename(path, moved); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(entry(3)); err != nil {
		t.Fatalf("write after the file was moved away: %v", err)
	}
	if a, b := countEntries(t, moved), countEntries(t, path); a != 3 || b != 1 {
		t.Fatalf("moved file has %d entries, new one %d; want 3 and 1", a, b)
	}

	// Filled again, then truncated in place: writing goes on.
	for i := 4; i < 6; i++ {
		if err := f.Write(entry(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := f.Write(entry(6)); !errors.As(err, &full) {
		t.Fatalf("write past the bound = %v, want a FullError", err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(entry(6)); err != nil {
		t.Fatalf("write after truncation: %v", err)
	}
	if n := countEntries(t, path); n != 1 {
		t.Fatalf("%d entries after truncation and one write, want 1", n)
	}
}

func countEntries(t *testing.T, path string) int {
	t.Helper()
	n := 0
	if err := ReadFile(path, func(int, Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNewEntryHoldsThePayload: a message whose body is the platform's base64
// (bridge.Message.Base64) is written with the payload, like any other.
func TestNewEntryHoldsThePayload(t *testing.T) {
	e := NewEntry(bridge.Message{MessageID: "1", Body: []byte("aGk="), Base64: true}, "rejected", time.Unix(0, 0))
	if string(e.Body) != "hi" || e.Reason != "rejected" {
		t.Fatalf("entry body %q reason %q, want the payload \"hi\"", e.Body, e.Reason)
	}
}
