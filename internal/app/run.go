package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// Run runs the bridge until ctx is done, then shuts down: it stops intake,
// drains and settles within shutdown_timeout, releases the rest, closes the
// source and returns nil. It returns an error only when the bridge could not
// start (e.g. the HTTP listener) or the source failed permanently.
//
// The steps, in order:
//
//	open        dead-letter file, de-dup journal, HTTP listener, spool
//	startIntake source (and the spool's feeder), readiness, status line,
//	            summaries; then OnReady (READY=1)
//	wait        until ctx is done or the source fails for good
//	stopping    the status line stopped; OnStopping (STOPPING=1) with a
//	            line saying what the drain waits for, before the drain
//	stopIntake  source and feeder stopped: nothing new comes in
//	drain       the pipeline settles what it holds within shutdown_timeout;
//	            what no upstream would send again is kept (spool or
//	            dead-letter file), the rest released
//	closeSource source connections and the HTTP server closed
//	closeAll    spool, journal (every accepted id written), dead-letter file,
//	            credentials: what open opened, in reverse order
func (b *Bridge) Run(ctx context.Context) error {
	r := &run{b: b}
	defer r.closeAll()
	if err := r.open(); err != nil {
		return err
	}
	r.startIntake(ctx)
	// Started: READY=1 now, whether or not the platform and MNS answer (a
	// start timeout would kill a bridge that retries by itself and may be
	// forwarding its spool meanwhile); the status line says what it waits
	// for.
	b.notifyReady()
	err := r.wait(ctx)
	r.stopping()
	r.stopIntake()
	r.drain()
	r.closeSource()
	b.log.Info("stopped", r.stopCounts()...)
	return err
}

// stopCounts are the "stopped" line's counts, named as the metrics name
// them: what this run took from the platform (source_received), what the
// pipeline received and how each was settled. Without the spool they add
// up: received = forwarded + dead_lettered + duplicates + joined +
// released + stranded, and source_received is received but for what
// intake refused as it stopped and kept (kept_in_dead_letter_file, lost
// with the stranded ones), as below. With it, the pipeline receives from the
// spool (an earlier run's backlog included), so the line starts with what
// came in: what the spool held at the start (in_spool_at_start) and what
// this run took from the platform (source_received), and it adds up:
//
//	in_spool_at_start + source_received = forwarded + dead_lettered +
//	    duplicates + joined + released + left_in_spool +
//	    kept_in_dead_letter_file + lost
//
// where released is what was given back upstream (the platform redelivers
// it), not what the pipeline released back into the spool, and
// left_in_spool is what the closed spool holds (what the pipeline had not
// settled, what the feeder had not handed it yet, and kept_in_spool). Then
// where the messages went that no upstream sends again and that were kept
// at shutdown (the stranded ones, and those intake refused at shutdown):
// kept_in_spool, kept_in_dead_letter_file, and lost (0 unless both
// failed; logged with their ids).
func (r *run) stopCounts() []any {
	f := r.b.flow()
	var args []any
	if f.Spooled {
		args = append(args, "in_spool_at_start", f.InSpoolAtStart)
	}
	args = append(args, "source_received", f.SourceReceived, "received", f.Received, "forwarded", f.Forwarded, "dead_lettered", f.DeadLettered, "duplicates", f.Duplicates, "joined", f.Joined,
		"released", f.Released)
	if f.Spooled {
		args = append(args, "left_in_spool", r.leftInSpool)
	}
	return append(args, "stranded", f.Stranded, "kept_in_spool", r.kept.spooled, "kept_in_dead_letter_file", r.kept.deadLettered, "lost", r.kept.lost)
}

// run is one Run of a Bridge: what its steps opened and started.
type run struct {
	b       *Bridge
	closers []func() // run by closeAll in reverse order

	srv   *http.Server   // nil without a listener
	spool *spool.Spool   // nil without a spool
	stage *spool.Stage   // nil without a spool
	keep  *bridge.Keeper // what must not be dropped at shutdown
	kept  keepCounts     // where drain stored what keep held

	// leftInSpool is what the spool holds after the drain: what the next
	// start forwards (the pipeline's unaccepted messages and those the
	// feeder had not handed it yet).
	leftInSpool int64

	cancelIntake context.CancelFunc
	cancelStatus context.CancelFunc
	statusDone   chan struct{} // closed when reportStatus returned
	srcErr       chan error
	feederDone   chan struct{} // nil without a spool
}

// onClose registers f to run at closeAll, before what was registered
// earlier.
func (r *run) onClose(f func()) { r.closers = append(r.closers, f) }

// closeAll closes what open opened, newest first.
func (r *run) closeAll() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

// open opens the files and the listener the run needs; on error what it
// opened is closed by closeAll.
func (r *run) open() error {
	b := r.b
	r.onClose(b.creds.close)
	state := b.cfg.StateDir
	if err := b.openDeadLetters(); err != nil {
		return outsideStateDir(err, "delivery.dead_letter.file", b.cfg.Delivery.DeadLetter.File, state)
	}
	r.onClose(func() { b.dead.Close() })
	if err := r.openJournal(); err != nil {
		return outsideStateDir(err, "delivery.dedup.file", b.cfg.Delivery.Dedup.File, state)
	}
	if err := r.serveHTTP(); err != nil {
		return err
	}
	return outsideStateDir(r.openSpool(), "spool.dir", b.cfg.Spool.Dir, state)
}

// outsideStateDir adds to err, a failure to open the state path that key
// names, where it must go when $STATE_DIRECTORY (dir, as config.Parse read
// it: Config.StateDir) is set: under the systemd unit (ProtectSystem=strict,
// a DynamicUser) and in the image that directory is the only place the
// bridge may write, so a path outside it fails whatever its owner or mode (a
// dynamic user has no fixed id to chown to), and the open's own advice
// ("create it, writable by the bridge's user") cannot help. Such an error
// is a config error (a UsageError: exit status 2), which the unit does not
// restart (RestartPreventExitStatus=2): only a change of the config can fix
// it. Otherwise err is returned as it is.
func outsideStateDir(err error, key, path, dir string) error {
	if err == nil || dir == "" || path == "" {
		return err
	}
	if rel, rerr := filepath.Rel(dir, path); rerr == nil && filepath.IsLocal(rel) {
		return err
	}
	return &UsageError{Err: fmt.Errorf("%w; %s %s is outside $STATE_DIRECTORY (%s), the one directory the systemd unit (ProtectSystem=strict, DynamicUser) and the image let the bridge write: make %s relative (it then goes under $STATE_DIRECTORY) or a path under it",
		err, key, path, dir, key)}
}

// openJournal loads the de-dup window from delivery.dedup.file and keeps
// journalling it; closeAll stops it after the drain, so every id MNS
// accepted is in the file.
func (r *run) openJournal() error {
	b := r.b
	if b.dedup == nil || b.cfg.Delivery.Dedup.File == "" {
		return nil
	}
	j, n, err := bridge.OpenDedupJournal(b.cfg.Delivery.Dedup.File, b.dedup, b.cfg.Delivery.Dedup.Size, b.log.With("component", "dedup"))
	if err != nil {
		return fmt.Errorf("delivery.dedup.file: %w", err)
	}
	b.log.Info("de-dup window loaded", "file", b.cfg.Delivery.Dedup.File, "ids", n)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { j.Run(ctx); close(done) }()
	r.onClose(func() {
		stop()
		<-done
		j.Close()
	})
	return nil
}

// serveHTTP serves /metrics, the health endpoints and /status on
// http.listen (or Options.HTTPListener); closeSource shuts it down.
func (r *run) serveHTTP() error {
	b := r.b
	ln := b.opts.HTTPListener
	if ln == nil && b.cfg.HTTP.Listen != "" {
		var err error
		ln, err = net.Listen("tcp", b.cfg.HTTP.Listen)
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("http.listen: another process listens on %s (another bridge with this config?): stop it or choose another address: %w", b.cfg.HTTP.Listen, err)
		}
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
	}
	if ln == nil {
		return nil
	}
	scheme := "http"
	if b.web != nil {
		tc, err := b.web.TLSConfig()
		if err != nil {
			ln.Close()
			return fmt.Errorf("http.web_config_file: %w", err)
		}
		if tc != nil {
			ln, scheme = tls.NewListener(ln, tc), "https"
		}
	}
	r.srv = &http.Server{Handler: b.httpHandler(), ReadHeaderTimeout: 5 * time.Second,
		// What the server reports itself (a failed TLS handshake, an accept
		// error) is a record of the bridge's log, in log.format.
		ErrorLog: slog.NewLogLogger(b.log.With("component", "http").Handler(), slog.LevelWarn)}
	go r.srv.Serve(ln)
	b.log.Info("serving metrics and health", "addr", ln.Addr().String(), "scheme", scheme,
		"basic_auth", b.web != nil && len(b.web.Users) > 0)
	return nil
}

// openSpool opens spool.dir, when set, and the stage between the source
// and the pipeline.
func (r *run) openSpool() error {
	b := r.b
	if b.cfg.Spool.Dir == "" {
		return nil
	}
	s, err := spool.Open(spool.Options{Dir: b.cfg.Spool.Dir, MaxBytes: int64(b.cfg.Spool.MaxBytes),
		CommitInterval: b.cfg.Spool.CommitInterval, Logger: b.log.With("component", "spool")})
	if err != nil {
		hint := ""
		if errors.Is(err, spool.ErrLocked) {
			hint = " (each bridge needs a spool.dir of its own: set another one for this bridge, or stop the other)"
		} else if b.cfg.SpoolDirIsDefault() {
			hint = " (with stomp ack auto the spool is on by default: set spool.dir to a directory the bridge can write, or `dir: \"\"` to run without it)"
		}
		return fmt.Errorf("spool.dir %s: %w%s", b.cfg.Spool.Dir, err, hint)
	}
	r.onClose(func() {
		if err := s.Close(); err != nil {
			b.log.Error("closing the spool", "err", err)
		}
	})
	st := s.Stats()
	b.log.Info("spool open", "dir", b.cfg.Spool.Dir, "messages", st.Depth, "bytes", st.Bytes)
	b.registerSpoolMetrics(s, int64(st.Depth))
	r.spool, r.stage = s, spool.NewStage(s, b.pipeline.Handle, b.log.With("component", "spool"))
	b.status.setStage(r.stage, int64(st.Depth))
	return nil
}

// startIntake starts the source (into the spool's stage or the pipeline),
// the spool's feeder, the readiness watch and the summaries; stopIntake
// stops the first two.
func (r *run) startIntake(ctx context.Context) {
	b := r.b
	ictx, cancel := context.WithCancel(ctx)
	r.cancelIntake = cancel
	intake := b.pipeline.Handle
	if r.stage != nil {
		intake = r.stage.Intake
		r.feederDone = make(chan struct{})
		go func() { defer close(r.feederDone); r.stage.Feed(ictx) }()
	}
	// At shutdown a message no upstream would send again is kept, never
	// dropped: see keeping and store.
	r.keep = &bridge.Keeper{}
	intake = r.countTaken(r.keep.Wrap(intake))
	r.srcErr = make(chan error, 1)
	go func() { r.srcErr <- b.source.Run(ictx, intake) }()
	go b.watchReady(ictx)
	sctx, cancelStatus := context.WithCancel(ictx)
	r.cancelStatus, r.statusDone = cancelStatus, make(chan struct{})
	go func() { defer close(r.statusDone); b.reportStatus(sctx) }()
	go b.summaries(ictx, r.spool)
}

// countTaken counts in source_received what intake takes from the source
// (nil: the source settles it or, refused at shutdown and kept, sees it
// taken).
func (r *run) countTaken(intake bridge.Handler) bridge.Handler {
	return func(ctx context.Context, d *bridge.Delivery) error {
		err := intake(ctx, d)
		if err == nil {
			r.b.status.sourceReceived.Add(1)
			r.b.metrics.SourceReceived.Inc()
		}
		return err
	}
}

// wait returns when ctx is done (nil) or the source stopped for good (its
// error).
func (r *run) wait(ctx context.Context) error {
	b := r.b
	select {
	case <-ctx.Done():
		b.log.Info("shutting down: intake stopped, draining", "timeout", b.cfg.ShutdownTimeout)
		return nil
	case err := <-r.srcErr:
		r.srcErr <- err // for stopIntake
		b.log.Error("source stopped", "err", err)
		return err
	}
}

// stopIntake stops the source and the feeder and waits for both.
func (r *run) stopIntake() {
	r.cancelIntake()
	<-r.srcErr
	if r.feederDone != nil {
		<-r.feederDone
	}
}

// drain lets the pipeline settle what it holds within shutdown_timeout.
// What is left and that no upstream would send again (the pipeline's
// stranded deliveries, what never reached the spool) is stored in the spool
// or the dead-letter file; the rest is released (the platform redelivers
// it). logShutdown says where each went.
func (r *run) drain() {
	b := r.b
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ShutdownTimeout)
	defer cancel()
	if r.stage != nil {
		r.keep.Add(r.stage.Close()...)
	}
	if r.spool != nil {
		r.forwardUnspooled(ctx)
	}
	drainErr := b.pipeline.Drain(ctx)
	r.keep.Add(b.pipeline.Stranded()...)
	r.kept = b.store(r.keep.Take(), r.spool)
	if r.spool != nil {
		r.leftInSpool = r.closeSpool()
	}
	b.logShutdown(drainErr, r.kept, r.stage != nil, r.leftInSpool)
}

// forwardUnspooled stores in the spool what the stop kept (what intake
// refused as it stopped, the messages whose commit failed) and hands what
// the spool does not take to the pipeline, before its drain: when the
// spool's disk fails (read-only after an error, I/O errors) the
// dead-letter file, on the same disk, fails too, and those messages, which
// the platform settled when it pushed them (STOMP ack auto), were lost
// while MNS took messages (walk15: 9,063 and 3,002 at a SIGTERM). What the
// pipeline has no room for by ctx's end, or does not forward by then, is
// stored after the drain as before (store).
func (r *run) forwardUnspooled(ctx context.Context) {
	for _, d := range r.spool.AppendAll(r.keep.Take()) {
		if err := r.b.pipeline.Handle(ctx, d); err != nil {
			r.keep.Add(d)
		}
	}
}

// closeSpool closes the spool once the drain stored in it what it keeps,
// which commits the deletes still queued, and returns the messages it
// holds: what the next start forwards. closeAll's Close is then a no-op.
func (r *run) closeSpool() int64 {
	if err := r.spool.Close(); err != nil {
		r.b.log.Error("closing the spool", "err", err)
	}
	return r.spool.Stats().Depth
}

// closeSource closes the source's connections and shuts the HTTP server
// down, within 5 s together.
func (r *run) closeSource() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.b.source.Close(ctx); err != nil {
		r.b.log.Warn("closing the source", "err", err)
	}
	if r.srv != nil {
		r.srv.Shutdown(ctx)
	}
}
