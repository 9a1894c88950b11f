package waitfor

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	go func() {
		for range 5 {
			n.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	Until(t, "five", time.Minute, func() bool { return n.Load() == 5 })
}

// fakeTB records a Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.msg = args[0].(string)
	panic(f)
}

func TestUntilFailsAfterTheLimitNamingWhat(t *testing.T) {
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("recovered %v, want the Fatal", r)
			}
		}()
		Until(f, "never", 20*time.Millisecond, func() bool { return false }, func() string { return "state x" })
	}()
	if !strings.Contains(f.msg, "waiting for never: state x") {
		t.Errorf("message %q", f.msg)
	}
}

// fakeClock is a clock in which each sleep lasts what the test says.
type fakeClock struct {
	t     time.Time
	naps  []time.Duration // how long each sleep really lasts; then as asked
	polls int
}

func (c *fakeClock) install(t *testing.T) {
	oldNow, oldSleep := now, sleep
	now = func() time.Time { return c.t }
	sleep = func(d time.Duration) {
		if len(c.naps) > 0 {
			d, c.naps = c.naps[0], c.naps[1:]
		}
		c.t = c.t.Add(d)
	}
	t.Cleanup(func() { now, sleep = oldNow, oldSleep })
}

// TestUntilDoesNotCountAFreezeOfTheWaiter: the third pause lasts two
// minutes (the process was frozen) with a limit of one minute; the
// condition holds at the next polls. Until must give the code it waits for
// that chance instead of failing on the first poll after the freeze.
func TestUntilDoesNotCountAFreezeOfTheWaiter(t *testing.T) {
	c := &fakeClock{t: time.Unix(1e9, 0), naps: []time.Duration{time.Millisecond, 2 * time.Millisecond, 2 * time.Minute}}
	c.install(t)
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Until failed after a freeze: %v", f.msg)
			}
		}()
		Until(f, "after the freeze", time.Minute, func() bool { c.polls++; return c.polls > 5 })
	}()
}

// TestUntilStillFailsAHangAcrossFreezes: freezes move the deadline, but
// never past 3 x limit after the start, and the message says how long the
// waiter did not run.
func TestUntilStillFailsAHangAcrossFreezes(t *testing.T) {
	c := &fakeClock{t: time.Unix(1e9, 0)}
	for range 10 {
		c.naps = append(c.naps, 50*time.Second)
	}
	c.install(t)
	start := c.t
	f := &fakeTB{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("recovered %v, want the Fatal", r)
			}
		}()
		Until(f, "never", time.Minute, func() bool { return false })
	}()
	if waited := c.t.Sub(start); waited > 3*time.Minute+50*time.Second {
		t.Errorf("failed after %v, want at most 3 x limit (+ one pause)", waited)
	}
	if !strings.Contains(f.msg, "timed out after 1m0s waiting for never (and ") || !strings.Contains(f.msg, "in which this process did not run") {
		t.Errorf("message %q", f.msg)
	}
}

func TestPauseReportsOnlyAFreeze(t *testing.T) {
	c := &fakeClock{t: time.Unix(1e9, 0), naps: []time.Duration{900 * time.Millisecond, 3 * time.Second}}
	c.install(t)
	if f := Pause(10 * time.Millisecond); f != 0 {
		t.Errorf("an overrun of 890 ms (a busy machine) reported as a freeze of %v", f)
	}
	if f := Pause(10 * time.Millisecond); f != 3*time.Second-10*time.Millisecond {
		t.Errorf("a 3 s sleep of 10 ms reported as a freeze of %v, want 2.99s", f)
	}
	if f := Pause(10 * time.Millisecond); f != 0 {
		t.Errorf("a sleep on time reported as a freeze of %v", f)
	}
}
