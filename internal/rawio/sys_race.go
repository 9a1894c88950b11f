//go:build linux && race

package rawio

import "syscall"

// Under the race detector the reads and writes go through package syscall,
// which tells the detector that a write to a socket happens before the
// peer's read of it (tests rely on that order) and what a read wrote.
func read(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errnoOf(err)
}

func write(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
