package main

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strconv"
	"sync"
	"time"
)

// bodySize is the size of every device message body.
const bodySize = 256

// makeBody returns a 256-byte JSON telemetry body that carries its sequence
// number, so the tracker can tell which message reached MNS.
func makeBody(seq int, dev string) []byte {
	b := make([]byte, 0, bodySize)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"device":"`...)
	b = append(b, dev...)
	b = append(b, `","temperature":21.5,"humidity":48.2,"battery":97,"pad":"`...)
	for len(b) < bodySize-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// parseSeq reads the sequence number back from a makeBody body.
func parseSeq(b []byte) (int, bool) {
	const key = `{"seq":`
	if !bytes.HasPrefix(b, []byte(key)) {
		return 0, false
	}
	j := len(key)
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		k++
	}
	v, err := strconv.Atoi(string(b[j:k]))
	return v, err == nil
}

// tracker records, by sequence number, when each message was published
// and when MNS first stored it, and how often it was stored. It is sized
// for n messages up front; its methods are safe for concurrent use.
type tracker struct {
	start time.Time // times are kept as offsets from start

	mu        sync.Mutex
	published []time.Duration // publish time of seq; 0 until published (offsets are > 0)
	stored    []time.Duration // first store time of seq; 0 while not stored
	count     []uint8         // stores of seq, saturating at 255
	nPub      int             // messages published: seq 0..nPub-1
	unique    int             // seqs stored at least once
	dups      int             // stores beyond the first
	foreign   int             // stored bodies that are not ours
}

// newTracker returns a tracker for messages 0..n-1.
func newTracker(n int, start time.Time) *tracker {
	return &tracker{start: start, published: make([]time.Duration, n), stored: make([]time.Duration, n), count: make([]uint8, n)}
}

// since is the offset of now from start, never 0 (0 means "not yet").
func (t *tracker) since(now time.Time) time.Duration {
	return max(now.Sub(t.start), 1)
}

// markPublished records that seq was published at now. Seqs are published
// in order.
func (t *tracker) markPublished(seq int, now time.Time) {
	t.mu.Lock()
	t.published[seq] = t.since(now)
	t.nPub = seq + 1
	t.mu.Unlock()
}

// markStored records that MNS stored the message with this body (the
// MessageBody text as sent: base64 of the JSON body) at now.
func (t *tracker) markStored(body string, now time.Time) {
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		raw = []byte(body) // body_encoding: raw
	}
	seq, ok := parseSeq(raw)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok || seq < 0 || seq >= len(t.stored) {
		t.foreign++
		return
	}
	if t.count[seq] == 0 {
		t.stored[seq] = t.since(now)
		t.unique++
	} else {
		t.dups++
	}
	if t.count[seq] < 255 {
		t.count[seq]++
	}
}

// counts returns the messages published and stored (once or more) so far.
func (t *tracker) counts() (published, unique, dups int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nPub, t.unique, t.dups
}

// backlogAt returns how many messages were published before offset at,
// and how many of those were stored by then.
func (t *tracker) backlogAt(at time.Duration) (published, stored int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < t.nPub; i++ {
		if t.published[i] >= at {
			break
		}
		published++
		if s := t.stored[i]; s != 0 && s <= at {
			stored++
		}
	}
	return published, stored
}

// recovery returns how long after offset at the last message published
// before at was stored (0 when all were stored by at), and false when one
// of them is not stored at all.
func (t *tracker) recovery(at time.Duration) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var last time.Duration
	for i := 0; i < t.nPub; i++ {
		if t.published[i] >= at {
			break
		}
		s := t.stored[i]
		if s == 0 {
			return 0, false
		}
		last = max(last, s)
	}
	return max(last-at, 0), true
}

// lost returns the published messages not stored, and the first few of
// their sequence numbers.
func (t *tracker) lost(first int) (n int, seqs []int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := 0; i < t.nPub; i++ {
		if t.count[i] == 0 {
			n++
			if len(seqs) < first {
				seqs = append(seqs, i)
			}
		}
	}
	return n, seqs
}

// latencies returns the sorted publish-to-first-store latencies of the
// messages stored.
func (t *tracker) latencies() []time.Duration {
	t.mu.Lock()
	out := make([]time.Duration, 0, t.unique)
	for i := 0; i < t.nPub; i++ {
		if s := t.stored[i]; s != 0 {
			out = append(out, max(s-t.published[i], 0))
		}
	}
	t.mu.Unlock()
	slices.Sort(out)
	return out
}
