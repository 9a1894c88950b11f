package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

func TestDedupJournalSurvivesReopenAndStaysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup-window.log")
	log := slog.New(slog.DiscardHandler)
	d := NewDedup(10, time.Hour)
	j, n, err := OpenDedupJournal(path, d, 10, log)
	if err != nil || n != 0 {
		t.Fatalf("open: %d, %v", n, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { j.Run(ctx); close(done) }()
	now := time.Now()
	for i := 0; i < 35; i++ {
		d.Add(fmt.Sprintf("id \"%d\"\n", i), now) // ids with quotes and newlines round-trip
	}
	// Run writes the ids within journalFlush and compacts the file once it
	// holds more than twice the window: wait for the last id to be written
	// and the file to be compacted.
	last := strconv.Quote("id \"34\"\n")
	var lines int
	var written bool
	waitfor.Until(t, "the last id written and the journal compacted", time.Minute, func() bool {
		data, _ := os.ReadFile(path)
		lines, written = strings.Count(string(data), "\n"), strings.Contains(string(data), last)
		return written && lines <= 2*10+journalSlack
	}, func() string {
		return fmt.Sprintf("journal holds %d lines for a window of 10 (last id written: %v): not compacted", lines, written)
	})
	cancel()
	<-done
	j.Close()
	// A torn last line (a crash mid-write) is skipped.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o600)
	f.WriteString("17000000")
	f.Close()

	d2 := NewDedup(10, time.Hour)
	j2, n, err := OpenDedupJournal(path, d2, 10, log)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if n < 10 {
		t.Fatalf("loaded %d ids, want at least the window's 10", n)
	}
	for i := 25; i < 35; i++ {
		if !d2.Seen(fmt.Sprintf("id \"%d\"\n", i), now) {
			t.Errorf("id %d not remembered after reopening", i)
		}
	}
	if d2.Seen("id \"0\"\n", now) {
		t.Error("an id that left the window came back")
	}
}

// TestDedupJournalWritesEachSpellOfIds: Run, which has no ticker, writes
// the ids nobody flushed within journalFlush: those of the first spell of
// traffic, and of each after a quiet spell.
func TestDedupJournalWritesEachSpellOfIds(t *testing.T) {
	d, j, path := openTestJournal(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { j.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for spell := range 3 {
		id := fmt.Sprintf("spell-%d", spell)
		d.Add(id, time.Now())
		var data []byte
		waitfor.Until(t, id+" written by Run", time.Minute, func() bool {
			data, _ = os.ReadFile(path)
			return strings.Contains(string(data), strconv.Quote(id))
		}, func() string { return fmt.Sprintf("journal holds %q", data) })
	}
}

// TestFlushedIdsLeaveRunNothingToWake: the pipeline's Flush writes the ids
// and disarms Run's timer, so a bridge whose pipeline flushes every request
// (and an idle one) does not wake the journal.
func TestFlushedIdsLeaveRunNothingToWake(t *testing.T) {
	d, j, path := openTestJournal(t)
	armed := func() bool {
		j.mu.Lock()
		defer j.mu.Unlock()
		return j.armed
	}
	if armed() {
		t.Fatal("a journal without ids has its timer armed")
	}
	d.Add("a", time.Now())
	if !armed() {
		t.Fatal("an id nobody flushed did not arm the timer: Run would not write it")
	}
	d.Flush()
	if armed() {
		t.Error("Flush wrote the ids but left the timer armed: Run would wake for nothing")
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), `"a"`) {
		t.Errorf("Flush did not write the id: %q", data)
	}
}

// openTestJournal opens a journal of a window of 100 ids in a temporary
// directory, closed when the test ends, and returns the window, the
// journal and the file's path.
func openTestJournal(t *testing.T) (*Dedup, *DedupJournal, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dedup-window.log")
	d := NewDedup(100, time.Hour)
	j, _, err := OpenDedupJournal(path, d, 100, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return d, j, path
}

// journalSlack allows the lines added between two compactions.
const journalSlack = 20

// TestDedupJournalMissingDirectory: a journal path in a directory that does
// not exist is refused with an error naming the directory and what to do,
// not the internal temporary file's "no such file or directory".
func TestDedupJournalMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nodir")
	path := filepath.Join(dir, "dedup-window.log")
	_, _, err := OpenDedupJournal(path, NewDedup(10, time.Hour), 10, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("opened a journal in a missing directory")
	}
	for _, want := range []string{"directory " + dir + " does not exist", "create it"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), ".tmp") {
		t.Errorf("error %q names the internal temporary file", err)
	}
}

// journalChecker is a source that, as each delivery is accepted, reads the
// de-dup journal's file and records the ids it did not find there.
type journalChecker struct {
	path    string
	mu      sync.Mutex
	settled int
	missing []string
}

func (c *journalChecker) Settle(d *Delivery, o Outcome) {
	data, _ := os.ReadFile(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settled++
	if o == Accepted && !strings.Contains(string(data), strconv.Quote(d.MessageID)) {
		c.missing = append(c.missing, d.MessageID)
	}
}

// TestAcceptedIdsAreJournalledBeforeSettling: the id of a message MNS
// accepted is in the journal's file before its delivery is settled
// upstream, so a crash (kill -9) while the settlement waits in the source
// (AMQP's settle linger, the spool's deletes) leaves a redelivery the
// journal suppresses. The journal's own writer (Run) is not running: only
// the pipeline's Flush can have written the ids.
func TestAcceptedIdsAreJournalledBeforeSettling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup-window.log")
	d := NewDedup(100, time.Hour)
	j, _, err := OpenDedupJournal(path, d, 100, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	h := newHarness(t, newFakeSink(nil), func(c *PipelineConfig) { c.Dedup = d })
	src := &journalChecker{path: path}
	for i := 0; i < 40; i++ {
		m := Message{Topic: "/pk/dev/user/up", MessageID: fmt.Sprintf("m%05d", i), Body: []byte("{}")}
		if err := h.p.Handle(context.Background(), NewDelivery(m, src, nil)); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.p.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.settled != 40 || len(src.missing) > 0 {
		t.Fatalf("%d of 40 settled; accepted before their id was in the journal's file: %v", src.settled, src.missing)
	}
}
