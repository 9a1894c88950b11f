package rawio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a *net.TCPConn with raw Read and Write.
//
// Each direction keeps its call's state in the Conn, under its own lock, and
// hands the poller a function made once in wrap: a Read or Write allocates
// nothing (a closure per call would put it and what it captures on the
// heap, once per message).
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
}

func wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rw := &Conn{TCPConn: tc, rc: rc}
	rw.readFn, rw.writeFn = rw.readOnce, rw.writeSome
	return rw
}

// Read reads what the socket holds, waiting in the network poller (with
// the connection's read deadline) while it holds nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce is the poller's callback of Read: false while the socket holds
// nothing.
func (c *Conn) readOnce(fd uintptr) bool {
	for {
		r, e := read(fd, c.rbuf)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.rn = r
		default:
			c.rerrno = e
		}
		return true
	}
}

// Write writes all of p, waiting in the network poller (with the
// connection's write deadline) while the socket has no room.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf, c.wn, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	written, errno := c.wn, c.werrno
	c.wbuf = nil
	switch {
	case err != nil:
		return written, c.opError("write", err)
	case errno != 0:
		return written, c.opError("write", os.NewSyscallError("write", errno))
	}
	return written, nil
}

// writeSome is the poller's callback of Write: false while the socket has
// no room for the rest.
func (c *Conn) writeSome(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		r, e := write(fd, c.wbuf[c.wn:])
		switch e {
		case 0:
			c.wn += r
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

// opError wraps err as net.Conn's methods do. An error of the poller (a
// deadline, a closed connection) is already a *net.OpError ("raw-read"):
// its cause is taken, so that the text is net.Conn's, not the address twice.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
