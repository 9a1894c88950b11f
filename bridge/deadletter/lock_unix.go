//go:build unix

package deadletter

import (
	"errors"
	"os"
	"syscall"
)

// lock takes an exclusive, non-blocking advisory lock on f, released when f
// is closed.
func lock(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	return err
}
