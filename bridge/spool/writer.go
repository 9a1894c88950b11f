package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
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

// commit writes batch and the queued deletes in one transaction, then calls
// the done functions. On error nothing of the transaction is stored, the
// deletes are queued again and every Append in batch gets the error.
func (s *Spool) commit(batch []appendReq) error {
	s.mu.Lock()
	dels := s.pendingDel
	s.pendingDel = nil
	s.mu.Unlock()
	if len(batch) == 0 && len(dels) == 0 {
		return nil
	}
	keys := make([]byte, len(batch)*keyLen) // must live until the commit is done
	var removed, freed int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed, freed = 0, 0
		b := tx.Bucket(bucketName)
		b.FillPercent = 0.95 // keys only grow: pack pages instead of splitting them in half
		// One cursor, one seek a key, in key order (neighbours share pages):
		// Get then Delete would seek twice and make a cursor for each.
		slices.Sort(dels)
		c := b.Cursor()
		var kb [keyLen]byte
		for _, key := range dels {
			binary.BigEndian.PutUint64(kb[:], key)
			k, v := c.Seek(kb[:])
			if !bytes.Equal(k, kb[:]) {
				continue // unknown or already deleted (a repeated key)
			}
			removed++
			freed += int64(len(v) + keyLen)
			if err := c.Delete(); err != nil {
				return err
			}
		}
		for i, r := range batch {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			k := keys[i*keyLen : (i+1)*keyLen]
			binary.BigEndian.PutUint64(k, seq)
			if err := b.Put(k, r.val); err != nil {
				return err
			}
		}
		if s.hook != nil {
			return s.hook()
		}
		return nil
	})
	var size int64
	for _, r := range batch {
		size += int64(len(r.val) + keyLen)
	}
	if err != nil {
		err = fmt.Errorf("spool: commit to %s: %w; nothing of this commit was stored: free disk space or repair the disk, later writes try again", s.path, err)
		s.mu.Lock()
		s.pendingDel = append(dels, s.pendingDel...)
		wasFailing := s.failing
		s.failing = true
		s.mu.Unlock()
		if !wasFailing {
			s.log.Error("spool commit failed; retrying with the next messages", "messages", len(batch), "deletes", len(dels), "err", err)
		}
		s.fail(batch, err)
		return err
	}
	s.commits.Add(1)
	s.mu.Lock()
	s.reserved -= size
	s.wakeAppends()
	s.bytes += size - freed
	s.depth += int64(len(batch)) - removed
	roomAgain := s.full && s.bytes+s.reserved <= s.maxBytes/10*9
	if roomAgain {
		s.full = false
	}
	recovered := s.failing
	s.failing = false
	s.mu.Unlock()
	if recovered {
		s.log.Info("spool commits work again")
	}
	if roomAgain {
		s.log.Info("spool has room again", "max_bytes", s.maxBytes)
	}
	for i, r := range batch {
		r.done(binary.BigEndian.Uint64(keys[i*keyLen:]), nil)
	}
	return nil
}

// fail gives err to every Append in batch and releases their reservations.
func (s *Spool) fail(batch []appendReq, err error) {
	var size int64
	for _, r := range batch {
		size += int64(len(r.val) + keyLen)
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
