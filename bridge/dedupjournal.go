package bridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/rawio"
)

// journalFlush is how soon after it is added a journalled id is handed to
// the kernel when nobody asked sooner: the pipeline writes a request's ids
// (Dedup.Flush) before it settles the request's deliveries. A process crash (kill -9)
// keeps everything written; a machine crash may lose the last ids (no
// fsync), whose redeliveries are then forwarded once more: at-least-once
// either way.
const journalFlush = 50 * time.Millisecond

// DedupJournal makes the de-dup window survive a restart: every id MNS
// accepted is appended to the journal file as "<unix ms> <quoted id>",
// and on start the file is read back into the window. When the file holds
// twice the window's size it is rewritten from the window, so it stays
// bounded. Safe for concurrent use.
type DedupJournal struct {
	path string
	d    *Dedup
	size int
	log  *slog.Logger

	mu    sync.Mutex
	f     *os.File
	buf   []byte
	lines int
	err   error // the last write error, logged once
	// due fires journalFlush after the first line buffered since the last
	// write (armed); a write stops it. So Run wakes only for lines nobody
	// flushed: not while no id is added, nor for the pipeline's ids, which
	// it flushes at once.
	due   *time.Timer
	armed bool
	// compact holds a token once the file holds more than twice the
	// window's size: Run compacts it.
	compact chan struct{}
}

// OpenDedupJournal loads path into d (entries older than the window's age
// are dropped by d itself), compacts the file and journals d's additions
// from now on (Run writes them). It returns how many ids it loaded.
func OpenDedupJournal(path string, d *Dedup, size int, log *slog.Logger) (*DedupJournal, int, error) {
	j := &DedupJournal{path: path, d: d, size: size, log: log, due: time.NewTimer(journalFlush), compact: make(chan struct{}, 1)}
	j.due.Stop()
	if dir := filepath.Dir(path); !isDir(dir) {
		return nil, 0, fmt.Errorf("dedup journal %s: directory %s does not exist; create it, writable by the bridge's user, or change the journal's path", path, dir)
	}
	n, err := j.load()
	if err != nil {
		return nil, 0, err
	}
	if err := j.rewrite(); err != nil {
		return nil, 0, err
	}
	d.SetOnAdd(j.add)
	d.SetOnFlush(j.flush)
	return j, n, nil
}

// load reads the journal into the window; a damaged line (a torn last
// write) is skipped.
func (j *DedupJournal) load() (int, error) {
	n := 0
	err := j.eachLine(func(_ []byte, id string, at time.Time) error {
		j.d.Add(id, at)
		n++
		return nil
	})
	return n, err
}

// eachLine calls fn with every well-formed line of the journal file (the
// line without its newline, and its id and time) until fn fails. A missing
// file has no lines; damaged lines (a torn last write) are skipped.
func (j *DedupJournal) eachLine(fn func(line []byte, id string, at time.Time) error) error {
	f, err := os.Open(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		id, at, ok := parseJournalLine(sc.Text())
		if !ok {
			continue
		}
		if err := fn(sc.Bytes(), id, at); err != nil {
			return err
		}
	}
	return sc.Err()
}

// rewrite replaces the file with its lines that the window still holds
// (see Dedup.Holds: the window keeps keys, not ids, so the ids come from
// the file) and opens it for appending. Every line added so far is in the
// file: rewrite runs at open and in Run after a flush.
func (j *DedupJournal) rewrite() error {
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	kept, err := j.keepLive(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return err
	}
	nf, err := os.OpenFile(j.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	j.mu.Lock()
	old := j.f
	j.f, j.lines = nf, kept
	j.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// keepLive copies the journal's lines that the window still holds to w and
// returns how many. A missing file holds none; damaged lines are dropped.
func (j *DedupJournal) keepLive(w io.Writer) (int, error) {
	now := time.Now()
	kept := 0
	err := j.eachLine(func(line []byte, id string, at time.Time) error {
		if !j.d.Holds(id, at, now) {
			return nil
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return err
		}
		kept++
		return nil
	})
	return kept, err
}

// parseJournalLine reads "<unix ms> <quoted id>".
func parseJournalLine(line string) (string, time.Time, bool) {
	ms, quoted, ok := strings.Cut(line, " ")
	at, err1 := strconv.ParseInt(ms, 10, 64)
	id, err2 := strconv.Unquote(quoted)
	if !ok || err1 != nil || err2 != nil || id == "" {
		return "", time.Time{}, false
	}
	return id, time.UnixMilli(at), true
}

// DedupJournalBytes is about the most disk the journal of a window of size
// ids takes: up to twice size lines before Run compacts it, and beside them
// the compacted copy (size lines at most) while rewrite writes it, for ids
// of the platform's length (19 digits: 36 bytes a line). Longer ids take
// more.
func DedupJournalBytes(size int) uint64 {
	line := len(appendJournalLine(nil, "1796177090813017001", time.UnixMilli(1764547200000)))
	return 3 * uint64(size) * uint64(line)
}

func appendJournalLine(dst []byte, id string, at time.Time) []byte {
	dst = strconv.AppendInt(dst, at.UnixMilli(), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendQuote(dst, id)
	return append(dst, '\n')
}

// add is the window's OnAdd hook: it buffers the line; run writes it.
func (j *DedupJournal) add(id string, at time.Time) {
	j.mu.Lock()
	j.buf = appendJournalLine(j.buf, id, at)
	j.lines++
	if !j.armed {
		j.armed = true
		j.due.Reset(journalFlush)
	}
	if j.lines == 2*j.size+1 {
		select {
		case j.compact <- struct{}{}:
		default: // Run has the token already
		}
	}
	j.mu.Unlock()
}

// Run writes the buffered lines that nobody flushed within journalFlush of
// their adding, and compacts the file when it holds more than twice the
// window's size (a failed compaction is tried again every journalFlush),
// until ctx is done; then it writes what is left. It has no ticker: a
// bridge without traffic, or whose pipeline flushes its ids, does not wake
// it.
func (j *DedupJournal) Run(ctx context.Context) {
	defer j.due.Stop()
	retry := time.NewTimer(journalFlush)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			j.flush()
			return
		case <-j.due.C:
		case <-j.compact:
		case <-retry.C:
		}
		j.flush()
		j.mu.Lock()
		compact := j.lines > 2*j.size
		j.mu.Unlock()
		if compact {
			if err := j.rewrite(); err != nil {
				j.log.Warn("compacting the de-dup journal failed; it keeps growing until this works", "file", j.path, "err", err)
				retry.Reset(journalFlush)
			}
		}
	}
}

func (j *DedupJournal) flush() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.buf) == 0 || j.f == nil {
		return
	}
	_, err := rawio.WriteFile(j.f, j.buf)
	j.buf = j.buf[:0]
	if j.armed {
		j.armed = false
		j.due.Stop()
	}
	if err != nil && j.err == nil {
		j.log.Warn("writing the de-dup journal failed: after a restart, redeliveries of recent messages may be forwarded again", "file", j.path, "err", err)
	} else if err == nil && j.err != nil {
		j.log.Info("writing the de-dup journal works again", "file", j.path)
	}
	j.err = err
}

// Close writes what is buffered and closes the file.
func (j *DedupJournal) Close() error {
	j.flush()
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}

// isDir reports whether path is an existing directory.
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
