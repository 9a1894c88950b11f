// Package testpeers starts the project's test peers for tests: the MNS
// emulator on a loopback HTTP server (Serve, for any handler) and the IoT
// platform simulator with its CA certificate written to a file, each stopped
// when the test ends, and Bodies, what the emulator holds in a queue. It also
// has CA and TLSFiles, throwaway certificates in files; SyncBuffer, for
// capturing a bridge's log while it runs; Get, a GET's status and body;
// FreePort, for a port a child process binds later; and RunTests and
// StartChild, to run the test binary as the command under test in a child
// process.
package testpeers

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/syncbuf"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// StartMNS serves a new emulator with cfg on 127.0.0.1 and returns it with
// its host:port. The server closes when the test ends.
func StartMNS(t testing.TB, cfg mnsemu.Config) (*mnsemu.Emulator, string) {
	t.Helper()
	emu := mnsemu.New(cfg)
	return emu, Serve(t, emu)
}

// Serve serves h over HTTP on 127.0.0.1 until the test ends and returns its
// host:port. When the test ends the server closes at once, with the
// connections of requests still being served.
func Serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Bodies returns how many times each body (base64-decoded, as the bridge
// sends it) is stored in the emulator's queue. A stored body that is not
// base64 fails the test.
func Bodies(t testing.TB, emu *mnsemu.Emulator, queue string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, m := range emu.Messages(queue) {
		b, err := m.DecodedBody()
		if err != nil {
			t.Fatalf("stored body %q is not base64: %v", m.Body, err)
		}
		got[string(b)]++
	}
	return got
}

// Get sends a GET of url through client (nil: http.DefaultClient), with
// basic auth when user is set, and returns the status code and the body; the
// test stops when no reply comes.
func Get(t testing.TB, client *http.Client, url, user, pw string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// FreePort returns a loopback port nothing listens on, for a process that
// binds it later (a child bridge's http.listen). It is taken from
// 29000-32499, below Linux's ephemeral range (32768 and up): a port the kernel
// hands out for ":0" can be taken by an outgoing connection of a test running
// beside this one before the child binds it; one from this range cannot.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := PickFreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PickFreePort is FreePort for code that has no testing.TB (the benchmark
// harness's child bridges): a free loopback port from 29000-32499, or an
// error when every one is taken.
func PickFreePort() (int, error) {
	const first, count = 29000, 3500
	start := rand.IntN(count)
	for i := range count {
		port := first + (start+i)%count
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port in %d-%d", first, first+count-1)
}

// StartIoT starts the simulator with cfg on 127.0.0.1 and writes the CA that
// signed its certificate to dir/ca.pem, whose path it returns. The simulator
// closes when the test ends.
func StartIoT(t testing.TB, cfg iotsim.Config, dir string) (*iotsim.Server, string) {
	t.Helper()
	sim, err := iotsim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim, testfile.Write(t, dir, "ca.pem", string(sim.CACertPEM()))
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers (a
// bridge logs from many goroutines; a child process's output is copied by
// os/exec while the test reads it): internal/syncbuf's, which packages
// that testpeers imports can use in their own tests.
type SyncBuffer = syncbuf.Buffer

// Child is a bridge run as a child process: the test binary re-executed
// with an environment variable that makes its TestMain run the bridge, so
// that tests can SIGKILL it.
type Child struct {
	Cmd *exec.Cmd
	Out *SyncBuffer // its stdout and stderr
}

// StartChild re-executes the test binary with env ("NAME=1") added and
// args; the child is killed when the test ends if it still runs.
func StartChild(t testing.TB, env string, args ...string) *Child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	// The child never asks the cloud metadata address for credentials,
	// whatever its config says.
	cmd.Env = append(os.Environ(), env, "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true")
	out := &SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("the child %v wrote (the last %d KiB at most):\n%s", args, maxChildLog>>10, lastBytes(out.String(), maxChildLog))
		}
	})
	return &Child{Cmd: cmd, Out: out}
}

// maxChildLog bounds what a failed test shows of a child's output.
const maxChildLog = 64 << 10

// lastBytes is the end of s, at most n bytes, from a line's start.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// Kill9 sends SIGKILL and waits for the child to end.
func (c *Child) Kill9(t testing.TB) {
	t.Helper()
	if err := c.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.Cmd.Wait()
}

// Term sends SIGTERM and returns the exit code, failing the test when the
// child has not exited within a minute.
func (c *Child) Term(t testing.TB) int {
	t.Helper()
	c.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("the bridge did not exit within a minute of SIGTERM:\n%s", c.Out)
	}
	return c.Cmd.ProcessState.ExitCode()
}

// AsMainEnv, set to 1 in a test binary's environment, makes the binary
// behave as the command under test (see RunTests); StartChild(t,
// AsMainEnv+"=1", args...) runs it so.
const AsMainEnv = "IOT_MNS_BRIDGE_TEST_AS_MAIN"

// RunTests is a package's TestMain: with AsMainEnv=1 the test binary is the
// command itself, main runs with the arguments and a context that ends at
// SIGINT or SIGTERM, and the process exits with its code (so that tests can
// run the command as a child process and kill -9 it); otherwise it runs the
// tests.
func RunTests(m *testing.M, main func(ctx context.Context, args []string) int) {
	if os.Getenv(AsMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := main(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TLSFiles makes a throwaway CA and a server certificate for loopback
// (certgen.New) and writes them to dir as ca.pem, tls.crt and tls.key: the
// files of a test's TLS server config (an HTTP web config's cert_file and
// key_file) and of its client's trust.
func TLSFiles(t testing.TB, dir string) *certgen.Bundle {
	t.Helper()
	b, err := certgen.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteFiles(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
		t.Fatal(err)
	}
	return b
}

// CA makes a throwaway CA and a server certificate for loopback
// (certgen.New) and writes the CA certificate to ca.pem in a temporary
// directory: the bundle serves a test's TLS listener, the file is a
// client's source.tls.ca_file.
func CA(t testing.TB) (*certgen.Bundle, string) {
	t.Helper()
	b, err := certgen.New()
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := b.WriteFiles(ca, "", ""); err != nil {
		t.Fatal(err)
	}
	return b, ca
}
