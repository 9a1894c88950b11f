package source

import (
	"context"
	"errors"
	"fmt"
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

// A dial that the dial timeout cut short says so in one text whatever step
// it cut (the TCP connect, the TLS handshake, a step of the login) and
// however the limit fired (the context's timer or the socket's deadline):
// against a server slow at every step, each attempt stopped at another
// step, and the raw text quoted it ('awaiting sasl-outcome', 'awaiting
// sasl-mechanisms', 'read the SASL protocol header'), so the supervisor's
// one line per shape of failure logged an ERROR at nearly every attempt
// (walk8: 4 a minute for one cause).
func TestDialTimeoutIsOneFailureWhateverTheStep(t *testing.T) {
	names := Names{FieldEndpoint: "EP", FieldDialTimeout: "DT"}
	read := func(local int) error {
		return &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: local},
			Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5671}, Err: os.ErrDeadlineExceeded}
	}
	raw := []error{
		&net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5671}, Err: os.ErrDeadlineExceeded},
		&handshakeError{context.DeadlineExceeded},
		&handshakeError{read(40112)},
		fmt.Errorf("read the SASL protocol header: %w", read(40113)),
		fmt.Errorf("awaiting sasl-mechanisms: %w", read(40114)),
		fmt.Errorf("awaiting sasl-outcome: %w (%w)", context.DeadlineExceeded, read(40115)),
		fmt.Errorf("awaiting sasl-outcome: %w", read(40116)),
		fmt.Errorf("awaiting open: %w", context.DeadlineExceeded),
	}
	var first error
	for _, r := range raw {
		err := ExplainDial(names, "amqp connect to 127.0.0.1:5671 as c1", 15*time.Second, r)
		if !strings.Contains(err.Error(), "timed out after 15s (DT); check EP, the network and any firewall") {
			t.Errorf("%q does not name the dial timeout and what to check", err)
		}
		if !errors.Is(err, r) {
			t.Errorf("%v does not wrap the cause %v", err, r)
		}
		if first == nil {
			first = err
		} else if FailureShape(err.Error()) != FailureShape(first.Error()) {
			t.Errorf("two failures for one dial timeout:\n%s\n%s", first, err)
		}
	}
}
