package childbridge

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
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

// TestStatusKB: the figures of a /proc/<pid>/status file by key, and this
// process's own memory.
func TestStatusKB(t *testing.T) {
	path := testfile.Write(t, t.TempDir(), "status", "Name:\tbridge\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n")
	kb, err := statusKB(path)
	if err != nil {
		t.Fatal(err)
	}
	if kb["VmHWM"] != 20480 || kb["VmRSS"] != 10240 || kb["Threads"] != 7 || len(kb) != 3 {
		t.Errorf("statusKB = %v, want VmHWM 20480, VmRSS 10240, Threads 7 and nothing else", kb)
	}
	if _, err := statusKB(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("statusKB of a missing file: no error")
	}
	if n := selfRssAnonKB(); n <= 0 {
		t.Errorf("selfRssAnonKB() = %d, want this process's anonymous RSS", n)
	}
}
