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
