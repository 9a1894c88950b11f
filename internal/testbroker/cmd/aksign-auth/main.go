// Command aksign-auth is the HTTP authentication service that the test
// RabbitMQ broker (scripts/rabbitmq.sh) consults through
// rabbitmq_auth_backend_http. It accepts IoT Platform style signed usernames
// (aksign and ststoken, hmacmd5/hmacsha1/hmacsha256) for the AccessKeys it is
// given; see package aksignauth for the decisions.
//
// Usage:
//
//	aksign-auth [-listen 127.0.0.1:25690] [-keys-file FILE] [-max-skew 0]
//
// AccessKeys come from -keys-file (lines or commas of id:secret) or, if no file
// is given, from the environment variable AKSIGN_AUTH_KEYS in the same form;
// never from a flag, so no secret shows in the process list. It runs until
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/cmdline"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker/aksignauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.Getenv, log, nil); err != nil {
		fmt.Fprintln(os.Stderr, "aksign-auth:", err)
		os.Exit(1)
	}
}

// run serves until ctx is cancelled. If ready is not nil it receives the
// bound address once the listener is up.
func run(ctx context.Context, args []string, getenv func(string) string, log *slog.Logger, ready chan<- string) error {
	fs := flag.NewFlagSet("aksign-auth", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:25690", "address to listen on (keep it on loopback)")
	keysFile := fs.String("keys-file", "", "file of id:secret AccessKeys (default: env AKSIGN_AUTH_KEYS)")
	maxSkew := fs.Duration("max-skew", 0, "refuse username timestamps further than this from now; 0 disables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var src io.Reader
	if *keysFile != "" {
		f, err := os.Open(*keysFile)
		if err != nil {
			return fmt.Errorf("read keys: %w", err)
		}
		defer f.Close()
		src = f
	} else if env := getenv("AKSIGN_AUTH_KEYS"); env != "" {
		src = strings.NewReader(env)
	} else {
		return errors.New("no AccessKeys: pass -keys-file or set AKSIGN_AUTH_KEYS=id:secret")
	}
	keys, err := aksignauth.ParseKeys(src)
	if err != nil {
		return err
	}
	h, err := aksignauth.New(aksignauth.Config{Keys: keys, Logger: log, MaxSkew: *maxSkew})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w (is another aksign-auth running? stop it with scripts/rabbitmq.sh stop)", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	log.Info("aksign-auth listening", "addr", ln.Addr().String(), "access_keys", len(keys))
	if ready != nil {
		ready <- ln.Addr().String()
	}
	if err := cmdline.Serve(ctx, srv, ln); err != nil {
		return err
	}
	log.Info("aksign-auth stopped")
	return nil
}
