// Package deadletter writes and reads the local dead-letter file: messages
// that the bridge could not deliver (a permanent MNS error, the retry budget
// spent, no route, a body that cannot be forwarded), one JSON object per
// line (JSONL), with the original body in base64, the reason and the time.
//
// A message may be settled upstream once Write has returned nil for it: the
// line is then on disk (fsynced). A failed Write leaves nothing of its
// entries in the file. `iot-mns-bridge replay` reads the file back with
// ReadFile and sends the messages through the routes again.
//
// Targets is the pipeline's dead-letter sink (bridge.DeadLetterSink): it
// writes each entry to the file, to an MNS queue, or to both.
package deadletter

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Entry is one dead-lettered message, one line of the file.
type Entry struct {
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
	// Destination is "queue x" or "topic y" when a route was found.
	Destination  string            `json:"destination,omitempty"`
	Topic        string            `json:"topic"`
	MessageID    string            `json:"messageId"`
	GenerateTime int64             `json:"generateTime,omitempty"`
	Body         []byte            `json:"body"` // the original body, base64 in JSON
	Properties   map[string]string `json:"properties,omitempty"`
	Attempts     int               `json:"attempts,omitempty"`
}

// NewEntry returns the entry for m, dead-lettered at now for reason. The
// caller fills Destination and Attempts when it knows them.
func NewEntry(m bridge.Message, reason string, now time.Time) Entry {
	// The file holds the payload, not the platform's base64 of it.
	if err := m.DecodeBody(); err != nil {
		reason += "; " + err.Error()
	}
	return Entry{
		Time:         now.UTC(),
		Reason:       reason,
		Topic:        m.Topic,
		MessageID:    m.MessageID,
		GenerateTime: m.GenerateTime,
		Body:         m.Body,
		Properties:   m.Properties,
	}
}

// Message returns the message the entry holds, for replay.
func (e Entry) Message() bridge.Message {
	return bridge.Message{
		Topic:        e.Topic,
		MessageID:    e.MessageID,
		GenerateTime: e.GenerateTime,
		Body:         e.Body,
		Properties:   e.Properties,
	}
}

// ErrLocked is wrapped by the error of OpenFile when another File (another
// process: a running bridge) holds the file.
var ErrLocked = errors.New("locked by another process")

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("dead-letter file closed")

// file is what File needs of an *os.File; tests inject faults through it.
type file interface {
	WriteAt(p []byte, off int64) (int, error)
	Truncate(size int64) error
	Sync() error
	Stat() (os.FileInfo, error)
	Close() error
}

// FullError is returned by Write when the entries would take the file past
// its size bound. Nothing is written; the caller holds the messages and
// tries again later. Writes succeed again once the file has room: when it
// was moved away (a new file is started) or truncated, or the bound raised.
type FullError struct {
	Path      string
	Size, Max int64 // the file's size and its bound
	Need      int   // bytes the entries need
}

func (e *FullError) Error() string {
	return fmt.Sprintf("deadletter: %s is full: it holds %d bytes and %d more would pass its bound of %d bytes; "+
		"the messages are held (the source pauses) until there is room: replay the file with `iot-mns-bridge replay`, then move it away (a new file is started), or raise the bound",
		e.Path, e.Size, e.Need, e.Max)
}

// File appends entries to a dead-letter file. It is safe for concurrent
// use; concurrent Writes are committed together with one fsync. The File
// holds an exclusive lock on the file until Close, so two bridges cannot
// interleave lines.
type File struct {
	path string
	max  int64 // size bound; 0 = none

	mu      sync.Mutex
	idle    sync.Cond // signalled when a leader stops writing
	writing bool      // a Write is flushing (the leader); others join pending
	pending *batch
	closed  bool

	// Owned by the leader while writing is true.
	f     file
	size  int64 // end of the last complete line
	dirty bool  // bytes after size may exist: a failed write could not be truncated
}

type batch struct {
	buf  []byte
	n    int
	done chan struct{}
	err  error
}

// OpenFile opens the dead-letter file at path for appending, creating it
// with mode 0600. Its directory must exist. If the file ends in a torn line
// (a crash during a write that was never confirmed), a newline is added so
// that the fragment stays visible to ReadFile as a corrupt line instead of
// spoiling the next entry. The file has no size bound.
func OpenFile(path string) (*File, error) {
	return OpenFileBounded(path, 0)
}

// OpenFileBounded is OpenFile with a size bound: a Write that would take
// the file past maxBytes fails with a *FullError and writes nothing, so the
// disk use stays within the bound (a file already larger stays as it is).
// maxBytes 0 means no bound.
func OpenFileBounded(path string, maxBytes int64) (*File, error) {
	f, size, err := open(path)
	if err != nil {
		return nil, err
	}
	df := &File{path: path, max: maxBytes, f: f, size: size}
	df.idle.L = &df.mu
	return df, nil
}

// open opens and locks path and repairs its tail; it returns the size.
func open(path string) (*os.File, int64, error) {
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, 0, fmt.Errorf("deadletter: open %s: directory %s does not exist; create it, writable by the bridge's user, or change the dead-letter file path", path, dir)
	case err != nil:
		return nil, 0, fmt.Errorf("deadletter: open %s: %w", path, err)
	case !st.IsDir():
		return nil, 0, fmt.Errorf("deadletter: open %s: %s is not a directory", path, dir)
	}
	fst, statErr := os.Stat(path)
	if statErr == nil && fst.IsDir() {
		return nil, 0, fmt.Errorf("deadletter: open %s: it is a directory: name a file in it, like %s", path, filepath.Join(path, "dead-letter.jsonl"))
	}
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said once, first
		}
		return nil, 0, fmt.Errorf("deadletter: open %s: %w; the file and its directory must be writable by the bridge's user", path, err)
	}
	if err := lock(f); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("deadletter: open %s: %w; is another bridge writing the same dead-letter file?", path, err)
	}
	size, err := repairTail(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("deadletter: open %s: %w", path, err)
	}
	if created {
		if err := syncDir(dir); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("deadletter: open %s: sync directory: %w", path, err)
		}
	}
	return f, size, nil
}

// repairTail returns the file's size after making sure it ends in a newline.
func repairTail(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if size == 0 {
		return 0, nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, size-1); err != nil {
		return 0, fmt.Errorf("read the last byte: %w", err)
	}
	if last[0] == '\n' {
		return size, nil
	}
	if _, err := f.WriteAt([]byte{'\n'}, size); err != nil {
		return 0, fmt.Errorf("end the torn last line: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("end the torn last line: %w", err)
	}
	return size + 1, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Write appends one line per entry and returns after they are fsynced. It
// blocks while another Write's fsync is running; the Writes that arrive
// meanwhile are committed together by the next fsync. On error (disk full,
// I/O error) none of the entries is in the file, and later Writes may
// succeed once the cause is fixed. (Should even truncating the failed bytes
// away fail, they are removed before the next write.)
func (f *File) Write(entries ...Entry) error {
	if len(entries) == 0 {
		return nil
	}
	var lines []byte
	for i := range entries {
		b, err := json.Marshal(&entries[i])
		if err != nil {
			return fmt.Errorf("deadletter: encode entry for message %q: %w", entries[i].MessageID, err)
		}
		lines = append(append(lines, b...), '\n')
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("deadletter: write %s: %w", f.path, ErrClosed)
	}
	mine := f.pending
	if mine == nil {
		mine = &batch{done: make(chan struct{})}
		f.pending = mine
	}
	mine.buf = append(mine.buf, lines...)
	mine.n += len(entries)
	if f.writing {
		f.mu.Unlock()
		<-mine.done
		return mine.err
	}
	// Leader: flush batches until none is waiting.
	f.writing = true
	for f.pending != nil {
		b := f.pending
		f.pending = nil
		f.mu.Unlock()
		b.err = f.flush(b.buf, b.n)
		close(b.done)
		f.mu.Lock()
	}
	f.writing = false
	f.idle.Broadcast()
	f.mu.Unlock()
	return mine.err
}

// flush writes buf at the end of the last good line and fsyncs; on error it
// truncates the file back. Only the leader calls it.
func (f *File) flush(buf []byte, n int) error {
	if f.dirty {
		if err := f.f.Truncate(f.size); err != nil {
			return fmt.Errorf("deadletter: write %d entries to %s: remove the remains of an earlier failed write: %w; free disk space or repair the disk, the messages stay unsettled and are retried", n, f.path, err)
		}
		f.dirty = false
	}
	if f.max > 0 && f.size+int64(len(buf)) > f.max {
		f.reopenIfMoved()
		if f.size+int64(len(buf)) > f.max {
			return &FullError{Path: f.path, Size: f.size, Max: f.max, Need: len(buf)}
		}
	}
	_, err := f.f.WriteAt(buf, f.size)
	if err == nil {
		err = f.f.Sync()
	}
	if err != nil {
		if terr := f.f.Truncate(f.size); terr != nil {
			f.dirty = true
		} else {
			_ = f.f.Sync() // best effort: the truncation is redone before the next write if it did not stick
		}
		return fmt.Errorf("deadletter: write %d entries to %s: %w; nothing was written: free disk space or repair the disk, the messages stay unsettled and are retried", n, f.path, err)
	}
	f.size += int64(len(buf))
	return nil
}

// reopenIfMoved gives a full file a second look: when the operator moved it
// away (or deleted it), a new file is started at the path; when they
// truncated it, writing goes on at its new end. Only the leader calls it.
func (f *File) reopenIfMoved() {
	cur, err := f.f.Stat()
	if err != nil {
		return
	}
	onDisk, err := os.Stat(f.path)
	if err == nil && os.SameFile(cur, onDisk) {
		if cur.Size() < f.size && !f.dirty {
			f.size = cur.Size()
		}
		return
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return
	}
	nf, size, err := open(f.path)
	if err != nil {
		return // still full; the error says what to do
	}
	_ = f.f.Close()
	f.f, f.size, f.dirty = nf, size, false
}

// Close waits for a running Write and closes the file. Later Writes fail
// with ErrClosed; a second Close returns nil.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	for f.writing {
		f.idle.Wait()
	}
	f.mu.Unlock()
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("deadletter: close %s: %w", f.path, err)
	}
	return nil
}

// LineError is a line of a dead-letter file that is not an entry.
type LineError struct {
	Path string
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("deadletter: %s line %d is not a dead-letter entry: %v", e.Path, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ReadFile calls fn for each entry of the dead-letter file at path, with its
// 1-based line number, in file order. Blank lines are ignored. It stops at
// the first corrupt line with a *LineError naming it (use ReadFileSkipping
// to go on), and at fn's first error, which it returns as is.
func ReadFile(path string, fn func(lineNo int, e Entry) error) error {
	return ReadFileSkipping(path, fn, nil)
}

// ReadFileSkipping is ReadFile, but hands every corrupt line to onCorrupt:
// when it returns nil the line is skipped and reading goes on; its error
// stops reading and is returned. A nil onCorrupt behaves as ReadFile.
func ReadFileSkipping(path string, fn func(lineNo int, e Entry) error, onCorrupt func(err *LineError) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("deadletter: read: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	for lineNo := 1; ; lineNo++ {
		line, rerr := br.ReadBytes('\n')
		if text := bytes.TrimSpace(line); len(text) > 0 {
			e, perr := parse(text)
			switch {
			case perr != nil:
				le := &LineError{Path: path, Line: lineNo, Err: perr}
				if onCorrupt == nil {
					return le
				}
				if err := onCorrupt(le); err != nil {
					return err
				}
			default:
				if err := fn(lineNo, e); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("deadletter: read %s line %d: %w", path, lineNo, rerr)
		}
	}
}

func parse(line []byte) (Entry, error) {
	var e Entry
	if line[0] != '{' {
		return e, errors.New("not a JSON object")
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return e, err
	}
	if e.Time.IsZero() || e.Reason == "" {
		return e, errors.New(`"time" or "reason" is missing`)
	}
	return e, nil
}
