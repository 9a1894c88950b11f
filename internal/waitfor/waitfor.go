// Package waitfor is how tests wait for something observable: poll a
// condition (a counter, a state, a log line) until it holds. The limit only
// turns a hang into a failure; it is never a timing threshold, so it is
// generous. It has no dependencies, so that every package's tests can use
// it (the simulator's and the emulator's too).
package waitfor

import (
	"testing"
	"time"
)

// Until polls cond until it holds. The first polls are 1 ms apart, later
// ones up to 10 ms, so that a quick condition is seen at once and a slow
// one costs little CPU. After limit it fails the test: "timed out after
// <limit> waiting for <what>", followed by detail() when detail is given.
func Until(t testing.TB, what string, limit time.Duration, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			msg := "timed out after " + limit.String() + " waiting for " + what
			for _, d := range detail {
				msg += ": " + d()
			}
			t.Fatal(msg)
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}
