package cmdline

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// loopback listens on a free loopback port.
func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestServeUntilCancelledLetsARequestFinish: a request in progress when the
// context ends gets its answer, then Serve returns nil and the listener is
// closed.
func TestServeUntilCancelledLetsARequestFinish(t *testing.T) {
	ln := loopback(t)
	inside, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inside)
		<-release
		io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, srv, ln) }()
	answer := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- string(b)
	}()
	<-inside
	cancel()
	close(release)
	if got := <-answer; got != "done" {
		t.Errorf("the request in progress got %q, want its answer", got)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after cancel: %v, want nil", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener still accepts after Serve returned")
	}
}

// TestServeReportsAServerFailure: a listener that fails makes Serve return
// at once with a "serve:" error, without waiting for the context.
func TestServeReportsAServerFailure(t *testing.T) {
	ln := loopback(t)
	ln.Close()
	err := Serve(context.Background(), &http.Server{}, ln)
	if err == nil || !strings.HasPrefix(err.Error(), "serve: ") {
		t.Errorf("Serve on a closed listener: %v, want a serve: error", err)
	}
}
