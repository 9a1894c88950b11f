package source

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A server that resets each connection as it comes (nothing listening
// behind a proxy or load balancer, a firewall that rejects with a reset)
// fails a dial in its connect or in the TLS handshake's first write, by
// chance: both are explained alike and in the same words, so that the
// supervisor's one line per shape of failure holds through an outage. The
// two texts alternated, the write's with no advice, and each attempt of a
// ten-minute outage logged an ERROR line (walk8, faultproxy refusing).
func TestResetBeforeTheLoginIsOneFailure(t *testing.T) {
	names := Names{FieldEndpoint: "EP", FieldDialTimeout: "DT"}
	connect := &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41019},
		Err: os.NewSyscallError("connect", syscall.ECONNRESET)}
	write := &net.OpError{Op: "write", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41019},
		Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 59240}, Err: os.NewSyscallError("write", syscall.ECONNRESET)}
	a := ExplainDial(names, "stomp connect 127.0.0.1:41019", time.Second, connect)
	b := ExplainDial(names, "stomp connect 127.0.0.1:41019", time.Second, write)
	if FailureShape(a.Error()) != FailureShape(b.Error()) {
		t.Errorf("a reset in the connect and in the first write are two failures:\n%s\n%s", a, b)
	}
	for _, err := range []error{a, b} {
		if !strings.Contains(err.Error(), "reset the connection") || !strings.Contains(err.Error(), "check EP") {
			t.Errorf("%q does not say the server reset the connection and what to check", err)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("%v does not wrap the cause", err)
		}
	}
}
