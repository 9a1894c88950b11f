package monotime

import (
	"testing"
	"time"
)

// monotonic reports whether t carries a monotonic clock reading: Round(0)
// strips it, and nothing else.
func monotonic(t time.Time) bool { return t != t.Round(0) }

// A Stamp of time.Now keeps its monotonic reading, so the time elapsed
// since it is counted on the monotonic clock (time.Time.Sub uses it when
// both instants have one) and a step of the wall clock does not change it.
// The Unix nanoseconds it replaced had none (shown by the last check).
func TestStampKeepsTheMonotonicClock(t *testing.T) {
	var s Stamp
	now := time.Now()
	s.Store(now)
	got := s.Load()
	if !monotonic(got) {
		t.Fatalf("Load() = %v has no monotonic reading: elapsed times would follow the wall clock's steps", got)
	}
	if d := got.Sub(now); d != 0 {
		t.Errorf("Load() is %v from the instant stored, want 0", d)
	}
	if monotonic(time.Unix(0, now.UnixNano())) {
		t.Error("a Unix nanosecond count keeps a monotonic reading: this test shows nothing")
	}
}

func TestStampWithoutInstant(t *testing.T) {
	var s Stamp
	if got := s.Load(); !got.IsZero() {
		t.Errorf("zero Stamp's Load() = %v, want the zero time", got)
	}
	now := time.Now()
	if prev := s.Swap(now); !prev.IsZero() {
		t.Errorf("first Swap returned %v, want the zero time", prev)
	}
	if prev := s.Swap(now.Add(time.Second)); prev.Sub(now) != 0 {
		t.Errorf("second Swap returned %v, want the first instant %v", prev, now)
	}
	s.Store(origin)
	if got := s.Load(); got.IsZero() || got.Sub(origin) != time.Nanosecond {
		t.Errorf("origin itself loads as %v (%v from origin), want it 1 ns later, not none", got, got.Sub(origin))
	}
}

// A test's clock has no monotonic reading: its instants are kept by the
// wall clock, exactly, far from origin too.
func TestStampOfAClockWithoutMonotonicReading(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC),
		time.Date(2001, 1, 1, 0, 0, 0, 123, time.UTC),
		time.Now().Round(0).Add(-time.Hour),
	} {
		var s Stamp
		s.Store(at)
		if got := s.Load(); !got.Equal(at) {
			t.Errorf("Store(%v) loads %v", at, got)
		}
		if later := at.Add(90 * time.Second); later.Sub(s.Load()) != 90*time.Second {
			t.Errorf("90 s after %v: elapsed %v", at, later.Sub(s.Load()))
		}
	}
}
