// Package rawio is a TCP connection whose reads and writes are raw system
// calls on its non-blocking socket: they never block (when the socket has
// no data or no room, the goroutine waits in the network poller as
// net.Conn's do), so they need not tell the Go scheduler they enter a
// system call.
//
// That matters at a moderate message rate. Between two messages the
// process goes idle, and the runtime's monitor thread (sysmon) then sleeps
// until a timer is due; the first system call made through the scheduler
// after that wakes it, and it runs and sleeps again: three thread switches
// for every message that arrives while the process was idle, about a fifth
// of the bridge's CPU at 5,000 msgs/s (bench/README, "Cost per message,
// third pass"). A raw read or write does not wake it.
package rawio

import (
	"net"
	"os"
)

// Wrap returns c with raw reads and writes when c is a TCP connection on
// Linux, else c itself.
func Wrap(c net.Conn) net.Conn { return wrap(c) }

// WriteFile writes all of p to f, a regular file, with raw write system
// calls on Linux (a write to the page cache, which does not wait for the
// disk: it need not enter the scheduler, so it wakes no monitor thread),
// else with f.Write. For small, frequent appends such as a journal's.
func WriteFile(f *os.File, p []byte) (int, error) { return writeFile(f, p) }
