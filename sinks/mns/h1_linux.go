//go:build linux && !386

package mns

import (
	"net"
	"syscall"
	"unsafe"
)

// canPeek says open can tell a closed kept connection from an open one.
const canPeek = true

// open reports whether an idle connection can carry a request: the server
// has neither closed it nor sent anything since the last reply. It peeks
// at the socket without waiting, as a raw system call: it never blocks, and
// one made through the scheduler would wake the runtime's sysmon thread
// when the bridge was idle (see internal/rawio).
func open(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		// Nothing to read (EAGAIN) is an open, quiet connection; a byte or
		// the end of the stream means it cannot take a request.
		alive = e == syscall.EAGAIN || e == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && alive
}
