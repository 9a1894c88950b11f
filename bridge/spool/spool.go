// Package spool keeps device messages on local disk from their arrival until
// MNS has them, so that neither an MNS outage nor a restart of the bridge
// loses a message that the platform already considers delivered (STOMP
// "ack: auto" settles on receipt).
//
// Messages are appended in group commits: many Appends, and the Deletes
// queued meanwhile, are written by one transaction and made durable by one
// commit. A message is replayed, in arrival order, on every Open until it is
// deleted. The spool is bounded: when the stored messages reach
// Options.MaxBytes, Append fails with ErrFull and the bridge must stop
// consuming until deletes make room. Stage is the glue between a source,
// the spool and the pipeline: it settles a delivery upstream once it is
// durable here and feeds the pipeline from the spool.
//
// # Why bbolt and not a segment log of our own
//
// The store is one bbolt file (go.etcd.io/bbolt), one bucket, keys are
// big-endian uint64 sequence numbers so that key order is arrival order.
// A commit stores its messages in group records (up to 256 messages a
// record, codec.go and group.go): bbolt's cost is per record. Message keys
// stay one per message; a group's record has the key of its first message.
// A message of a group is deleted in memory, the record when its last
// message is; Close rewrites a partly forwarded group with the messages
// left, and after a crash such a group replays whole (duplicates, never
// loss).
//
//   - Crash safety: bbolt is copy-on-write with two checksummed meta pages; a
//     commit is atomic, a crash or a failed write (ENOSPC, EIO) leaves the
//     previous commit intact and the failed one invisible. A segment log has
//     to get torn tails, partial group writes and truncation right by itself.
//   - Deletes: bbolt frees the pages of deleted messages and reuses them, so
//     the file stays at the high-water mark of the spool (it does not shrink;
//     "bbolt compact" does that offline). A segment log frees a segment only
//     when every message in it is deleted, so one message stuck in retries
//     pins every later segment, or the log needs a compactor that rewrites
//     live records and the delete records that still matter.
//   - Fsync cost: a bbolt commit costs two fdatasyncs (pages, then meta) where
//     a segment log needs one. Group commits make that cost per batch, not
//     per message: at a few ms per commit the spool takes tens of thousands
//     of messages per second, well above the platform's push rate (about
//     1,000 messages per second per connection).
//   - Simplicity: the whole package is the group-commit writer and a record
//     codec; the data structure, free-space management and recovery are
//     bbolt's, which etcd runs in production.
//
// Every record also carries a CRC-32C (bbolt checksums only its meta pages);
// Open checks the file and every record and refuses a damaged spool with
// ErrCorrupt instead of dropping what it cannot read.
package spool

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/broadcast"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the spool's file inside Options.Dir.
const FileName = "spool.db"

// deleteLinger is how long queued Deletes wait for Appends to commit with:
// a commit costs two fdatasyncs whatever it holds, deletes are not urgent
// (one that a crash loses replays a message MNS has: a duplicate, never a
// loss), and while the spool drains a backlog (no Appends) a commit per
// deleteLinger takes thousands of deletes instead of hundreds. It is
// longer than the gap between messages of a source down to about 5
// msgs/s: there a message's delete waits for the next message's commit
// instead of a commit of its own (50 ms made two commits a message at 10
// msgs/s, each two fdatasyncs).
const deleteLinger = 250 * time.Millisecond

const (
	queueLen = 4096 // Appends waiting for a commit before Append blocks
	// maxPending bounds the bytes appended and not yet committed: Append
	// waits while they would pass it, so what waits in memory for a commit
	// is bounded in bytes whatever the message size (4,096 messages of
	// 45 KB would be 184 MB), and so is one commit's transaction (bbolt
	// copies it into pages once more). 2 MiB is still thousands of small
	// messages a commit.
	maxPending = 2 << 20
	maxBatch   = 4096 // messages in one commit at most
	// filePageSize is the bbolt page size of a new spool file (an existing
	// file keeps the one it was created with). A commit writes whole pages:
	// at a small box's rates (a few to 50 messages a commit) it writes the
	// leaf of its group record, the bucket's root and the meta page, so the
	// page size sets the bytes an SD card is written a commit. The OS's
	// 4 KiB: at 500 and 5,000 msgs/s about a quarter and 60 % of the bytes
	// that 16 KiB pages wrote (files made with those keep them), at the
	// same CPU at 500 msgs/s and at full rate (a commit's messages are one
	// group record; at full rate a 64 KiB record is several pages either
	// way) and about 2 µs/msg more at 5,000 msgs/s (bbolt's free list
	// handles four times the pages).
	filePageSize = 4 << 10
	replayPage   = 256 // messages read per read transaction during Replay
	retryDelay   = time.Second
	keyLen       = 8
)

var bucketName = []byte("messages")

var (
	// ErrFull is returned (wrapped, with the size and the directory) by
	// Append when the spool holds Options.MaxBytes.
	ErrFull = errors.New("spool full")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("spool closed")
	// ErrCorrupt is returned (wrapped, with what is damaged) by Open when the
	// spool's file cannot be read completely.
	ErrCorrupt = errors.New("spool corrupt")
	// ErrLocked is returned (wrapped, with the file) by Open when another
	// process holds the spool's file: each bridge needs a directory of its own.
	ErrLocked = errors.New("locked by another process")
)

// Options configure a Spool. They are taken as given: the defaults live in
// config.Default(), and the wiring fills every field from the config. The
// spool's errors name these fields; the wiring names the config keys.
type Options struct {
	// Dir holds the spool's file; Open creates it (mode 0700).
	Dir string
	// MaxBytes bounds the stored messages (encoded size plus key); the file
	// may be larger by bbolt's page overhead. Required: more than 0.
	MaxBytes int64
	// CommitInterval is how long the writer lingers after the first
	// message of a commit to collect more; 0 (or a negative value) commits
	// what is queued without waiting.
	CommitInterval time.Duration
	// Logger receives state changes (full, disk errors); nil discards.
	Logger *slog.Logger

	// test seams
	maxFileSize int                     // bbolt MaxSize: a file that cannot grow is a full disk
	pageSize    int                     // page size of a new file; 0 means filePageSize
	commitHook  func(appends int) error // called inside every write transaction, with how many Appends it stores
	ownBytes    int                     // a record this long gets a bucket of its own; 0 means ownBucketPages pages
	delLinger   time.Duration           // how long Deletes alone wait for Appends; 0 means deleteLinger
}

// Stats is a snapshot of the spool's content.
type Stats struct {
	// Depth is the number of committed, not yet deleted messages.
	Depth int64
	// Bytes is their size as counted against MaxBytes.
	Bytes int64
	// MaxBytes is the bound.
	MaxBytes int64
	// Full reports that the spool refuses Appends for MaxBytes (ErrFull):
	// from the first refusal until a commit leaves it holding 90% of
	// MaxBytes or less, so that a spool MNS drains slowly is one episode,
	// not one per message that found room. Bytes alone does not show it: a
	// message is refused when it does not fit, before Bytes reaches
	// MaxBytes.
	Full bool
	// CommitError is the error of the last commit while commits fail (a
	// full disk, an I/O error), "" once one stores all it was given: near
	// a full disk a commit that stored the messages that fitted and not
	// the others failed. Meanwhile the Stage takes nothing more from the
	// source and holds the messages of the failed commits in memory.
	CommitError string
}

// CommitStats counts the write transactions that succeeded since Open
// (each two fdatasyncs), the Appends they stored and the time they took:
// Time/Commits is what a commit costs on this disk (a millisecond or two on
// an SSD, 40 to 600 ms on an SD card or eMMC whose fdatasync takes 20 to
// 300 ms), which is also about what a message waits in the spool before MNS
// sees it, and what a crash (kill -9, power loss) can lose with STOMP ack
// auto: what the platform sent during a commit and the next one's interval.
type CommitStats struct {
	Commits, Messages int64
	Time              time.Duration
}

// Spool is a durable FIFO of messages. Its methods are safe for concurrent
// use. One goroutine, started by Open and stopped by Close, writes.
type Spool struct {
	db       *bolt.DB
	path     string
	maxBytes int64
	linger   time.Duration
	delWait  time.Duration // how long Deletes alone wait for Appends to commit with
	log      *slog.Logger
	hook     func(appends int) error
	ownBytes int // a record this long or longer gets a bucket of its own (record.go)

	reqs    chan appendReq
	kick    chan struct{}      // Delete or sync wants a commit
	hurry   chan struct{}      // Appends pile up: end the linger
	syncs   chan chan struct{} // test helper: commit everything queued
	closing chan struct{}      // closed by Close: Appends give up
	stop    chan struct{}      // closed by Close after Appends have left: final commit
	exited  chan struct{}      // closed by the writer when done

	appenders sync.WaitGroup // Appends between the checks and the hand-off

	mu         sync.Mutex
	closed     bool
	depth      int64
	bytes      int64            // committed
	reserved   int64            // accepted by Append, not yet committed
	room       broadcast.Signal // reserved shrank
	pendingDel []uint64
	full       bool  // refusing Appends for maxBytes (Stats.Full)
	commitErr  error // the last commit's error while commits fail (logged once), nil once one stores all it was given (commit)
	// appendsNoRoom: commits fail for Appends without room; a commit of
	// deletes alone does not end that.
	appendsNoRoom bool
	closeErr      error // set by the writer's final commit

	// gmu guards groups: the writer marks deleted messages, Replay skips
	// them. Lock order: gmu is never held while taking mu. groups holds
	// the groups that lost some messages only (group.go).
	gmu    sync.Mutex
	groups groupIndex

	scratch struct { // the writer's, reused from commit to commit
		gone, singles []uint64
		undo          []marked
		members       []groupMember
		arena         []byte // the group records of the last commit
	}

	commits     atomic.Int64 // successful write transactions (CommitStats)
	commitNanos atomic.Int64 // their time (CommitStats)
	committed   atomic.Int64 // the Appends they stored (CommitStats)
	mapped      mapped       // the file's pages read back since they were last given back (mapped.go)

	// notified is the last key whose Append's done function has returned
	// (at Open: the last key assigned). Every key up to it is in the file
	// or deleted, and a reader that learns of committed messages through
	// their done functions (the Stage's window) has learnt of all of them.
	notified atomic.Uint64
	// stored gets a token after every commit that stored Appends, once
	// notified covers them: whoever Appended them (Intake or not), the
	// Stage's feeder wakes for them and needs no periodic look.
	stored chan struct{}
}

type appendReq struct {
	val  []byte
	buf  *[]byte // val's pooled buffer, given back after the commit
	done func(key uint64, err error)
}

// Open opens or creates the spool in opts.Dir, checks every stored record
// and starts the writer. A damaged file is an error wrapping ErrCorrupt,
// never a silent loss; a spool locked by another process is an error too.
func Open(opts Options) (*Spool, error) {
	if opts.Dir == "" {
		return nil, errors.New("spool: open: no directory given (Options.Dir)")
	}
	if opts.MaxBytes <= 0 {
		return nil, fmt.Errorf("spool: open: max bytes %d: give a bound of more than 0 bytes (Options.MaxBytes)", opts.MaxBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create directory: %w; create it or make its parent writable by the bridge's user", err)
	}
	path := filepath.Join(opts.Dir, FileName)
	pageSize := cmp.Or(opts.pageSize, filePageSize)
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
		// An existing file keeps its page size (bbolt reads it from the
		// meta pages), and a damaged one is judged as before.
		pageSize = 0
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true, // the freelist is rebuilt on open: one page less per commit
		FreelistType:   bolt.FreelistMapType,
		MaxSize:        opts.maxFileSize,
		PageSize:       pageSize,
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("spool: open %s: %w; is another bridge running with the same directory?", path, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch):
		return nil, corruptErr(path, err)
	case err != nil:
		return nil, fmt.Errorf("spool: open %s: %w; the directory and file must be writable by the bridge's user", path, err)
	}
	s := &Spool{
		db:       db,
		path:     path,
		maxBytes: opts.MaxBytes,
		linger:   opts.CommitInterval,
		delWait:  cmp.Or(opts.delLinger, deleteLinger),
		log:      opts.Logger.With("spool", path),
		hook:     opts.commitHook,
		ownBytes: cmp.Or(opts.ownBytes, ownBucketPages*db.Info().PageSize),
		reqs:     make(chan appendReq, queueLen),
		kick:     make(chan struct{}, 1),
		hurry:    make(chan struct{}, 1),
		stored:   make(chan struct{}, 1),
		syncs:    make(chan chan struct{}),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
		exited:   make(chan struct{}),
	}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	releaseMapped(db) // load read every page
	if s.depth > 0 {
		s.log.Info("spool holds messages from a previous run; they are replayed", "messages", s.depth, "bytes", s.bytes)
	}
	go s.run()
	return s, nil
}

func corruptErr(path string, err error) error {
	return fmt.Errorf("%w: %s: %v; stop the bridge, move the file aside (keep it for inspection, its messages are not replayed) and start again", ErrCorrupt, path, err)
}

// load creates the bucket, runs bbolt's consistency check and verifies
// every record, counting depth and bytes. bbolt panics on some damaged
// pages; that becomes ErrCorrupt too.
func (s *Spool) load() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = corruptErr(s.path, fmt.Errorf("%v", r))
		}
	}()
	if err := s.db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		return fmt.Errorf("spool: open %s: create bucket: %w", s.path, err)
	}
	return s.db.View(func(tx *bolt.Tx) error {
		var problems []error
		for e := range tx.Check() {
			problems = append(problems, e)
		}
		if len(problems) > 0 {
			return corruptErr(s.path, errors.Join(problems...))
		}
		b := tx.Bucket(bucketName)
		var last uint64 // the key of the last message seen
		err := b.ForEach(func(k, v []byte) error {
			if v = recordAt(b, k, v); v == nil {
				return corruptErr(s.path, fmt.Errorf("key %x: a bucket without its record", k))
			}
			if len(k) != keyLen {
				return corruptErr(s.path, fmt.Errorf("key %x is not 8 bytes", k))
			}
			key := binary.BigEndian.Uint64(k)
			if err := verify(v); err != nil {
				return corruptErr(s.path, fmt.Errorf("message %d: %w", key, err))
			}
			if key <= last && last > 0 {
				return corruptErr(s.path, fmt.Errorf("record %d overlaps the group before it (up to %d)", key, last))
			}
			if v[0] == codecVersion {
				s.depth++
				s.bytes += int64(len(v) + keyLen)
				last = key
				return nil
			}
			// Counted only: the group's state is made at its first delete.
			eachMember(v, func(off uint64, p []byte) error { // verify checked the framing
				s.depth++
				s.bytes += int64(memberSize(p))
				last = key + off
				return nil
			})
			return nil
		})
		if err == nil && last > b.Sequence() {
			err = corruptErr(s.path, fmt.Errorf("message %d is beyond the last key assigned (%d)", last, b.Sequence()))
		}
		s.notified.Store(b.Sequence())
		return err
	})
}

// Append queues m for a durable write. It returns at once, unless the
// commit queue is full (it then blocks until there is room: backpressure,
// until ctx is done: ctx's error), the spool is full (an error wrapping
// ErrFull: stop consuming until deletes make room), m alone is larger than
// MaxBytes (a bridge.Permanent error) or the spool is closed (ErrClosed).
// ctx bounds only the wait: when the queue has room Append takes m even if
// ctx is done, as bridge.Pipeline.Handle does, so a delivery that a source
// hands over just as its context ends (a stop) is spooled in its turn.
//
// When Append returns nil, done is called exactly once, from the spool's
// writer goroutine: with m's key after the commit is durable, or with the
// commit's error (nothing of m was stored; a later Append may succeed). done
// must not block for long and must not call Append; it may call Delete.
// When Append returns an error, done is never called. m is encoded before
// Append returns; the caller may reuse it.
func (s *Spool) Append(ctx context.Context, m *bridge.Message, done func(key uint64, err error)) error {
	val, buf := encodePooled(m)
	size := int64(len(val) + keyLen)
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return fmt.Errorf("spool: append: %w", ErrClosed)
	case size > s.maxBytes:
		s.mu.Unlock()
		return bridge.Permanent(fmt.Errorf("spool: append message %q: %d bytes do not fit in a spool of %s (Options.MaxBytes)", m.MessageID, size, formatBytes(s.maxBytes)))
	case s.reserved > 0 && s.reserved+size > maxPending:
		// Wait for the writer to commit what is pending: backpressure.
		wake := s.room.Wait()
		s.mu.Unlock()
		s.hurryUp()
		putValue(buf)
		select {
		case <-wake:
			return s.Append(ctx, m, done)
		case <-ctx.Done():
			return fmt.Errorf("spool: append: %w", ctx.Err())
		case <-s.closing:
			return fmt.Errorf("spool: append: %w", ErrClosed)
		}
	case s.bytes+s.reserved+size > s.maxBytes:
		// The Stage logs the episode, whichever Append meets it first.
		s.full = true
		s.mu.Unlock()
		return fmt.Errorf("%w: %s in %s; the bridge stops consuming until MNS takes messages", ErrFull, formatBytes(s.maxBytes), filepath.Dir(s.path))
	}
	s.reserved += size
	s.appenders.Add(1)
	s.mu.Unlock()
	defer s.appenders.Done()

	req := appendReq{val: val, buf: buf, done: done}
	select {
	case s.reqs <- req: // room: taken whether or not ctx is done
	default:
		select {
		case s.reqs <- req:
		case <-ctx.Done():
			s.unreserve(size)
			return fmt.Errorf("spool: append: %w", ctx.Err())
		case <-s.closing:
			s.unreserve(size)
			return fmt.Errorf("spool: append: %w", ErrClosed)
		}
	}
	if len(s.reqs) >= queueLen/2 {
		s.hurryUp()
	}
	return nil
}

// hurryUp ends the writer's linger: the commit queue is half full or the
// pending bytes reached maxPending, so waiting longer only blocks Appends.
func (s *Spool) hurryUp() {
	select {
	case s.hurry <- struct{}{}:
	default:
	}
}

func (s *Spool) unreserve(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.wakeAppends()
	s.mu.Unlock()
}

// wakeAppends wakes the Appends waiting for pending bytes to be committed.
// s.mu must be held.
func (s *Spool) wakeAppends() {
	s.room.Notify()
}

// Delete removes the messages with the given keys. It does not wait: the
// removal is committed with the next group commit, and is durable when
// Close returns nil. Unknown or already deleted keys are ignored. A removal
// that fails to commit is retried; if the process dies first, the messages
// are replayed again (duplicates, never loss).
func (s *Spool) Delete(keys ...uint64) error {
	if len(keys) == 0 {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("spool: delete: %w", ErrClosed)
	}
	s.pendingDel = append(s.pendingDel, keys...)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// Replay calls fn for every message committed before Replay was called and
// not deleted, in key (arrival) order, from the calling goroutine. Messages
// deleted meanwhile may be skipped; messages appended meanwhile are not
// visited. fn's error stops Replay and is returned wrapped. Replay holds no
// transaction while fn runs, so fn may Append and Delete.
func (s *Spool) Replay(fn func(key uint64, m bridge.Message) error) error {
	return s.ReplayFrom(0, fn)
}

// ReplayFrom is Replay restricted to keys >= from: a reader that remembers
// the last key it saw can follow the spool as it grows without reading it
// again from the start.
func (s *Spool) ReplayFrom(from uint64, fn func(key uint64, m bridge.Message) error) error {
	_, err := s.replay(from, latest, fn)
	return err
}

// latest, as replay's to, means the last key assigned when replay starts.
const latest = ^uint64(0)

// replay calls fn for the messages with keys from from to to (at most the
// last key assigned when replay started), in key order, as Replay does. It
// returns the last key of the range it covered: min(to, the last key
// assigned when it started).
func (s *Spool) replay(from, to uint64, fn func(key uint64, m bridge.Message) error) (upper uint64, err error) {
	type item struct {
		key uint64
		m   bridge.Message
	}
	var (
		page = make([]item, 0, replayPage)
		kb   [keyLen]byte
	)
	var live []bool // the group being read: which offsets are not deleted
	for first := true; ; first = false {
		page = page[:0]
		read := 0 // bytes of records read through the mapping
		err := s.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketName)
			if first {
				upper = min(to, b.Sequence())
			}
			binary.BigEndian.PutUint64(kb[:], from)
			c := b.Cursor()
			k, v := c.Seek(kb[:])
			if !bytes.Equal(k, kb[:]) {
				// from may be inside the record before (a group): start
				// there; the loop skips the keys below from.
				var pk, pv []byte
				if k == nil {
					pk, pv = c.Last()
				} else {
					pk, pv = c.Prev()
				}
				if pk != nil {
					k, v = pk, pv
				} else {
					k, v = c.Seek(kb[:]) // from is below the first key
				}
			}
			for ; k != nil && len(page) < replayPage; k, v = c.Next() {
				start := binary.BigEndian.Uint64(k)
				if start > upper {
					break
				}
				if v = recordAt(b, k, v); v == nil {
					return corruptErr(s.path, fmt.Errorf("record %d: a bucket without its record", start))
				}
				read += len(v)
				if v[0] != groupVersion {
					if start < from {
						continue
					}
					m, err := decode(v)
					if err != nil {
						return corruptErr(s.path, fmt.Errorf("message %d: %w", start, err))
					}
					page = append(page, item{start, m})
					continue
				}
				if err := verify(v); err != nil {
					return corruptErr(s.path, fmt.Errorf("group %d: %w", start, err))
				}
				live = s.liveMembers(start, live)
				err := eachMember(v, func(off uint64, p []byte) error {
					key := start + off
					if key < from || key > upper || (live != nil && (off >= uint64(len(live)) || !live[off])) {
						return nil
					}
					m, err := decodePayload(p)
					if err != nil {
						return fmt.Errorf("message %d: %w", key, err)
					}
					page = append(page, item{key, m})
					return nil
				})
				if err != nil {
					return corruptErr(s.path, fmt.Errorf("group %d: %w", start, err))
				}
			}
			return nil
		})
		if errors.Is(err, berrors.ErrDatabaseNotOpen) {
			return upper, fmt.Errorf("spool: replay: %w", ErrClosed)
		}
		if err == nil {
			s.mapped.readBack(s.db, read)
		}
		if err != nil {
			return upper, fmt.Errorf("spool: replay: %w", err)
		}
		for _, it := range page {
			if err := fn(it.key, it.m); err != nil {
				return upper, fmt.Errorf("spool: replay message %d: %w", it.key, err)
			}
		}
		if len(page) < replayPage {
			return upper, nil
		}
		from = page[len(page)-1].key + 1
	}
}

// liveMembers returns which offsets of the group record at start are not
// deleted, in buf; nil when the spool has no state for it (none of its
// messages was deleted yet, or it is gone since the caller's transaction
// began): all its messages are then read.
func (s *Spool) liveMembers(start uint64, buf []bool) []bool {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	g := s.groups.find(start)
	if g == nil || g.start != start {
		return nil
	}
	buf = buf[:0]
	for _, size := range g.sizes {
		buf = append(buf, size > 0)
	}
	return buf
}

// Stats returns the spool's current depth and size.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Depth: s.depth, Bytes: s.bytes, MaxBytes: s.maxBytes, Full: s.full}
	if s.commitErr != nil {
		st.CommitError = s.commitErr.Error()
	}
	return st
}

// CommitStats returns the counts of the commits since Open.
func (s *Spool) CommitStats() CommitStats {
	return CommitStats{Commits: s.commits.Load(), Messages: s.committed.Load(), Time: time.Duration(s.commitNanos.Load())}
}

// commitsFail is whether commits fail (Stats.CommitError): from a failed
// commit until one stores all it was given.
func (s *Spool) commitsFail() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commitErr != nil
}

// Close stops taking Appends, commits every Append already accepted and
// every Delete queued, and closes the file. Appends blocked on a full queue
// return ErrClosed. The error says whether the last commit failed (then
// queued deletes are lost and those messages replay again on next Open).
// Close is idempotent; later calls return nil.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.appenders.Wait()
	close(s.stop)
	<-s.exited
	err := s.closeErr
	if cerr := s.db.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("spool: close %s: %w", s.path, cerr))
	}
	return err
}

// formatBytes renders n in binary units, "1.0 GiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
