package childbridge

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestFreeAddrIsBelowTheEphemeralRange: the child bridge binds the address
// FreeAddr returns a moment later; a port from the kernel's ephemeral range
// (what listening on ":0" gives) can be taken meanwhile by any outgoing
// connection on the host ("bind: address already in use" in CI).
func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skipf("no ephemeral port range to compare with: %v", err)
	}
	f := strings.Fields(string(b))
	low, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	for range 20 {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("FreeAddr() = %q: %v", addr, err)
		}
		port, _ := strconv.Atoi(p)
		if host != "127.0.0.1" || port <= 0 || port >= low {
			t.Fatalf("FreeAddr() = %q, want 127.0.0.1 and a port below the ephemeral range (%d and up)", addr, low)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr() = %q is not free: %v", addr, err)
		}
		ln.Close()
	}
}
