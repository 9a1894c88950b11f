package bridge

import (
	"math/rand/v2"
	"time"
)

// Backoff computes jittered exponential delays: each delay is drawn
// uniformly from [d/2, d] where d doubles from Min up to Max. It is not safe
// for concurrent use; each connection slot owns one.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a number in [0,1); nil uses math/rand/v2.
	Rand    func() float64
	attempt int
}

// Next returns the delay before the next attempt and advances the backoff.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = time.Second
	}
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 0; i < b.attempt && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	b.attempt++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Reset starts the backoff again from Min.
func (b *Backoff) Reset() { b.attempt = 0 }
