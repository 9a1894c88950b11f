// Package monotime keeps an instant that goroutines store and load without
// a lock, on the monotonic clock: the time between two instants of
// time.Now, one of them kept in a Stamp, is the time that passed, whatever
// the wall clock did meanwhile (NTP stepping the clock of a box that
// started without a real-time clock, an operator's date -s). A Unix
// nanosecond count in an atomic.Int64, the form it replaces, keeps the wall
// clock only, so a step of it reads as time passed (or, stepped back, as
// none): a silence watch drops a live connection, a liveness check sees a
// stall.
//
// An instant without a monotonic reading (a test's clock, a time parsed or
// built with time.Date) is kept by its wall clock, as time.Time's own
// methods compare it.
package monotime

import (
	"sync/atomic"
	"time"
)

// origin is what a Stamp counts from; it has a monotonic reading.
var origin = time.Now()

// Stamp is an instant. The zero value holds none: Load returns the zero
// time. Safe for concurrent use.
type Stamp struct {
	// since is the instant's distance from origin, in nanoseconds (on the
	// monotonic clock when the instant has a reading); 0 means none, so an
	// instant exactly at origin is kept 1 ns later.
	since atomic.Int64
}

// Store keeps t.
func (s *Stamp) Store(t time.Time) { s.since.Store(encode(t)) }

// Load returns the instant kept, with a monotonic reading, or the zero time
// when none was stored. Its wall clock reading is origin's plus the time
// since it: after a step of the wall clock it differs from the clock's by
// the step (format instants for people from time.Now minus the elapsed
// time, not from Load).
func (s *Stamp) Load() time.Time { return decode(s.since.Load()) }

// Swap keeps t and returns the instant kept before (the zero time: none).
func (s *Stamp) Swap(t time.Time) time.Time { return decode(s.since.Swap(encode(t))) }

func encode(t time.Time) int64 {
	if d := int64(t.Sub(origin)); d != 0 {
		return d
	}
	return 1
}

func decode(d int64) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return origin.Add(time.Duration(d))
}
