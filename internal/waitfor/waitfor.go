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
//
// Time in which the waiter itself did not run does not count against
// limit: when a pause of at most 10 ms lasted over a second, the machine
// (or this process) was frozen, by memory thrashing for instance (CI run
// 40: a test failed on its first poll after such a freeze, before the
// code it waited for had a chance to run), and what the test waits for
// was frozen too. The deadline moves by the excess, up to 3 x limit after
// the start in all, so a hang still fails.
func Until(t testing.TB, what string, limit time.Duration, cond func() bool, detail ...func() string) {
	t.Helper()
	start := now()
	deadline, hardStop := start.Add(limit), start.Add(3*limit)
	pause := time.Millisecond
	for !cond() {
		if now().After(deadline) {
			msg := "timed out after " + limit.String() + " waiting for " + what
			if d := deadline.Sub(start.Add(limit)); d > 0 {
				msg += " (and " + d.Round(time.Millisecond).String() + " in which this process did not run)"
			}
			for _, d := range detail {
				msg += ": " + d()
			}
			t.Fatal(msg)
		}
		if f := Pause(pause); f > 0 {
			deadline = deadline.Add(f)
			if deadline.After(hardStop) {
				deadline = hardStop
			}
		}
		pause = min(2*pause, 10*time.Millisecond)
	}
}

// Pause sleeps d and returns by how much the sleep overran when that was
// over a second: time in which this process was frozen, which a waiter
// with its own loop should not count against its limit; 0 otherwise.
func Pause(d time.Duration) time.Duration {
	before := now()
	sleep(d)
	if over := now().Sub(before) - d; over > frozen {
		return over
	}
	return 0
}

// frozen is how much longer than asked a pause must last before Until
// takes it for a freeze of the waiter, not for a busy machine.
const frozen = time.Second

// now and sleep are the clock; tests replace them.
var (
	now   = time.Now
	sleep = time.Sleep
)
