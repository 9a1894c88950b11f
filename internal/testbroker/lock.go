package testbroker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Cross-process coordination of Restart with the tests that use the broker.
//
// Every test that called RabbitMQ holds a shared flock on <dir>/test.lock.
// Restart drops its own, takes <dir>/test.turnstile exclusively (so no new
// test can take a shared lock), takes test.lock exclusively (waiting for the
// running tests to end), restarts, goes back to a shared lock and opens the
// turnstile. Tests take the turnstile briefly before their shared lock, so a
// waiting Restart is not starved. Dropping the shared lock before queueing
// at the turnstile keeps two restarting tests from deadlocking.

const lockWait = 5 * time.Minute

// brokerLock is one test's shared hold on the broker.
type brokerLock struct {
	dir  string
	main *os.File
}

func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return f, nil
}

// lockHeld, when set (by a test of this package), is called once per
// flockWait that finds the lock held, before it waits.
var lockHeld func(name string)

// flockWait polls flock(how|LOCK_NB) until it succeeds or lockWait passes.
func flockWait(f *os.File, how int, what string) error {
	deadline := time.Now().Add(lockWait)
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if !waited && lockHeld != nil {
			lockHeld(filepath.Base(f.Name()))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock %s: still held after %s by %s", f.Name(), lockWait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// acquireShared takes a shared hold on the broker in dir.
func acquireShared(dir string) (*brokerLock, error) {
	gate, err := openLockFile(filepath.Join(dir, "test.turnstile"))
	if err != nil {
		return nil, err
	}
	defer gate.Close() // closing drops the flock
	if err := flockWait(gate, syscall.LOCK_EX, "a test restarting the broker"); err != nil {
		return nil, err
	}
	main, err := openLockFile(filepath.Join(dir, "test.lock"))
	if err != nil {
		return nil, err
	}
	if err := flockWait(main, syscall.LOCK_SH, "a test restarting the broker"); err != nil {
		main.Close()
		return nil, err
	}
	return &brokerLock{dir: dir, main: main}, nil
}

// release ends the hold.
func (l *brokerLock) release() { l.main.Close() }

// exclusive turns the shared hold into an exclusive one, waiting for every
// other holder to let go. The returned function makes it shared again.
func (l *brokerLock) exclusive() (shared func() error, err error) {
	if err := syscall.Flock(int(l.main.Fd()), syscall.LOCK_UN); err != nil {
		return nil, fmt.Errorf("unlock %s: %w", l.main.Name(), err)
	}
	gate, err := openLockFile(filepath.Join(l.dir, "test.turnstile"))
	if err != nil {
		return nil, err
	}
	if err := flockWait(gate, syscall.LOCK_EX, "another test restarting the broker"); err != nil {
		gate.Close()
		return nil, err
	}
	if err := flockWait(l.main, syscall.LOCK_EX, "tests of other packages still using the broker"); err != nil {
		gate.Close()
		return nil, err
	}
	return func() error {
		defer gate.Close()
		if err := syscall.Flock(int(l.main.Fd()), syscall.LOCK_SH); err != nil {
			return fmt.Errorf("lock %s shared: %w", l.main.Name(), err)
		}
		return nil
	}, nil
}
