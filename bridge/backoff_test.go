package bridge

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithJitterAndResets(t *testing.T) {
	for _, r := range []float64{0, 0.999} {
		b := Backoff{Min: time.Second, Max: 60 * time.Second, Rand: func() float64 { return r }}
		for i, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 60 * time.Second, 60 * time.Second} {
			got := b.Next()
			if got < d/2 || got > d {
				t.Fatalf("rand %v, attempt %d: %s not in [%s, %s]", r, i, got, d/2, d)
			}
		}
		b.Reset()
		if got := b.Next(); got > time.Second {
			t.Fatalf("after Reset: %s, want at most Min", got)
		}
	}
}
