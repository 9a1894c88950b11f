package iotsim

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/cmdline"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/keyring"
)

// SecretEnv is the environment variable RunCommand reads the AccessKey secret
// from when no flag gives it.
const SecretEnv = "IOTSIM_ACCESS_KEY_SECRET"

// RunCommand is the `iot-mns-bridge iot-simulator` subcommand: it starts a
// Server and, unless -devices is 0, a Fleet that publishes to every consumer
// group in -groups. It prints "iot-simulator listening on ADDR" (STOMP) and
// "iot-simulator listening for AMQP on ADDR" to stdout once the server
// accepts connections, logs to stderr, and runs until ctx is
// done; then it closes the server, prints a one-line summary to stdout and
// returns nil. Bad flags return an error naming the flag (flag.ErrHelp for
// -h).
func RunCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iot-simulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: iot-mns-bridge iot-simulator [flags]\n\nA STOMP-over-TLS and AMQP 1.0-over-TLS server that behaves like the Alibaba IoT Platform's subscription endpoint, fed by a simulated device fleet.\n\nflags:")
		fs.PrintDefaults()
	}
	var (
		listen      = fs.String("listen", "127.0.0.1:61614", "STOMP listen `address`")
		amqpListen  = fs.String("amqp-listen", "127.0.0.1:5671", "AMQP 1.0 listen `address` (empty: no AMQP)")
		certFile    = fs.String("cert", "", "server certificate PEM `file` (with -key); empty: generate a throwaway CA and certificate")
		keyFile     = fs.String("key", "", "server private key PEM `file` (with -cert)")
		caOut       = fs.String("ca-out", "", "write the generated CA certificate (PEM) to this `file`, for the bridge's source.tls.ca_file")
		akID        = fs.String("access-key-id", "LTAIsimulator", "AccessKey `ID` (authId) accepted for login")
		akSecret    = fs.String("access-key-secret", "", "AccessKey secret accepted for login (prefer -access-key-secret-file or $"+SecretEnv+")")
		akFile      = fs.String("access-key-secret-file", "", "`file` holding the AccessKey secret")
		credsFile   = fs.String("credentials-file", "", "accept the key triple in this JSON credentials `file` (the format of the bridge's file credentials provider; replace it atomically), read again when it changes, instead of -access-key-id and its secret; a login must carry its SecurityToken (authMode=ststoken) when it has one")
		credsGrace  = fs.Duration("credentials-grace", keyring.DefaultGrace, "with -credentials-file: a triple the file replaced is still accepted this long, never past its Expiration, as STS accepts an old token until it expires (0: refused at once)")
		noSubscribe = fs.String("no-subscribe", "", "comma-separated AccessKey `IDs` whose RAM user lacks the iot:sub permission: their logins, signed right, are refused for it")
		groups      = fs.String("groups", "DEFAULT_GROUP", "comma-separated consumer `groups`; each gets every fleet message, and a login naming another group is refused")
		instanceID  = fs.String("instance-id", "", "the instance's `ID`, which a login's iotInstanceId must name (as on the console's instance overview); empty: an instance without one (public, opened before 2021-07-30), whose logins must leave it empty")
		maxSkew     = fs.Duration("max-skew", 0, "refuse login timestamps further than this from the clock (0: do not check)")
		clockOffset = fs.Duration("clock-offset", 0, "run the server clock this far ahead of this machine's (negative: behind), to try a client with a skewed clock against -max-skew")
		ackTimeout  = fs.Duration("ack-timeout", DefaultAckTimeout, "a push unacknowledged this long is an ACK timeout and goes to the group's backlog (the platform: 30s)")
		backlogInt  = fs.Duration("backlog-interval", DefaultBacklogInterval, "retry the group's backlog (timed-out and rejected messages) in rounds this far apart (the platform: about 1m; 0: at once)")
		backlogRate = fs.Float64("backlog-rate", DefaultBacklogRate, "at most this many backlog pushes per second per consumer group (the platform: about 200; 0: no bound)")
		connLimit   = fs.Int("connect-limit", DefaultConnectLimit, "refuse a consumer group's connection attempts beyond this many per -connect-window, across all clients (the platform: 100 a minute; 0: no limit)")
		connWindow  = fs.Duration("connect-window", time.Minute, "the window of -connect-limit")
		maxClients  = fs.Int("max-group-clients", DefaultMaxGroupClients, "refuse a client's login to a consumer group that already has this many other clients online (the platform: 64, error 9600; 0: no limit)")
		attachTO    = fs.Duration("attach-timeout", DefaultAttachTimeout, "close an AMQP connection that has no receiver link this long after open (the platform: 15s)")
		heartBeat   = fs.Duration("heartbeat", DefaultHeartBeat, "server heart-beat interval offered (0: none)")
		queueSize   = fs.Int("queue-size", DefaultQueueSize, "messages a consumer group may hold waiting for a subscriber; the fleet waits beyond")
		pk          = fs.String("product-key", "a1SimProduct", "product key of the simulated devices")
		devices     = fs.Int("devices", 10, "number of simulated devices (0: no fleet)")
		rate        = fs.Float64("rate", 100, "fleet messages per second (0: as fast as the server takes them)")
		count       = fs.Int("count", 0, "stop the fleet after this many messages (0: no limit)")
		duration    = fs.Duration("duration", 0, "stop the fleet after this long (0: no limit)")
		topics      = fs.String("topics", "telemetry", "comma-separated custom topic suffixes after /{pk}/{dn}/user/")
		types       = fs.String("types", KindTelemetry, "comma-separated message kinds: "+strings.Join(Kinds, ","))
		seed        = fs.Uint64("seed", 1, "seed for generated values and binary bodies")
		logLevel    = fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	)
	if err := cmdline.Parse(fs, args); err != nil {
		return err
	}
	if err := cmdline.NoArgs(fs); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("iot-simulator: -log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	var secrets map[string]string
	var ring *keyring.Ring
	if *credsFile != "" {
		if set := cmdline.Given(fs, "access-key-id", "access-key-secret", "access-key-secret-file"); len(set) > 0 {
			return fmt.Errorf("iot-simulator: -credentials-file gives the key: drop %s", strings.Join(set, ", "))
		}
		if *credsGrace < 0 {
			return errors.New("iot-simulator: -credentials-grace must be 0 or more")
		}
		var err error
		if ring, err = keyring.Open("iot-simulator: -credentials-file", *credsFile, *credsGrace, keyring.Options{Logger: log, Now: clock(*clockOffset)}); err != nil {
			return err
		}
	} else {
		secret, err := readSecret(*akSecret, *akFile)
		if err != nil {
			return err
		}
		if *akID == "" {
			return errors.New("iot-simulator: -access-key-id must not be empty")
		}
		secrets = map[string]string{*akID: secret}
	}
	if *heartBeat == 0 {
		*heartBeat = NoHeartBeat
	}
	fleet := Fleet{ProductKey: *pk, Devices: *devices, Rate: *rate, Count: *count, Duration: *duration,
		Topics: splitList(*topics), Types: splitList(*types), Seed: *seed}
	if err := fleet.Validate(); err != nil {
		return fmt.Errorf("iot-simulator: fleet flags: %w", err)
	}
	groupIDs := splitList(*groups)
	if len(groupIDs) == 0 {
		return errors.New("iot-simulator: -groups must name at least one consumer group")
	}

	switch {
	case *backlogInt < 0 || *backlogRate < 0:
		return errors.New("iot-simulator: -backlog-interval and -backlog-rate must be 0 or more")
	case *connLimit < 0 || *connWindow <= 0:
		return errors.New("iot-simulator: -connect-limit must be 0 or more and -connect-window positive")
	case *maxClients < 0:
		return errors.New("iot-simulator: -max-group-clients must be 0 or more")
	case *ackTimeout <= 0 || *attachTO <= 0:
		return errors.New("iot-simulator: -ack-timeout and -attach-timeout must be positive")
	}
	cfg := Config{Addr: *listen, AMQPAddr: *amqpListen, Secrets: secrets, MaxSkew: *maxSkew,
		AckTimeout: *ackTimeout, HeartBeat: *heartBeat, QueueSize: *queueSize, Logger: log,
		BacklogInterval: *backlogInt, BacklogRate: *backlogRate, ConnectLimit: *connLimit, ConnectWindow: *connWindow,
		AttachTimeout: *attachTO, KnownGroups: groupIDs, CheckInstance: true, InstanceID: *instanceID, MaxGroupClients: *maxClients,
		NoSubscribe: splitList(*noSubscribe)}
	if ring != nil {
		cfg.Authorize = ring.Authorize
	}
	cfg.Now = clock(*clockOffset)
	switch {
	case (*certFile == "") != (*keyFile == ""):
		return errors.New("iot-simulator: -cert and -key go together: give both, or neither to generate a certificate")
	case *certFile != "" && *caOut != "":
		return errors.New("iot-simulator: -ca-out writes a generated CA; it cannot be combined with -cert/-key")
	case *certFile != "":
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fmt.Errorf("iot-simulator: -cert/-key: %w", err)
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	default:
		b, err := certgen.New()
		if err != nil {
			return fmt.Errorf("iot-simulator: %w", err)
		}
		cfg.TLS = b.ServerTLSConfig()
		if *caOut != "" {
			if err := b.WriteFiles(*caOut, "", ""); err != nil {
				return fmt.Errorf("iot-simulator: -ca-out: %w", err)
			}
		}
	}

	s, err := Start(cfg)
	if err != nil {
		return fmt.Errorf("iot-simulator: %w", err)
	}
	fmt.Fprintf(stdout, "iot-simulator listening on %s\n", s.Addr())
	if a := s.AMQPAddr(); a != "" {
		fmt.Fprintf(stdout, "iot-simulator listening for AMQP on %s\n", a)
	}
	if *caOut != "" {
		fmt.Fprintf(stdout, "iot-simulator CA certificate written to %s\n", *caOut)
	}

	var wg sync.WaitGroup
	if *devices > 0 {
		wg.Go(func() {
			n, _ := fleet.Run(ctx, func(m Message) {
				for _, g := range groupIDs {
					if err := s.PublishContext(ctx, g, m); err != nil {
						return
					}
				}
			})
			log.Info("fleet finished", "messages", n)
		})
	}
	<-ctx.Done()
	wg.Wait()
	st := s.Stats()
	err = s.Close()
	fmt.Fprintf(stdout, "iot-simulator stopped: published=%d delivered=%d acked=%d redelivered=%d pending=%d logins_ok=%d logins_failed=%d\n",
		st.Published, st.Delivered, st.Acked, st.Redelivered, st.Pending, st.LoginsOK, st.LoginsFailed)
	if err != nil {
		return fmt.Errorf("iot-simulator: %w", err)
	}
	return nil
}

// clock is the server clock, off ahead of this machine's (nil: time.Now).
func clock(off time.Duration) func() time.Time {
	if off == 0 {
		return nil
	}
	return func() time.Time { return time.Now().Add(off) }
}

// readSecret takes the secret from the flag, else the file, else SecretEnv.
func readSecret(flagValue, file string) (string, error) {
	switch {
	case flagValue != "" && file != "":
		return "", errors.New("iot-simulator: give -access-key-secret or -access-key-secret-file, not both")
	case flagValue != "":
		return flagValue, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("iot-simulator: -access-key-secret-file: %w", err)
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
		return "", fmt.Errorf("iot-simulator: -access-key-secret-file: %s is empty", file)
	case os.Getenv(SecretEnv) != "":
		return os.Getenv(SecretEnv), nil
	}
	return "", errors.New("iot-simulator: the AccessKey secret is required: set -access-key-secret-file or $" + SecretEnv)
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
