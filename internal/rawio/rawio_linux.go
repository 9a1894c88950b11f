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
	r, w direction
}

// direction is one way of a Conn: the state of the call in progress, under
// mu, and what hands it to the poller.
type direction struct {
	mu    sync.Mutex
	buf   []byte
	n     int                               // bytes read or written
	errno syscall.Errno                     // the system call's failure
	poll  func(func(fd uintptr) bool) error // the RawConn's Read or Write
	fn    func(fd uintptr) bool             // the poller's callback: readOnce or writeSome
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
	rw := &Conn{TCPConn: tc}
	rw.r.poll, rw.r.fn = rc.Read, rw.readOnce
	rw.w.poll, rw.w.fn = rc.Write, rw.writeSome
	return rw
}

// Read reads what the socket holds, waiting in the network poller (with
// the connection's read deadline) while it holds nothing.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.do(&c.r, "read", p)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// readOnce is the poller's callback of Read: false while the socket holds
// nothing.
func (c *Conn) readOnce(fd uintptr) bool {
	for {
		r, e := read(fd, c.r.buf)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
			c.r.n = r
		default:
			c.r.errno = e
		}
		return true
	}
}

// Write writes all of p, waiting in the network poller (with the
// connection's write deadline) while the socket has no room.
func (c *Conn) Write(p []byte) (int, error) {
	return c.do(&c.w, "write", p)
}

// writeSome is the poller's callback of Write: false while the socket has
// no room for the rest.
func (c *Conn) writeSome(fd uintptr) bool {
	for c.w.n < len(c.w.buf) {
		r, e := write(fd, c.w.buf[c.w.n:])
		switch e {
		case 0:
			c.w.n += r
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.w.errno = e
			return true
		}
	}
	return true
}

// do runs one call of direction d on p under d's lock: the poller calls
// d.fn until it is done. It returns the bytes read or written (a read that
// failed has read none) and an error as net.Conn's, op ("read", "write")
// naming the call.
func (c *Conn) do(d *direction, op string, p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf, d.n, d.errno = p, 0, 0
	err := d.poll(d.fn)
	n, errno := d.n, d.errno
	d.buf = nil
	switch {
	case err != nil:
		return n, c.opError(op, err)
	case errno != 0:
		return n, c.opError(op, os.NewSyscallError(op, errno))
	}
	return n, nil
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
