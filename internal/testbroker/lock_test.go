package testbroker

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tryLock reports whether a fresh open file description can take how on
// the named lock file right now.
func tryLock(t *testing.T, dir, name string, how int) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
	if err != nil && !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return err == nil
}

func TestLockExclusiveKeepsOthersOut(t *testing.T) {
	dir := t.TempDir()
	l, err := acquireShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	if !tryLock(t, dir, "test.lock", syscall.LOCK_SH) {
		t.Fatal("a second shared hold was refused, want it allowed")
	}
	if tryLock(t, dir, "test.lock", syscall.LOCK_EX) {
		t.Fatal("an exclusive lock was granted while a test holds the broker")
	}
	shared, err := l.exclusive()
	if err != nil {
		t.Fatal(err)
	}
	if tryLock(t, dir, "test.lock", syscall.LOCK_SH) {
		t.Error("a shared hold was granted during a restart")
	}
	if tryLock(t, dir, "test.turnstile", syscall.LOCK_EX) {
		t.Error("the turnstile was open during a restart")
	}
	if err := shared(); err != nil {
		t.Fatal(err)
	}
	if !tryLock(t, dir, "test.lock", syscall.LOCK_SH) || !tryLock(t, dir, "test.turnstile", syscall.LOCK_EX) {
		t.Error("locks not given back after the restart")
	}
	if tryLock(t, dir, "test.lock", syscall.LOCK_EX) {
		t.Error("the restarting test lost its shared hold")
	}
}

func TestLockExclusiveWaitsForOtherHolders(t *testing.T) {
	a, b := twoShared(t)
	type result struct {
		shared func() error
		err    error
	}
	done := make(chan result, 1)
	go func() {
		s, err := a.exclusive()
		done <- result{s, err}
	}()
	// a cannot finish while b holds the broker; releasing b lets it.
	b.release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := r.shared(); err != nil {
		t.Fatal(err)
	}
	a.release()
}

func TestLockTwoRestartersDoNotDeadlock(t *testing.T) {
	a, b := twoShared(t)
	errs := make(chan error, 2)
	for _, l := range []*brokerLock{a, b} {
		go func() {
			shared, err := l.exclusive()
			if err == nil {
				err = shared()
			}
			l.release()
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// twoShared takes two shared holds of one fresh lock directory, as two
// test processes using the broker do.
func twoShared(t *testing.T) (a, b *brokerLock) {
	t.Helper()
	dir := t.TempDir()
	a, err := acquireShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err = acquireShared(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}
