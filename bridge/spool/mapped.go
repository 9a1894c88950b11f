package spool

import (
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Pages of the file that the process has mapped.
//
// bbolt reads the file through a shared read-only mmap, and every page a
// read touches stays mapped into the process: it counts in its RSS (as
// file-backed memory) until the kernel reclaims it, and the kernel reclaims
// mapped pages after the unmapped page cache. Open reads the whole file
// (its checks) and the feeder reads a backlog back once, so after an MNS
// outage the RSS held the whole backlog's pages (about 60 MB after 30 s at
// 5,000 msgs/s) long after MNS had the messages. The spool gives them back
// after Open's checks and after every releaseEvery bytes read back: the
// pages stay in the page cache (a read that needs one again maps it again
// without reading the disk), but no longer count as the bridge's.
// The records the spool decodes are copies, so nothing refers to a page
// given back.

// releaseEvery is the bytes of records read back between two releases of
// the mapped pages: the most that a read-back of a backlog adds to RSS.
const releaseEvery = 4 << 20

// mapped counts the bytes read through the mapping since the last release.
type mapped struct{ read atomic.Int64 }

// readBack notes n bytes of records read and releases the mapped pages of
// db once releaseEvery have been read since the last release.
func (m *mapped) readBack(db *bolt.DB, n int) {
	if m.read.Add(int64(n)) < releaseEvery {
		return
	}
	m.read.Store(0)
	releaseMapped(db)
}

// releaseMapped gives back the pages of db's file that the process has
// mapped. The read transaction keeps bbolt from remapping the file
// meanwhile; readers that touch a page later map it again.
func releaseMapped(db *bolt.DB) {
	db.View(func(tx *bolt.Tx) error {
		dropPages(tx.DB().Info().Data, int(tx.Size()))
		return nil
	})
}
