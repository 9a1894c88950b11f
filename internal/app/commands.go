package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/amqpsrc"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/stompsrc"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/systemd"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// NewLogger builds the logger the log section asks for, writing to w; in
// both formats a duration reads as text ("20s").
func NewLogger(l config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	switch l.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		// A duration as the text format writes it ("20s"), not as
		// the nanoseconds slog's JSON handler writes.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdRun(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("run", stdio)
	path := fs.String("config", "", "config `FILE`")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg, loaded, err := loadConfigData(*path)
	if err != nil {
		return err
	}
	log := NewLogger(cfg.Log, stdio.Err)
	for _, w := range cfg.Warnings() {
		log.Warn(w.Msg, w.Attrs...)
	}
	applyMemoryLimit(cfg, log)
	b, err := New(cfg, Options{Logger: log, OnReady: func() { systemd.Notify("READY=1") },
		OnStatus:   func(line string) { systemd.Notify("STATUS=" + line) },
		OnStopping: func(line string) { systemd.Notify("STOPPING=1\nSTATUS=" + line) }})
	if err != nil {
		return err
	}
	log.Info("starting", "version", Version(), "config", cfg.Path, "protocol", cfg.Source.Protocol,
		"endpoint", cfg.Source.Endpoint, "connections", cfg.Source.Connections, "mns", cfg.MNS.Endpoint)
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	applyMaxProcs(wctx, cfg, log)
	go systemd.Watchdog(wctx, b.Healthy, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go reloadOnHUP(wctx, hup, *path, loaded, b, log)
	return b.Run(ctx)
}

// reloadOnHUP reloads the config file on every SIGHUP; an invalid file is
// refused and the running config kept, and the status line says so until
// a reload succeeds (`systemctl reload` cannot fail on it: it only sends
// the signal). loaded is the file as the running
// config was last loaded from it: a file that still reads the same is said
// to be unchanged, so that an edit the bridge cannot see (a container's
// bind mount of the file keeps the old file once an editor replaces it) is
// not reported as applied.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, path string, loaded []byte, b *Bridge, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		systemd.Notify("RELOADING=1")
		cfg, data, err := config.LoadData(path)
		if err == nil && bytes.Equal(data, loaded) {
			log.Info("config reloaded: the file is unchanged since it was last loaded; nothing to apply (in a container, a bind "+
				"mount of the file keeps showing the old file once an editor replaces it: mount its directory instead)", "file", path)
		} else if err == nil {
			var restart []string
			restart, err = b.Reload(cfg)
			if err == nil {
				loaded = data
				log.Info("config reloaded: routes and delivery settings applied", "file", path)
				b.noteRestartPending(restart)
				if len(restart) > 0 {
					log.Warn("changed settings take effect only after a restart", "sections", strings.Join(restart, ", "))
				}
			}
		}
		if err != nil {
			log.Error("config reload refused; keeping the running config", "file", path, "err", err)
		}
		b.noteReload(err)
		systemd.Notify("READY=1")
	}
}

func cmdCheck(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("check", stdio)
	path := fs.String("config", "", "config `FILE`")
	connect := fs.Bool("connect", false, "also log in to the source and look up every MNS destination (sends nothing)")
	probe := fs.Bool("probe", false, "with -connect, also send one marked test message (\""+probeMark+" ...\") to every fixed MNS destination, "+
		"as the bridge sends, to verify the send permission; the message stays there for the destination's consumers")
	timeout := fs.Duration("timeout", 30*time.Second, "overall deadline of the -connect checks")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *probe && !*connect {
		return usageErr("-probe goes with -connect")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	// The check gets each credential once: its errors must not promise
	// another attempt.
	b, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler), Credentials: credentials.CacheOptions{OneShot: true}})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "config %s is valid: %s source %s (%d connection(s)), %d route(s), MNS %s\n",
		cfg.Path, cfg.Source.Protocol, cfg.Source.Endpoint, cfg.Source.Connections, len(cfg.Routes), cfg.MNS.Endpoint)
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdio.Out, "warning: %s\n", w)
	}
	for _, w := range cfg.MissingStateDirs() {
		fmt.Fprintf(stdio.Out, "warning: %s\n", w)
	}
	if line := statePaths(cfg); line != "" {
		fmt.Fprintln(stdio.Out, line)
	}
	if p := b.sink.Proxy(); p != "" {
		fmt.Fprintf(stdio.Out, "MNS requests go through the proxy %s (HTTPS_PROXY or HTTP_PROXY in this environment; "+
			"NO_PROXY lists the hosts that bypass it; the source connects directly)\n", p)
	}
	defer b.creds.close()
	sourceFailed, mnsFailed := b.creds.report(ctx, stdio.Out)
	credFailed := 0
	if sourceFailed {
		credFailed++
	}
	if mnsFailed && !b.creds.shared {
		credFailed++
	}
	if !*connect {
		if credFailed > 0 {
			return fmt.Errorf("%d credential(s) could not be obtained (see above)", credFailed)
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	failed := credFailed
	// The source check's warnings (messages that arrived and were left to
	// the platform) go to stderr, not to a discarded logger.
	checkLog := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Without credentials a login or lookup could only fail with the
	// credentials' error again: it is printed once, above.
	if sourceFailed {
		fmt.Fprintf(stdio.Out, "skip source %s: no source.credentials to log in with (see above)\n", cfg.Source.Endpoint)
	} else if err := checkSource(cctx, cfg, b.creds.iotParams(cfg), checkLog); err != nil {
		failed++
		fmt.Fprintf(stdio.Out, "FAIL source %s: %v\n", cfg.Source.Endpoint, err)
	} else {
		how := "logged in without subscribing" // stompsrc.CheckConnect
		if cfg.Source.Protocol == "amqp" {
			how = "logged in and attached (zero credit)"
		}
		fmt.Fprintf(stdio.Out, "ok   source %s: %s as %s-check, taking no message\n", cfg.Source.Endpoint, how, cfg.Source.ClientID)
	}
	dests := b.destinations()
	for _, d := range dests {
		if mnsFailed {
			fmt.Fprintf(stdio.Out, "skip MNS %s: no mns.credentials to sign with (see above)\n", d)
			continue
		}
		if !checkDestination(cctx, b, d, b.destinationKeys(d), *probe, cfg.Source.ClientID, stdio.Out) {
			failed++
		}
	}
	for _, t := range b.router.Load().Templates() {
		// The operator creates a queue per device or product: say what a
		// missing one costs (walk13: 100 of 1,000 missing, 2,000 dead
		// letters, and check had said only that it looked none up).
		missing := "QueueNotExist"
		if t.Dest.Kind == bridge.Topic {
			missing = "TopicNotExist"
		}
		fmt.Fprintf(stdio.Out, "skip MNS %s (%s): a template, named per message; not looked up: a %s it names that does not exist gets none: its messages are dead-lettered (%s); create one for each value before its devices send\n",
			t.Dest, t.Path, t.Dest.Kind, missing)
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed (see above)", failed)
	}
	return nil
}

// probeMark starts the body of check -probe's test messages.
const probeMark = "iot-mns-bridge check -probe:"

// checkDestination prints check -connect's line for d and reports whether
// it passed. It looks d up (mns:Get*Attributes), which tells that d exists
// but not that the RAM user may send to it: the line says so. A user that
// may only send gets a warning, not a failure: the bridge runs fine. With
// probe it also sends one marked message the way the bridge sends
// (BatchSendMessage, PublishMessage), unless the lookup already failed. A
// FAIL line names the config keys that name d (keys), where it is fixed.
func checkDestination(ctx context.Context, b *Bridge, d bridge.Destination, keys []string, probe bool, clientID string, out io.Writer) bool {
	failed := namedByKeys(d, keys)
	send := mns.Permission(mns.SendOperation(d.Kind))
	err := b.sink.Check(ctx, d)
	var looked string
	switch {
	case err == nil:
		looked = fmt.Sprintf("exists (looked up with mns:Get%sAttributes)", kindName(d.Kind))
	case accessDenied(err):
		// A RAM user that may only send runs fine.
		looked = fmt.Sprintf("not verifiable: the RAM user may not read its attributes (mns:Get%sAttributes); "+
			"sending does not need it, but whether the %s exists is not verified either", kindName(d.Kind), d.Kind)
	default:
		fmt.Fprintf(out, "FAIL MNS %s: %v\n", failed, err)
		return false
	}
	if !probe {
		status := "ok  "
		if err != nil {
			status = "warn"
		}
		fmt.Fprintf(out, "%s MNS %s: %s; sending not tried: the first message sent tells whether the RAM user has %s "+
			"(-probe sends one marked test message)\n", status, d, looked, send)
		return true
	}
	body := fmt.Sprintf("%s a test message from %s-check at %s; discard it", probeMark, clientID, time.Now().UTC().Format(time.RFC3339))
	errs := b.sink.Send(ctx, d, []bridge.Outgoing{{Body: []byte(body), ID: "probe"}})
	if errs[0] != nil {
		fmt.Fprintf(out, "FAIL MNS %s: %s; probe message refused: %v\n", failed, looked, errs[0])
		return false
	}
	fmt.Fprintf(out, "ok   MNS %s: %s; sent one probe message (%s granted): its consumers receive \"%s ...\"\n", d, looked, send, probeMark)
	return true
}

// statePaths is check's line naming where the state files go. Without
// $STATE_DIRECTORY (cfg.StateDir, as Parse read it, is "": a shell)
// relative paths resolve against the config's directory, and the line says
// that the systemd unit and the image resolve them against their
// $STATE_DIRECTORY instead. "" without state files.
func statePaths(cfg *config.Config) string {
	base, _ := filepath.Abs(filepath.Dir(cfg.Path))
	var parts []string
	underBase := false
	for _, f := range []struct{ what, path string }{
		{"spool", cfg.Spool.Dir},
		{"dead letters", cfg.Delivery.DeadLetter.File},
		{"de-dup window", cfg.Delivery.Dedup.File},
	} {
		if f.path != "" {
			parts = append(parts, f.what+" "+f.path)
			underBase = underBase || strings.HasPrefix(f.path, base+string(filepath.Separator))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	line := "state: " + strings.Join(parts, ", ")
	if cfg.StateDir == "" && underBase {
		line += " (relative paths resolved against the config's directory; the systemd unit and the image put them " +
			"under $STATE_DIRECTORY, /var/lib/iot-mns-bridge: export it to check theirs)"
	}
	return line
}

// checkSource logs in to the source once without taking a message: STOMP
// does not subscribe, AMQP attaches with zero credit; both as
// "<client_id>-check".
func checkSource(ctx context.Context, cfg *config.Config, params func() (iotauth.Params, error), log *slog.Logger) error {
	// One attempt; the sources take a limiter all the same.
	limiter := source.NewAttemptLimiter(cfg.Source.ConnectAttemptsPerMinute, time.Minute)
	switch cfg.Source.Protocol {
	case "stomp":
		return stompsrc.CheckConnect(ctx, stompConfig(cfg, params, nil, limiter, log))
	case "amqp":
		c := amqpConfig(cfg, params, nil, limiter, log)
		c.Connections = 1 // check logs in once
		return amqpsrc.CheckConnect(ctx, c)
	}
	return fmt.Errorf("source.protocol %q is not supported", cfg.Source.Protocol)
}

func cmdReplay(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("replay", stdio)
	path := fs.String("config", "", "config `FILE`")
	skipBad := fs.Bool("skip-corrupt", false, "skip lines that are not valid dead-letter entries instead of stopping")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: iot-mns-bridge replay -config FILE [-skip-corrupt] DEADLETTER.jsonl\n\n"+
			"Sends the entries of a dead-letter file through the config's routes again; what fails again is dead-lettered anew.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErr("give exactly one dead-letter file (DEADLETTER.jsonl)")
	}
	file := fs.Arg(0)
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	aside, err := moveAsideOwnDeadLetters(file, cfg.Delivery.DeadLetter.File)
	if err != nil {
		return err
	}
	if aside != "" {
		fmt.Fprintf(stdio.Out, "moved %s to %s first: what fails again is written to a new %s; delete %s once the replay is done\n",
			file, aside, file, aside)
		file = aside
	}
	var entries []deadletter.Entry
	var skipped int
	err = deadletter.ReadFile(file, func(line int, e deadletter.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		var le *deadletter.LineError
		if !*skipBad || !errors.As(err, &le) {
			return fmt.Errorf("reading %s: %w", file, err)
		}
		entries, skipped = nil, 0
		err = deadletter.ReadFileSkipping(file, func(line int, e deadletter.Entry) error {
			entries = append(entries, e)
			return nil
		}, func(le *deadletter.LineError) error {
			skipped++
			fmt.Fprintf(stdio.Err, "skipping %v\n", le)
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading %s: %w", file, err)
		}
	}
	beside := "" // the file beside a running bridge's dead-letter file
	if dl := cfg.Delivery.DeadLetter.File; dl != "" {
		// A running bridge with this config holds its dead-letter file:
		// replay writes beside it instead of refusing to run.
		held, err := deadletter.OpenFile(dl)
		if errors.Is(err, deadletter.ErrLocked) {
			alt := dl + ".replay-" + time.Now().UTC().Format("20060102T150405Z")
			beside = alt
			fmt.Fprintf(stdio.Out, "%s is held by a running bridge: what fails again is written to %s\n", dl, alt)
			if same(file, dl) {
				fmt.Fprintf(stdio.Out, "once the replay is done, move %s away (the bridge starts a new one when it is full) or truncate it, so that it is not replayed twice\n", dl)
			}
			cfg.Delivery.DeadLetter.File = alt
		} else if err == nil {
			held.Close()
		}
	}
	b, err := New(cfg, Options{Logger: NewLogger(cfg.Log, stdio.Err)})
	if err != nil {
		return err
	}
	st, finished, err := b.replay(ctx, entries)
	if err != nil {
		return err
	}
	// An entry of a message the file holds twice is done with the first:
	// joined to it while it was held (bridge's join.go), or dropped by the
	// de-dup window once MNS had it.
	repeated := st.Joined + st.Duplicates
	done := st.Forwarded + st.DeadLettered + repeated
	fmt.Fprintf(stdio.Out, "replayed %s: %d entries read, %d skipped, %d forwarded, %d dead-lettered again, %d repeated (sent once), %d not done\n",
		file, len(entries), skipped, st.Forwarded, st.DeadLettered, repeated, int64(len(entries))-done)
	// The file beside a running bridge's holds what failed again: when
	// nothing did, it is not left behind empty.
	if beside != "" && st.DeadLettered == 0 {
		if fi, err := os.Stat(beside); err == nil && fi.Size() == 0 && os.Remove(beside) == nil {
			fmt.Fprintf(stdio.Out, "nothing failed again: %s removed\n", beside)
		}
	}
	if !finished || ctx.Err() != nil || done < int64(len(entries)) {
		return errors.New("replay did not finish: run it again (entries may then be sent twice)")
	}
	return nil
}

// replay sends entries through the pipeline and drains it within
// shutdown_timeout: finished is false when the deadline cut the drain
// short; the counters say what became of the entries. err is the failure to
// open the dead-letter file. It closes what the bridge opened: the
// dead-letter file, and the credentials caches, whose timers would
// otherwise go on refreshing (and retrying a failing provider) until the
// process exits.
func (b *Bridge) replay(ctx context.Context, entries []deadletter.Entry) (st bridge.Stats, finished bool, err error) {
	defer b.creds.close()
	if err := b.openDeadLetters(); err != nil {
		return st, false, err
	}
	defer b.dead.Close()
	for _, e := range entries {
		// Replayed messages have no upstream to settle: the pipeline's
		// counters say what became of them.
		if err := b.pipeline.Handle(ctx, bridge.NewDelivery(e.Message(), nil, nil)); err != nil {
			break
		}
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout)
	defer cancel()
	derr := b.pipeline.Drain(drainCtx)
	return b.pipeline.Stats(), derr == nil, nil
}

// moveAsideOwnDeadLetters renames file to file.replayed-<UTC time> when it
// is the config's own dead-letter file (dlFile) and not empty, and returns
// the new name ("" when it is not moved). Replayed entries that fail again are appended to
// dlFile: without the move they would join the entries being replayed, and
// the next replay would send those twice. The rename happens while holding
// the file's lock; the file of a running bridge (which holds the lock) is
// left where it is.
func moveAsideOwnDeadLetters(file, dlFile string) (string, error) {
	if dlFile == "" {
		return "", nil
	}
	if !same(file, dlFile) {
		return "", nil
	}
	held, err := deadletter.OpenFile(file)
	if errors.Is(err, deadletter.ErrLocked) {
		// A running bridge writes it: it stays; what fails again goes
		// beside it (see cmdReplay), and the operator moves it away after.
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer held.Close()
	if st, err := os.Stat(file); err == nil && st.Size() == 0 {
		return "", nil // nothing to replay: no empty file to leave behind
	}
	aside := file + ".replayed-" + time.Now().UTC().Format("20060102T150405Z")
	if err := os.Rename(file, aside); err != nil {
		return "", fmt.Errorf("moving %s aside before replaying it: %w", file, err)
	}
	return aside, nil
}

// same reports whether the paths name one existing file.
func same(a, b string) bool {
	ai, err := os.Stat(a)
	if err != nil {
		return false
	}
	bi, err := os.Stat(b)
	return err == nil && os.SameFile(ai, bi)
}
