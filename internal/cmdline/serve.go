package cmdline

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ShutdownTimeout is how long Serve lets the requests in progress finish
// once its context is done.
const ShutdownTimeout = 5 * time.Second

// Serve serves srv on ln until ctx is done, then shuts srv down: new
// connections are refused and the requests in progress get ShutdownTimeout
// to finish, after which what is left is closed. It returns once the server
// has stopped: nil after a clean shutdown, "serve: ..." when the server
// failed before ctx was done, "shutdown: ..." when requests were cut off.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener) error {
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	<-done
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
