package spool

import bolt "go.etcd.io/bbolt"

// Where a record lives in the file. A record of at least ownBucketPages
// pages is stored in a bucket of its own (under the record's key in the
// messages bucket, the record under recordKey in it); a smaller one is a
// value of the messages bucket.
//
// Why: bbolt rewrites a whole leaf when one of its values changes, and it
// splits a leaf only once it holds more than four values. A commit's
// record joins the leaf of the records before it, so while MNS has not yet
// taken those (a few commits at moderate rates), every commit wrote them
// again: at 5,000 msgs/s a commit wrote a leaf of 3 to 4 records of about
// 18 KB, some 70 KB, for 18 KB of messages. In a bucket of its own a record
// is written once, by its commit; later commits write only the messages
// bucket's leaf of keys and bucket headers (a few dozen bytes a record).
// Deleting it frees its pages as deleting a value does.
//
// Smaller records stay values: in a bucket of their own they would fill a
// page each (bbolt writes whole pages) where values share one; from two
// pages up a record wastes at most a third of its pages, as the leaves
// that shared them did. Files written before keep their values; both
// kinds are read. Crash safety is bbolt's as before: a commit, the new
// buckets included, is one transaction.
const ownBucketPages = 2

// recordKey is the key of the record in a bucket of its own.
var recordKey = []byte{0}

// putRecord stores val under key in b: in a bucket of its own when it is
// at least ownBytes long. key and val must stay unchanged until the
// transaction ends (bbolt keeps them).
func putRecord(b *bolt.Bucket, key, val []byte, ownBytes int) error {
	if len(val) < ownBytes {
		return b.Put(key, val)
	}
	own, err := b.CreateBucket(key)
	if err != nil {
		return err
	}
	return own.Put(recordKey, val)
}

// recordAt returns the record under k, which a cursor of b gave with the
// value v: v itself, or, when k names a bucket (v is nil), the record in
// it. nil when there is none.
func recordAt(b *bolt.Bucket, k, v []byte) []byte {
	if v != nil {
		return v
	}
	if own := b.Bucket(k); own != nil {
		return own.Get(recordKey)
	}
	return nil
}

// getRecord returns the record stored under key in b, or nil.
func getRecord(b *bolt.Bucket, key []byte) []byte {
	return recordAt(b, key, b.Get(key))
}

// replaceRecord stores val as the record under key, which holds one: where
// the old one is (a value, or the record of a bucket of its own).
func replaceRecord(b *bolt.Bucket, key, val []byte) error {
	if own := b.Bucket(key); own != nil {
		return own.Put(recordKey, val)
	}
	return b.Put(key, val)
}

// deleteRecord deletes the record at c's position, k, whose value c gave
// as v (nil: a bucket of its own, deleted with its pages).
func deleteRecord(b *bolt.Bucket, c *bolt.Cursor, k, v []byte) error {
	if v == nil {
		return b.DeleteBucket(k)
	}
	return c.Delete()
}
