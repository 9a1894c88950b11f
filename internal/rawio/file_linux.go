//go:build linux

package rawio

import (
	"io"
	"os"
	"syscall"
)

func writeFile(f *os.File, p []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	var errno syscall.Errno
	err = rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			m, e := write(fd, p[n:])
			switch {
			case e == syscall.EINTR:
				continue
			case e != 0:
				errno = e
				return true
			case m == 0:
				errno = syscall.EIO
				return true
			}
			n += m
		}
		return true
	})
	if err == nil && errno != 0 {
		err = &os.PathError{Op: "write", Path: f.Name(), Err: errno}
	}
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}
