package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// run is the writer goroutine: it collects Appends (lingering up to
// s.linger after the first) and queued Deletes, commits them in one
// transaction and calls the Appends' done functions. It returns after the
// final commit that Close asks for.
func (s *Spool) run() {
	defer close(s.exited)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	batch := make([]appendReq, 0, maxBatch)
	for {
		var synced chan struct{}
		batch = batch[:0]
		select {
		case r := <-s.reqs:
			batch = s.gather(append(batch, r), linger)
		case <-s.kick:
			// Deletes alone wait for Appends to share their commit.
			linger.Reset(s.delWait)
			select {
			case r := <-s.reqs:
				linger.Stop()
				batch = s.gather(append(batch, r), linger)
			case <-linger.C:
			case synced = <-s.syncs:
				linger.Stop()
			case <-s.stop:
				linger.Stop()
			}
		case <-retry.C:
		case synced = <-s.syncs:
		case <-s.stop:
			s.final()
			return
		}
		batch = s.drain(batch)
		if err := s.commit(batch); err != nil && s.hasPendingDeletes() {
			retry.Reset(retryDelay)
		}
		if synced != nil {
			for batch = s.drain(batch[:0]); len(batch) > 0; batch = s.drain(batch[:0]) {
				s.commit(batch)
			}
			close(synced)
		}
	}
}

// gather waits s.linger for more Appends to queue, then adds them to
// batch. It sleeps through the linger instead of taking each Append as it
// comes (at 5,000 msgs/s that was a wake-up of the writer per message);
// a queue half full or the pending bytes at their bound end it early.
func (s *Spool) gather(batch []appendReq, t *time.Timer) []appendReq {
	if s.linger <= 0 {
		return batch
	}
	t.Reset(s.linger)
	select {
	case <-t.C:
	case <-s.hurry:
	case <-s.stop:
	}
	t.Stop()
	return s.drain(batch)
}

// drain adds the Appends already queued to batch, without waiting.
func (s *Spool) drain(batch []appendReq) []appendReq {
	for len(batch) < maxBatch {
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// final commits everything queued when Close is called. Appends are all in
// s.reqs by now (Close waited for them). A failed commit fails every
// remaining Append and is reported by Close.
func (s *Spool) final() {
	batch := make([]appendReq, 0, maxBatch)
	for {
		batch = s.drain(batch[:0])
		if len(batch) == 0 && !s.hasPendingDeletes() {
			s.closeErr = s.rewriteGroups()
			return
		}
		if err := s.commit(batch); err != nil {
			s.closeErr = err
			for batch = s.drain(batch[:0]); len(batch) > 0; batch = s.drain(batch[:0]) {
				s.fail(batch, err)
			}
			if s.hasPendingDeletes() {
				s.closeErr = fmt.Errorf("%w (queued deletes are lost: those messages replay again on next start)", err)
			}
			return
		}
	}
}

func (s *Spool) hasPendingDeletes() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pendingDel) > 0
}

// commit writes batch and the queued deletes, then calls the done
// functions. When the disk has no room for the whole batch (ENOSPC, or the
// file at its size limit) it writes the batch in parts, halving a part that
// has no room down to one message: a nearly full disk takes what fits. A
// batch holds up to maxPending bytes, what the source read at once (a
// socket's buffer after a pause), and was tried whole again and again: on
// a disk with less room than that the spool took nothing more, though it
// was empty (walked on a 2 MiB filesystem). On any other error, or when one
// message has no room, nothing of the part is stored, the deletes are
// queued again and every Append of batch not yet stored gets the error.
//
// Commits fail (Stats.CommitError, the log's one line) from a failed
// commit until one stores all it was given: a commit that stored part of
// its messages for want of room failed, near a full disk each commit
// stores a part, and the log said "work again" and "failed" at each one.
func (s *Spool) commit(batch []appendReq) error {
	n := len(batch)
	for {
		err := s.write(batch[:n], n == len(batch))
		switch {
		case err == nil && n == len(batch):
			return nil
		case err == nil:
			batch = batch[n:]
			n = min(n, len(batch))
		case n > 1 && noRoom(err):
			n /= 2
		default:
			return s.failCommit(batch, err)
		}
	}
}

// noRoom tells an error of a commit that the disk, or the file's size
// limit, had no room for it: a smaller commit may fit.
func noRoom(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, berrors.ErrMaxSizeReached)
}

// failCommit reports the failed commit of batch, the part of a commit
// that was not stored (all of it, or what did not fit when a part did):
// every Append of it gets err, and the first failure of an episode is
// logged.
func (s *Spool) failCommit(batch []appendReq, err error) error {
	notStored := strconv.Itoa(len(batch)) + " messages were"
	switch len(batch) {
	case 0: // deletes alone: write queued them again
		notStored = "the deletes were"
	case 1:
		notStored = "1 message was"
	}
	err = fmt.Errorf("spool: commit to %s: %w; %s not stored: free disk space or repair the disk, later writes try again", s.path, err, notStored)
	s.mu.Lock()
	wasFailing, dels := s.commitErr != nil, len(s.pendingDel)
	s.commitErr = err
	s.appendsNoRoom = len(batch) > 0 && noRoom(err)
	s.mu.Unlock()
	if !wasFailing {
		s.log.Error("spool commit failed; retrying with the next messages", "messages", len(batch), "deletes", dels, "err", err)
	}
	s.fail(batch, err)
	return err
}

// write writes batch and the queued deletes in one transaction, then calls
// the done functions. On error nothing of the transaction is stored, the
// deletes are queued again and the error is returned as the transaction
// gave it; the Appends of batch are left to the caller. last says that
// batch is the rest of its commit: its success ends failing commits
// (before the done functions, which the Stage's gate reads), unless it
// stores no Append and they failed for Appends without room: deletes
// alone say nothing of room for messages.
//
// The batch is stored in groups (group.go): a group of one message is a
// version 1 record as before, a larger one a version 2 record. A deleted
// message of a group is marked in the group's state; the record goes when
// its last message does.
func (s *Spool) write(batch []appendReq, last bool) error {
	s.mu.Lock()
	dels := s.pendingDel
	s.pendingDel = nil
	s.mu.Unlock()
	if len(batch) == 0 && len(dels) == 0 {
		return nil
	}
	slices.Sort(dels)
	var (
		gone, singles  []uint64
		undo           []marked
		removed, freed int64
	)
	var first uint64 // the key of batch[0]: keys are dense, batch[i]'s is first+i
	began := time.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		b.FillPercent = 0.95 // keys only grow: pack pages instead of splitting them in half
		// One cursor, one seek a key, in key order (neighbours share pages):
		// Get then Delete would seek twice and make a cursor for each.
		c := b.Cursor()
		var err error
		if gone, singles, undo, removed, freed, err = s.markDeleted(b, c, dels); err != nil {
			return err
		}
		var kb [keyLen]byte
		for _, key := range gone {
			binary.BigEndian.PutUint64(kb[:], key)
			if k, v := c.Seek(kb[:]); bytes.Equal(k, kb[:]) {
				if err := deleteRecord(b, c, k, v); err != nil {
					return err
				}
			}
		}
		var singleN, singleBytes int64
		for _, key := range singles {
			binary.BigEndian.PutUint64(kb[:], key)
			k, v := c.Seek(kb[:])
			if !bytes.Equal(k, kb[:]) {
				continue // unknown or already deleted (a repeated key)
			}
			rec := recordAt(b, k, v)
			if rec == nil || rec[0] != codecVersion {
				continue
			}
			singleN++
			singleBytes += int64(len(rec) + keyLen)
			if err := deleteRecord(b, c, k, v); err != nil {
				return err
			}
		}
		seq := b.Sequence()
		first = seq + 1
		arena := s.scratch.arena[:0] // the groups' records: must live until the commit is done
		if need := groupsLenBound(batch); cap(arena) < need {
			arena = make([]byte, 0, need) // never grown below: the records are slices of it
		}
		for i := 0; i < len(batch); {
			n := groupLen(batch[i:])
			start := seq + 1
			val := batch[i].val
			if n == 1 {
				seal(val) // Append left it unsealed (encodePooled)
			} else {
				members := s.scratch.members[:0]
				for j, r := range batch[i : i+n] {
					members = append(members, groupMember{off: uint64(j), payload: r.val[headerLen:]})
				}
				at := len(arena)
				arena = appendGroup(arena, members)
				val = arena[at:]
				s.scratch.members = members
			}
			binary.BigEndian.PutUint64(kb[:], start)
			if err := putRecord(b, bytes.Clone(kb[:]), val, s.ownBytes); err != nil {
				return err
			}
			seq += uint64(n)
			i += n
		}
		s.scratch.arena = arena
		if err := b.SetSequence(seq); err != nil {
			return err
		}
		removed += singleN
		freed += singleBytes
		if s.hook != nil {
			return s.hook(len(batch))
		}
		return nil
	})
	var size int64
	for _, r := range batch {
		size += int64(len(r.val) + keyLen)
	}
	if err != nil {
		s.unmark(undo)
		s.mu.Lock()
		s.pendingDel = append(dels, s.pendingDel...)
		s.mu.Unlock()
		return err
	}
	for _, r := range batch {
		putValue(r.buf) // bbolt holds no reference after the transaction
	}
	s.gmu.Lock()
	s.groups.compact()
	s.gmu.Unlock()
	s.commitNanos.Add(int64(time.Since(began)))
	s.committed.Add(int64(len(batch)))
	s.commits.Add(1)
	s.mu.Lock()
	s.reserved -= size
	s.wakeAppends()
	s.bytes += size - freed
	s.depth += int64(len(batch)) - removed
	if s.full && s.bytes+s.reserved <= s.maxBytes/10*9 {
		s.full = false // room again (the Stage logs it at its next Append)
	}
	recovered := last && s.commitErr != nil && (len(batch) > 0 || !s.appendsNoRoom)
	if recovered {
		s.commitErr = nil
	}
	s.mu.Unlock()
	if recovered {
		s.log.Info("spool commits work again")
	}
	for i, r := range batch {
		r.done(first+uint64(i), nil)
	}
	if len(batch) > 0 {
		s.notified.Store(first + uint64(len(batch)) - 1)
		select {
		case s.stored <- struct{}{}:
		default:
		}
	}
	return nil
}

// groupsLenBound bounds the bytes of the group records that commit makes
// of batch.
func groupsLenBound(batch []appendReq) int {
	n := 0
	for _, r := range batch {
		n += len(r.val) + 2*binary.MaxVarintLen64
	}
	return n + (len(batch)/2+1)*(headerLen+binary.MaxVarintLen64)
}

// groupLen returns how many of the Appends at the head of batch go into
// one record: up to maxGroup, and while the group stays within groupBytes
// (at least one).
func groupLen(batch []appendReq) int {
	n, size := 1, len(batch[0].val)
	for n < len(batch) && n < maxGroup && size+len(batch[n].val) <= groupBytes {
		size += len(batch[n].val)
		n++
	}
	return n
}

// marked is a message of a group marked deleted by a commit that may still
// fail: unmark restores it.
type marked struct {
	g    *group
	off  uint64
	size int32
}

// markDeleted marks the messages of dels (sorted) that belong to groups
// deleted, making the state of a group from its record in b (c is a cursor
// of b) at the first delete of one of its messages. It returns the keys of
// the group records whose last message that was (to delete from the file),
// the keys that are not in a group (messages stored alone, or unknown),
// what it marked, and how many live messages and counted bytes it marked.
// The error is that of a damaged group record.
func (s *Spool) markDeleted(b *bolt.Bucket, c *bolt.Cursor, dels []uint64) (gone, singles []uint64, undo []marked, removed, freed int64, err error) {
	gone, singles, undo = s.scratch.gone[:0], s.scratch.singles[:0], s.scratch.undo[:0]
	defer func() {
		// The writer's buffers for the next commit (only it calls this).
		s.scratch.gone, s.scratch.singles, s.scratch.undo = gone, singles, undo
	}()
	s.gmu.Lock()
	defer s.gmu.Unlock()
	for _, key := range dels {
		g := s.groups.find(key)
		if g == nil {
			if g, err = s.storedGroup(b, c, key); err != nil {
				return gone, singles, undo, removed, freed, err
			}
			if g == nil {
				singles = append(singles, key)
				continue
			}
			s.groups.add(g)
		}
		off := key - g.start
		size := g.sizes[off]
		if size == 0 {
			continue // deleted already (a repeated key) or not in the group
		}
		g.sizes[off] = 0
		g.left--
		removed++
		freed += int64(size)
		undo = append(undo, marked{g, off, size})
		if g.left == 0 {
			gone = append(gone, g.start)
			s.groups.dead++
		}
	}
	return gone, singles, undo, removed, freed, nil
}

// storedGroup returns the state of the group record in b that holds key
// (c is a cursor of b), nil when key is in none: stored alone, or unknown.
func (s *Spool) storedGroup(b *bolt.Bucket, c *bolt.Cursor, key uint64) (*group, error) {
	var kb [keyLen]byte
	binary.BigEndian.PutUint64(kb[:], key)
	k, v := c.Seek(kb[:])
	if !bytes.Equal(k, kb[:]) {
		// A group's record is under its first key: the one before.
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	}
	if len(k) != keyLen {
		return nil, nil
	}
	rec := recordAt(b, k, v)
	start := binary.BigEndian.Uint64(k)
	if rec == nil || rec[0] != groupVersion || start > key {
		return nil, nil
	}
	g, err := groupAt(start, rec)
	if err != nil {
		return nil, corruptErr(s.path, fmt.Errorf("group %d: %w", start, err))
	}
	if key-start >= uint64(len(g.sizes)) {
		return nil, nil
	}
	return g, nil
}

// unmark undoes markDeleted after its commit failed.
func (s *Spool) unmark(undo []marked) {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	for _, u := range undo {
		if u.g.left == 0 {
			s.groups.dead--
		}
		u.g.sizes[u.off] = u.size
		u.g.left++
	}
}

// rewriteGroups stores the groups that lost some messages again with only
// the messages left (Close): without it, the next start would forward the
// deleted ones again. A failed rewrite costs duplicates, never a loss.
func (s *Spool) rewriteGroups() error {
	s.gmu.Lock()
	var partial []*group
	for _, g := range s.groups.gs {
		if g.left > 0 && g.left < g.stored {
			partial = append(partial, g)
		}
	}
	s.gmu.Unlock()
	if len(partial) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		var kb [keyLen]byte
		for _, g := range partial {
			binary.BigEndian.PutUint64(kb[:], g.start)
			v := getRecord(b, kb[:])
			if v == nil || v[0] != groupVersion {
				return fmt.Errorf("group record %d is missing", g.start)
			}
			var members []groupMember
			if err := eachMember(v, func(off uint64, p []byte) error {
				if off < uint64(len(g.sizes)) && g.sizes[off] > 0 {
					members = append(members, groupMember{off, p})
				}
				return nil
			}); err != nil {
				return corruptErr(s.path, fmt.Errorf("group %d: %w", g.start, err))
			}
			if err := replaceRecord(b, bytes.Clone(kb[:]), encodeGroup(members)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: close: rewriting %d partly forwarded groups in %s: %w (their forwarded messages are sent again on next start: duplicates, not a loss)", len(partial), s.path, err)
	}
	s.gmu.Lock()
	for _, g := range partial {
		g.stored = g.left
	}
	s.gmu.Unlock()
	return nil
}

// fail gives err to every Append in batch and releases their reservations.
func (s *Spool) fail(batch []appendReq, err error) {
	var size int64
	for _, r := range batch {
		size += int64(len(r.val) + keyLen)
		putValue(r.buf)
	}
	s.unreserve(size)
	for _, r := range batch {
		r.done(0, err)
	}
}

// sync commits everything queued so far and returns when it is durable
// (tests and benchmarks).
func (s *Spool) sync() {
	ch := make(chan struct{})
	select {
	case s.syncs <- ch:
		<-ch
	case <-s.exited:
	}
}
