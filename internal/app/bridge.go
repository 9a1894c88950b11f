package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/amqpsrc"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/deadletter"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/stompsrc"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/webconfig"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// Options adjust a Bridge for tests and embedding; the zero value is what
// "run" uses.
type Options struct {
	// Logger; nil builds one from the config's log section on stderr.
	Logger *slog.Logger
	// Registry receives the metrics; nil creates a new one.
	Registry *prometheus.Registry
	// HTTPListener, when set, serves /metrics and the health endpoints
	// instead of listening on http.listen (tests use port 0).
	HTTPListener net.Listener
	// OnReady is called once, when Run has started: the config is valid,
	// the files (spool, dead-letter file, de-dup journal) are open, the
	// HTTP endpoints serve and the source connections are supervised
	// (systemd READY=1). It does not wait for the platform or MNS: a bridge
	// that waits for them is running, and OnStatus says what it waits for.
	OnReady func()
	// OnStatus, when set, is called from Run with a one-line state of the
	// bridge (systemd STATUS=): now, and each time the state changes
	// (connected n/m, waiting for the platform and why, MNS failing...).
	OnStatus func(string)
	// OnStopping, when set, is called once from Run when the stop begins
	// (ctx done, or the source failed for good), before the drain, with a
	// status line saying what the drain waits for (systemd STOPPING=1 with
	// STATUS=). No OnStatus call follows it. When it is nil, that line goes
	// to OnStatus.
	OnStopping func(string)
	// Clock for signing; nil = time.Now.
	Clock func() time.Time
	// Credentials tunes the credentials caches (tests shorten the retry
	// backoff); the zero value is the defaults.
	Credentials credentials.CacheOptions

	// stallAfter replaces the stall limit's 2 minutes (tests); 0 keeps them.
	stallAfter time.Duration
	// wrapSink, when set, wraps the MNS sink the pipeline sends to (tests).
	wrapSink func(*mns.Sink) bridge.Sink
}

// Bridge is one configured bridge: source → pipeline → MNS sink.
type Bridge struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	metrics  *bridge.Metrics
	client   *mns.Client
	creds    *signerCredentials
	dedup    *bridge.Dedup // nil when delivery.dedup.size is 0
	sink     *mns.Sink
	router   atomic.Pointer[bridge.Router] // the routes of the last Reload
	dead     *deadletter.Targets
	pipeline *bridge.Pipeline
	source   bridge.Source
	opts     Options

	// live is cfg with the routes and delivery settings of the last Reload.
	live atomic.Pointer[config.Config]

	status statusRecorder    // the last errors GET /status reports
	web    *webconfig.Config // http.web_config_file; nil when unset

	readyOnce sync.Once // OnReady is called once
	readyMu   sync.Mutex
	ready     bool
	notReady  []string
	// lookupState is the failing destination lookups by code
	// (checkDestinations' state), "" while they pass.
	lookupState string
	// reloadRefused is why the last config reload was refused (the
	// running config kept), "" when it was applied or none was asked.
	reloadRefused string
	// restartPending names the config sections whose changes, read by an
	// applied reload, wait for a restart (Reload's needRestart); nil when
	// the running config is the file's.
	restartPending []string
}

// New provisions a bridge from a validated config without any network I/O:
// "check" stops here, "run" goes on with Run. Errors are UsageErrors when the
// config is at fault.
func New(cfg *config.Config, opts Options) (*Bridge, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, log: log, opts: opts, reg: opts.Registry}
	b.status.started = time.Now()
	if f := cfg.HTTP.WebConfigFile; f != "" {
		web, err := webconfig.Load(f)
		if err != nil {
			return nil, usageErr("http.web_config_file: %v", err)
		}
		b.web = web
	}
	b.live.Store(cfg)
	if b.reg == nil {
		b.reg = prometheus.NewRegistry()
		b.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	b.metrics = bridge.NewMetrics(b.reg)
	creds, err := newSignerCredentials(cfg, opts.Credentials, log)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	b.creds = creds
	creds.register(b.reg)

	mcfg := mnsConfig(cfg, creds.mnsKey())
	mcfg.Refused = creds.mns.Refused // a triple refused before its refresh is fetched anew
	client, err := mns.NewClient(mcfg)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	b.client = client
	b.sink = mns.NewSink(client)

	router, err := cfg.Router()
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	b.router.Store(router)
	b.dead = deadletter.NewTargets(cfg.Delivery.DeadLetter.File, recordingSink{Sink: b.sink, rec: &b.status.deadQueue, meter: b.metrics.DeadLetterQueueRequest}, cfg.Delivery.DeadLetter.Queue)
	b.dead.BoundFile(int64(cfg.Delivery.DeadLetter.MaxBytes))
	var dedup *bridge.Dedup
	if cfg.Delivery.Dedup.Size > 0 {
		dedup = bridge.NewDedup(cfg.Delivery.Dedup.Size, cfg.Delivery.Dedup.MaxAge)
	}
	b.dedup = dedup
	var sink bridge.Sink = b.sink
	if opts.wrapSink != nil {
		sink = opts.wrapSink(b.sink)
	}
	d := cfg.Delivery
	b.pipeline, err = bridge.NewPipeline(bridge.PipelineConfig{
		Router: router, Sink: recordingSink{Sink: sink, rec: &b.status.mns},
		DeadLetters: recordingDeadLetters{b.dead, &b.status.deadReason, &b.status.deadWrite}, Envelope: cfg.Envelope, Properties: propertySpec(cfg),
		BatchSize: d.BatchSize, BatchBytes: d.BatchBytes, Linger: d.Linger, MaxInFlight: d.MaxInFlight,
		MaxInFlightBytes:          int64(d.MaxInFlightBytes),
		MaxRequestsPerDestination: d.MaxRequestsPerDestination, MaxRequests: d.MaxRequests,
		Retry: bridge.RetryPolicy{InitialBackoff: d.Retry.InitialBackoff, MaxBackoff: d.Retry.MaxBackoff,
			MaxAttempts: d.Retry.MaxAttempts, MaxAge: d.Retry.MaxAge},
		Dedup: dedup, Metrics: b.metrics, Logger: log.With("component", "pipeline"), Names: config.PipelineNames(),
	})
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	// Each request of a dead-letter queue write is an answer of MNS for
	// liveness, not only the end of the write (Stalled).
	b.dead.OnAnswer(b.pipeline.Answered)
	b.source, err = newSource(cfg, creds.provisioningParams(cfg), creds.source.Refused, opts.Clock, log.With("component", "source"))
	creds.provisioned.Store(true)
	if err != nil {
		return nil, &UsageError{Err: err}
	}
	if sr, ok := b.source.(bridge.StateReporter); ok {
		b.reg.MustRegister(bridge.NewConnCollector(sr))
	}
	gauge := func(name, help string, f func() float64) {
		b.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: name, Help: help}, f))
	}
	// Read from flow, as the stop line and /status read them: with the
	// spool, released is not what the pipeline released back into it.
	counter := func(name, help string, f func() float64) {
		b.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iot_mns_bridge", Name: name, Help: help}, f))
	}
	counter("released_total", "Deliveries given back to the platform, which sends them again (AMQP, STOMP client-individual): released of the stop line and /status. "+
		"At the stop only; with the spool on, what never reached it, not what the pipeline released back into the spool.",
		func() float64 { return float64(b.flow().Released) })
	counter("stranded_total", "Deliveries held at the stop that the platform does not send again (STOMP ack auto): stranded of the stop line and /status. "+
		"They are kept in the spool or the dead-letter file (kept_in_spool, kept_in_dead_letter_file of the stop line).",
		func() float64 { return float64(b.flow().Stranded) })
	gauge("in_flight", "Deliveries held by the pipeline (taken from the source, not yet settled).",
		func() float64 { return float64(b.pipeline.Stats().InFlight) })
	gauge("in_flight_limit", "delivery.max_in_flight: when in_flight reaches it, nothing more enters the pipeline until MNS takes messages: "+
		"without the spool the source stops reading; with the spool on, it goes on reading into the spool until spool.max_bytes.",
		func() float64 { return float64(d.MaxInFlight) })
	gauge("held_bytes", "Bytes the deliveries held by the pipeline count against delivery.max_in_flight_bytes.",
		func() float64 { return float64(b.pipeline.Stats().HeldBytes) })
	gauge("held_bytes_limit", "delivery.max_in_flight_bytes: when held_bytes reaches it, nothing more enters the pipeline until MNS takes messages: "+
		"without the spool the source stops reading; with the spool on, it goes on reading into the spool until spool.max_bytes.",
		func() float64 { return float64(d.MaxInFlightBytes) })
	return b, nil
}

// propertySpec is the mns.properties section for the pipeline; nil when
// it attaches nothing.
func propertySpec(cfg *config.Config) *bridge.PropertySpec {
	p := cfg.MNS.Properties
	spec := &bridge.PropertySpec{Platform: p.Platform, PlatformProperties: p.PlatformProperties, Prefix: p.Prefix, Trace: p.Trace}
	if !spec.Enabled() {
		return nil
	}
	return spec
}

// newSource builds the configured source; no I/O. refused hears the
// AccessKeyId of each refused login (the source's credentials cache).
func newSource(cfg *config.Config, params func() (iotauth.Params, error), refused func(id string), clock func() time.Time, log *slog.Logger) (bridge.Source, error) {
	s := cfg.Source
	limiter := source.NewAttemptLimiter(s.ConnectAttemptsPerMinute, time.Minute)
	switch s.Protocol {
	case "stomp":
		c := stompConfig(cfg, params, clock, limiter, log)
		c.Refused = refused
		return stompsrc.New(c)
	case "amqp":
		c := amqpConfig(cfg, params, clock, limiter, log)
		c.Refused = refused
		return amqpsrc.New(c)
	}
	return nil, fmt.Errorf("source.protocol: %q is not supported: use stomp or amqp", s.Protocol)
}

// mnsConfig is the MNS client's Config: the mns section, the pool size
// (delivery.max_requests), the credentials to sign with, and the names of
// its fields (config.MNSNames), so that its errors name the config keys.
func mnsConfig(cfg *config.Config, creds func(ctx context.Context) (id, secret, token string, err error)) mns.Config {
	return mns.Config{
		Endpoint:         cfg.MNS.Endpoint,
		BodyEncoding:     cfg.MNS.BodyEncoding,
		Timeout:          cfg.MNS.RequestTimeout,
		MaxConns:         cfg.Delivery.MaxRequests,
		SignatureVersion: cfg.MNS.SignatureVersion,
		Region:           cfg.MNS.Region,
		Version:          ShortVersion(),
		Credentials:      creds,
		Names:            config.MNSNames(),
	}
}

// tlsOptions is the source's TLS section.
func tlsOptions(cfg *config.Config) source.TLSOptions {
	t := cfg.Source.TLS
	return source.TLSOptions{CAFile: t.CAFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

// sourceSettings are the settings both protocols' source Configs share.
func sourceSettings(cfg *config.Config, params func() (iotauth.Params, error), clock func() time.Time, limiter *source.AttemptLimiter, log *slog.Logger) source.Settings {
	s := cfg.Source
	return source.Settings{
		Endpoint: sourceAddress(cfg), TLS: tlsOptions(cfg), Params: params, Clock: clock, Connections: s.Connections,
		DialTimeout: s.DialTimeout, MinBackoff: s.ReconnectMinBackoff, MaxBackoff: s.ReconnectMaxBackoff,
		Limiter: limiter, Logger: log, Names: config.SourceNames(),
	}
}

// amqpConfig is the AMQP source's config, for run and for check.
func amqpConfig(cfg *config.Config, params func() (iotauth.Params, error), clock func() time.Time, limiter *source.AttemptLimiter, log *slog.Logger) amqpsrc.Config {
	a := cfg.Source.AMQP
	return amqpsrc.Config{
		Settings: sourceSettings(cfg, params, clock, limiter, log),
		Address:  a.Address, Credit: a.Credit, IdleTimeout: a.IdleTimeout, Vhost: a.Vhost,
	}
}

// stompConfig is the STOMP source's config, for run and for check.
func stompConfig(cfg *config.Config, params func() (iotauth.Params, error), clock func() time.Time, limiter *source.AttemptLimiter, log *slog.Logger) stompsrc.Config {
	st := cfg.Source.STOMP
	return stompsrc.Config{
		Settings:    sourceSettings(cfg, params, clock, limiter, log),
		Destination: st.Destination, Ack: st.Ack, EncodeBase64: st.EncodeBase64, Host: st.Host,
		HeartBeat: st.HeartBeat, CheckInterval: st.CheckInterval, ReadGather: st.ReadGather,
	}
}

// registerSpoolMetrics exports the spool's depth and size, and its depth
// when it was opened, atStart.
func (b *Bridge) registerSpoolMetrics(s *spool.Spool, atStart int64) {
	b.status.setSpool(s.Stats)
	b.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_messages", Help: "Messages in the spool."},
			func() float64 { return float64(s.Stats().Depth) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_messages_at_start",
			Help: "Messages the spool held when the bridge started (an earlier run's backlog): in_spool_at_start of the stop line and /status. " +
				"spool_messages_at_start + source_received_total = forwarded_total + dead_lettered_total + duplicates_suppressed_total + duplicates_joined_total + spool_messages, " +
				"but for what is on its way into or out of the spool."},
			func() float64 { return float64(atStart) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_bytes", Help: "Bytes of messages in the spool."},
			func() float64 { return float64(s.Stats().Bytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_max_bytes",
			Help: "spool.max_bytes: when the next message does not fit below it, the source stops reading until MNS takes messages."},
			func() float64 { return float64(s.Stats().MaxBytes) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_full",
			Help: "1 while the spool refuses messages for spool.max_bytes (from the first refusal until it holds 90% of it or less): the source stops reading. spool_bytes stays below spool_max_bytes meanwhile: a message is refused when it does not fit."},
			func() float64 { return oneIf(s.Stats().Full) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iot_mns_bridge", Name: "spool_commits_total",
			Help: "The spool's write transactions that succeeded, each two fdatasyncs (with the messages and the deletes of MNS-accepted ones)."},
			func() float64 { return float64(s.CommitStats().Commits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iot_mns_bridge", Name: "spool_commit_seconds_total",
			Help: "Time the spool's commits took: over spool_commits_total, what a commit costs on this disk (a slow SD card or eMMC: hundreds of ms), which every message with the spool waits before MNS sees it and a crash can lose with STOMP ack auto."},
			func() float64 { return s.CommitStats().Time.Seconds() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "iot_mns_bridge", Name: "spool_committed_messages_total",
			Help: "Messages the spool's commits stored: over spool_commits_total, messages a commit."},
			func() float64 { return float64(s.CommitStats().Messages) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "iot_mns_bridge", Name: "spool_writes_failing",
			Help: "1 while the spool's writes fail (a full disk, an I/O error): the source stops reading and the messages whose write failed are held in memory until a write succeeds."},
			func() float64 { return oneIf(s.Stats().CommitError != "") }),
	)
}

// oneIf is a condition as a gauge's value: 1 while it holds, else 0.
func oneIf(cond bool) float64 {
	if cond {
		return 1
	}
	return 0
}

// sourceAddress is the source endpoint as host:port (validated by config).
func sourceAddress(cfg *config.Config) string {
	addr, err := cfg.Source.Address()
	if err != nil {
		return cfg.Source.Endpoint
	}
	return addr
}

// Stats returns the pipeline's counters.
func (b *Bridge) Stats() bridge.Stats { return b.pipeline.Stats() }

// Registry returns the Prometheus registry the bridge reports to.
func (b *Bridge) Registry() *prometheus.Registry { return b.reg }

// logShutdown says, with exact counts, where the messages MNS had not
// accepted at shutdown went. "Released" is said only of deliveries whose
// upstream sends them again (AMQP release, STOMP client-individual).
// leftInSpool is what the closed spool holds (those the pipeline held and
// those the feeder had not handed it yet). A spool that holds messages is
// said whether or not the drain was cut: the feeder may not have handed
// the pipeline any of them yet, and then the drain ends at once.
func (b *Bridge) logShutdown(cut error, kept keepCounts, spooled bool, leftInSpool int64) {
	why := "shutdown timeout reached; "
	if errors.Is(cut, bridge.ErrCannotProgress) {
		why = "drain ended before shutdown_timeout: MNS (or the dead-letter target) fails and nothing held could be forwarded; "
	}
	switch {
	case spooled && leftInSpool > 0:
		msg := "the messages MNS has not accepted stay in the spool and are forwarded at the next start"
		if cut != nil {
			msg = why + msg
		}
		b.log.Warn(msg, "left_in_spool", leftInSpool)
	case !spooled && cut != nil:
		if released := b.pipeline.Stats().Released; released > 0 {
			b.log.Warn(why+"released the messages MNS has not accepted (the platform redelivers them)",
				"released", released)
		}
	}
	if kept.spooled > 0 {
		b.log.Warn("messages the platform will not send again were written to the spool at shutdown; they are forwarded at the next start",
			"count", kept.spooled, "dir", b.cfg.Spool.Dir)
	}
	if kept.deadLettered > 0 {
		b.log.Warn("messages the platform will not send again were written to the dead-letter file at shutdown: send them with iot-mns-bridge replay",
			"count", kept.deadLettered, "file", b.cfg.Delivery.DeadLetter.File, "reason", kept.reason)
	}
}

// openDeadLetters opens the dead-letter file, if one is configured.
func (b *Bridge) openDeadLetters() error {
	if err := b.dead.Open(); err != nil {
		return fmt.Errorf("delivery.dead_letter.file: %w", err)
	}
	return nil
}

// destinations lists the destinations known without a message: those of
// the routes and the default route without placeholders
// (Router.Destinations), and the dead-letter queue.
func (b *Bridge) destinations() []bridge.Destination {
	out := b.router.Load().Destinations()
	if q := b.cfg.Delivery.DeadLetter.Queue; q != "" {
		if d := (bridge.Destination{Kind: bridge.Queue, Name: q}); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// destinationKeys returns the config keys that name the fixed destination
// d: the routes' and the default route's (Router.Keys), and
// delivery.dead_letter.queue.
func (b *Bridge) destinationKeys(d bridge.Destination) []string {
	keys := b.router.Load().Keys(d)
	if q := b.cfg.Delivery.DeadLetter.Queue; q != "" && d == (bridge.Destination{Kind: bridge.Queue, Name: q}) {
		keys = append(keys, "delivery.dead_letter.queue")
	}
	return keys
}

// namedByKeys is d as a check reports it: with the config keys that name it
// (destinationKeys), where the operator fixes it, e.g.
// "queue thing-eventz (routes[2].queue)".
func namedByKeys(d bridge.Destination, keys []string) string {
	if len(keys) == 0 {
		return d.String()
	}
	return d.String() + " (" + strings.Join(keys, ", ") + ")"
}

// checkDestinations looks up every static destination. It returns the
// failures that make the bridge not ready (a missing queue, MNS down), and
// apart from them the destinations it could not verify because the RAM user
// may not read their attributes (AccessDenied on Get*Attributes): a user
// that may only send runs fine, so that is not a reason to be not ready.
//
// state names each failure by destination and MNS error code, or "no reply"
// (not by its text, which holds request ids), so that a caller can log
// changes only.
func (b *Bridge) checkDestinations(ctx context.Context) (failed, unverifiable []string, state string) {
	var keys []string
	for _, d := range b.destinations() {
		err := b.sink.Check(ctx, d)
		var me *mns.Error
		switch {
		case err == nil:
		case accessDenied(err):
			unverifiable = append(unverifiable, fmt.Sprintf("MNS %s: not verifiable: the RAM user may not read its attributes "+
				"(mns:Get%sAttributes); sending does not need it, so this is not a failure", d, kindName(d.Kind)))
		case errors.Is(err, context.DeadlineExceeded) && !errors.As(err, new(*mns.NoReplyError)):
			// The check's own time limit (checkTimeout, for all its
			// lookups), not the request's (which the client reports as a
			// NoReplyError): a frozen MNS used it up. Not ctx.Err(): its
			// timer may not have fired yet when the lookup returns.
			failed = append(failed, fmt.Sprintf("MNS %s: no reply within the destination check's time limit (%s for all its lookups): "+
				"MNS or the network is slow", namedByKeys(d, b.destinationKeys(d)), checkTimeout))
			keys = append(keys, d.String()+": no reply")
		default:
			failed = append(failed, fmt.Sprintf("MNS %s: %v", namedByKeys(d, b.destinationKeys(d)), err))
			key := err.Error()
			switch {
			case errors.As(err, &me):
				key = fmt.Sprintf("%s %d", me.Code, me.Status)
			case errors.As(err, new(*mns.NoReplyError)):
				// Its text names the user request id (and a socket error
				// the local port), new at every check.
				key = "no reply"
			case errors.Is(err, credentials.ErrUnavailable):
				// Its text counts down to the next refresh.
				key = "no valid credentials"
			}
			keys = append(keys, d.String()+": "+key)
		}
	}
	return failed, unverifiable, strings.Join(keys, "; ")
}

// accessDenied reports whether MNS refused a request for lack of
// permission (403 AccessDenied).
func accessDenied(err error) bool {
	var me *mns.Error
	return errors.As(err, &me) && me.Code == "AccessDenied"
}

func kindName(k bridge.DestinationKind) string {
	if k == bridge.Topic {
		return "Topic"
	}
	return "Queue"
}

// Reload applies the routes, default route, envelope, batching and retry
// settings of newCfg to the running bridge. It refuses a config whose routes
// do not compile, keeping the old ones. Other sections (source, mns,
// spool, http, log, runtime, flow-control bounds) need a restart; Reload names the
// ones that changed.
func (b *Bridge) Reload(newCfg *config.Config) (needRestart []string, err error) {
	router, err := newCfg.Router()
	if err != nil {
		return nil, err
	}
	d := newCfg.Delivery
	if err := b.pipeline.Replace(bridge.Tuning{
		Router: router, Envelope: newCfg.Envelope, BatchSize: d.BatchSize, BatchBytes: d.BatchBytes, Linger: d.Linger,
		Retry: bridge.RetryPolicy{InitialBackoff: d.Retry.InitialBackoff, MaxBackoff: d.Retry.MaxBackoff,
			MaxAttempts: d.Retry.MaxAttempts, MaxAge: d.Retry.MaxAge},
	}); err != nil {
		return nil, err
	}
	b.router.Store(router)
	old := b.live.Load()
	differs := func(name string, a, b any) {
		// Compared as values: fmt would print a Secret as "***", so a
		// changed literal secret would look unchanged.
		if !reflect.DeepEqual(a, b) {
			needRestart = append(needRestart, name)
		}
	}
	differs("source", old.Source, newCfg.Source)
	differs("mns", old.MNS, newCfg.MNS)
	differs("spool", old.Spool, newCfg.Spool)
	differs("http", old.HTTP, newCfg.HTTP)
	differs("log", old.Log, newCfg.Log)
	differs("runtime", old.Runtime, newCfg.Runtime)
	differs("delivery.max_in_flight", old.Delivery.MaxInFlight, newCfg.Delivery.MaxInFlight)
	differs("delivery.max_in_flight_bytes", old.Delivery.MaxInFlightBytes, newCfg.Delivery.MaxInFlightBytes)
	differs("delivery.max_requests", old.Delivery.MaxRequests, newCfg.Delivery.MaxRequests)
	differs("delivery.max_requests_per_destination", old.Delivery.MaxRequestsPerDestination, newCfg.Delivery.MaxRequestsPerDestination)
	differs("delivery.dedup", old.Delivery.Dedup, newCfg.Delivery.Dedup)
	differs("delivery.dead_letter", old.Delivery.DeadLetter, newCfg.Delivery.DeadLetter)
	differs("shutdown_timeout", old.ShutdownTimeout, newCfg.ShutdownTimeout)
	// Routes and delivery settings now come from the new file; the rest
	// stays as it was started.
	merged := *old
	merged.Routes, merged.DefaultRoute, merged.Envelope = newCfg.Routes, newCfg.DefaultRoute, newCfg.Envelope
	merged.Delivery.BatchSize, merged.Delivery.BatchBytes, merged.Delivery.Linger, merged.Delivery.Retry =
		d.BatchSize, d.BatchBytes, d.Linger, d.Retry
	b.live.Store(&merged)
	return needRestart, nil
}
