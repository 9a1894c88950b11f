package app

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// testBridge is a bridge a test runs in-process: Run is going until stop or
// the end of the test.
type testBridge struct {
	*Bridge
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// mustLoad loads the config file at path or fails the test.
func mustLoad(t testing.TB, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runBridge builds the bridge for cfg with opts and runs it. The test's
// cleanup stops it and waits for Run to return; call stop to do that earlier
// and see Run's error.
func runBridge(t testing.TB, cfg *config.Config, opts Options) *testBridge {
	t.Helper()
	b, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb := &testBridge{Bridge: b, cancel: cancel, done: make(chan error, 1)}
	go func() { tb.done <- b.Run(ctx) }()
	t.Cleanup(func() { tb.stop() })
	return tb
}

// stop cancels Run, waits for it and returns its error (the same error on
// every call).
func (b *testBridge) stop() error {
	b.once.Do(func() {
		b.cancel()
		b.err = <-b.done
	})
	return b.err
}

// stopCleanly registers a cleanup that fails the test when Run returns an
// error after the cancel.
func (b *testBridge) stopCleanly(t testing.TB) {
	t.Cleanup(func() {
		if err := b.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// listenHTTP returns a loopback listener for Options.HTTPListener and its
// address as "host:port".
func listenHTTP(t testing.TB) (net.Listener, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, ln.Addr().String()
}

// runBridgeHTTP runs the bridge for cfg (see runBridge) with its HTTP
// endpoints on a loopback listener and returns it with the base URL
// ("http://host:port").
func runBridgeHTTP(t testing.TB, cfg *config.Config, opts Options) (*testBridge, string) {
	t.Helper()
	ln, addr := listenHTTP(t)
	opts.HTTPListener = ln
	return runBridge(t, cfg, opts), "http://" + addr
}

// runReady runs a bridge for c (written as the peers' bridge.yaml) with
// its HTTP endpoints on a free port and its log discarded, and waits until
// /readyz answers 200; it returns the bridge and the endpoints' base URL.
func (p *peers) runReady(t *testing.T, c *config.Config) (*testBridge, string) {
	t.Helper()
	b, base := runBridgeHTTP(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.DiscardHandler)})
	waitReadyz(t, base)
	return b, base
}

// httpGet returns the status code and body of a GET of url.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	return testpeers.Get(t, nil, url, "", "")
}

// waitReadyz waits until the bridge at base answers /readyz with 200.
func waitReadyz(t *testing.T, base string) {
	t.Helper()
	waitFor(t, "/readyz", 30*time.Second, func() bool { code, _ := httpGet(t, base+"/readyz"); return code == http.StatusOK })
}

// warnToStderr is the options of a bridge that logs warnings and errors to
// the test's stderr (the broker tests, where a failure needs the log).
func warnToStderr() Options {
	return Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}
