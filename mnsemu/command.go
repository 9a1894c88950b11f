package mnsemu

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
	"slices"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/cmdline"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/keyring"
)

// listFlag collects a repeatable string flag; a value may also hold several
// names separated by commas.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// RunCommand is the body of "iot-mns-bridge mns-emulator": it parses args
// (without the subcommand name), listens, prints "mns-emulator listening on
// http://ADDR" to stdout and serves until ctx is cancelled, then shuts down
// within 5 s. It returns nil after a clean shutdown and an error for bad
// flags or a listen failure. The secret can come from
// -access-key-secret-file or $MNS_EMULATOR_ACCESS_KEY_SECRET to keep it off
// the command line.
func RunCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mns-emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg        Config
		queues     listFlag
		topics     listFlag
		deny       listFlag
		listen     = fs.String("listen", "127.0.0.1:0", "address to listen on (host:port)")
		keyID      = fs.String("access-key-id", "", "AccessKey id clients sign with (required)")
		secret     = fs.String("access-key-secret", "", "AccessKey secret (or -access-key-secret-file, or $MNS_EMULATOR_ACCESS_KEY_SECRET)")
		secretFile = fs.String("access-key-secret-file", "", "file holding the AccessKey secret")
		credsFile  = fs.String("credentials-file", "", "accept the key triple in this JSON credentials `file` (the format of the bridge's file credentials provider; replace it atomically), read again when it changes, instead of -access-key-id and its secret: a request must carry its SecurityToken in the security-token header when it has one (else 403 InvalidSecurityToken); an id neither it nor -credentials-grace accepts is 403 InvalidAccessKeyId")
		credsGrace = fs.Duration("credentials-grace", keyring.DefaultGrace, "with -credentials-file: a triple the file replaced is still accepted this long, never past its Expiration, as STS accepts an old token until it expires (0: refused at once)")
		verbose    = fs.Bool("v", false, "log every error reply")
		offset     = fs.Duration("clock-offset", 0, "run the emulator's clock this far ahead of this machine's (negative: behind), to try a client with a skewed clock: a request dated more than 15 minutes off is refused with TimeExpired, as MNS does")
	)
	fs.Var(&queues, "queue", "queue to create at start (repeatable, or comma-separated)")
	fs.Var(&topics, "topic", "topic to create at start (repeatable, or comma-separated)")
	fs.Var(&deny, "deny", "API action answered with 403 AccessDenied, as for a RAM user without it: ACTION or ACTION:NAME for one queue or topic, e.g. GetQueueAttributes or BatchSendMessage:dead-letters (repeatable, or comma-separated; actions: "+strings.Join(DeniableActions, ", ")+")")
	fs.BoolVar(&cfg.AutoCreate, "auto-create", false, "create queues and topics on first use")
	fs.DurationVar(&cfg.Latency, "latency", 0, "latency added to every reply")
	fs.DurationVar(&cfg.Jitter, "jitter", 0, "random extra latency, uniform in [0, jitter)")
	fs.Float64Var(&cfg.ErrorRate, "error-rate", 0, "fraction of requests failed with -error-status")
	fs.IntVar(&cfg.ErrorStatus, "error-status", 500, "status of injected errors (500 or 503)")
	fs.Float64Var(&cfg.ThrottleRate, "throttle-rate", 0, "messages/s above which requests get 429 TooManyRequests (0: off)")
	fs.DurationVar(&cfg.ThrottleHold, "throttle-hold", 500*time.Millisecond, "how long a throttled request is held before its 429")
	fs.StringVar(&cfg.ThrottleCode, "throttle-code", "TooManyRequests", "code of throttled requests: TooManyRequests (429) or the legacy QpsLimitExceeded (400)")
	fs.StringVar(&cfg.Region, "region", "", "the only region V4 signatures may name (empty: any)")
	fs.Float64Var(&cfg.PartialFailureRate, "partial-failure-rate", 0, "fraction of batch messages that fail with InternalError")
	fs.IntVar(&cfg.StoreLimit, "store-limit", 100000, "most messages kept per queue or topic (0: unlimited)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for the random faults (0: random)")
	if err := cmdline.Parse(fs, args); err != nil {
		return err
	}
	if err := cmdline.NoArgs(fs); err != nil {
		return err
	}
	if *secret == "" && *secretFile != "" && *credsFile == "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("mns-emulator: -access-key-secret-file: %w", err)
		}
		*secret = strings.TrimSpace(string(b))
	}
	if *secret == "" && *credsFile == "" {
		*secret = os.Getenv("MNS_EMULATOR_ACCESS_KEY_SECRET")
	}
	var errs []error
	if cfg.ThrottleCode != "TooManyRequests" && cfg.ThrottleCode != "QpsLimitExceeded" {
		errs = append(errs, fmt.Errorf("-throttle-code %q is neither TooManyRequests nor QpsLimitExceeded", cfg.ThrottleCode))
	}
	switch set := cmdline.Given(fs, "access-key-id", "access-key-secret", "access-key-secret-file"); {
	case *credsFile != "" && len(set) > 0:
		errs = append(errs, fmt.Errorf("-credentials-file gives the key: drop %s", strings.Join(set, ", ")))
	case *credsFile != "" && *credsGrace < 0:
		errs = append(errs, errors.New("-credentials-grace must be 0 or more"))
	case *credsFile != "":
	case *keyID == "":
		errs = append(errs, errors.New("-access-key-id (or -credentials-file) is required"))
	case *secret == "":
		errs = append(errs, errors.New("-access-key-secret (or -access-key-secret-file, $MNS_EMULATOR_ACCESS_KEY_SECRET) is required"))
	}
	for _, n := range append(append([]string(nil), queues...), topics...) {
		if !validName(n) {
			errs = append(errs, fmt.Errorf("%q is not a valid MNS name (1-120 letters, digits, '-', not starting with '-')", n))
		}
	}
	for _, d := range deny {
		action, name, hasName := strings.Cut(d, ":")
		if !slices.Contains(DeniableActions, action) || hasName && !validName(name) {
			errs = append(errs, fmt.Errorf("-deny %q is not ACTION or ACTION:NAME with an action of %s and a valid queue or topic name", d, strings.Join(DeniableActions, ", ")))
		}
	}
	if cfg.ErrorRate < 0 || cfg.ErrorRate > 1 || cfg.PartialFailureRate < 0 || cfg.PartialFailureRate > 1 {
		errs = append(errs, errors.New("-error-rate and -partial-failure-rate are fractions in [0, 1]"))
	}
	if len(errs) > 0 {
		// A usage error (exit 2); the caller names the command once.
		return cmdline.Usagef("%w", errors.Join(errs...))
	}
	cfg.Queues, cfg.Topics, cfg.Deny = queues, topics, deny
	if off := *offset; off != 0 {
		cfg.Now = func() time.Time { return time.Now().Add(off) }
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *credsFile != "" {
		ring, err := keyring.Open("mns-emulator: -credentials-file", *credsFile, *credsGrace, keyring.Options{Logger: cfg.Logger, Now: cfg.Now})
		if err != nil {
			return err
		}
		cfg.Authorize = ring.Authorize
	} else {
		cfg.AccessKeys = map[string]string{*keyID: *secret}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("mns-emulator: listen on %s: %w", *listen, err)
	}
	srv := &http.Server{Handler: New(cfg), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "mns-emulator listening on http://%s\n", ln.Addr())
	if err := cmdline.Serve(ctx, srv, ln); err != nil {
		return fmt.Errorf("mns-emulator: %w", err)
	}
	return nil
}
