package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/webconfig"
)

// Status is what GET /status answers (JSON) and `iot-mns-bridge status`
// prints: the state of each part of a running bridge, with counters since
// start and the last error each part saw. Rates are computed by the client
// from two snapshots.
type Status struct {
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Time      time.Time `json:"time"` // when the snapshot was taken
	Ready     bool      `json:"ready"`
	NotReady  []string  `json:"not_ready,omitempty"`
	Healthy   bool      `json:"healthy"`
	// HealthError is why /healthz fails, "" when healthy.
	HealthError string `json:"health_error,omitempty"`

	Source      []SourceConnStatus `json:"source"`
	Pipeline    PipelineStatus     `json:"pipeline"`
	MNS         PartError          `json:"mns"`
	DeadLetters DeadLetterStatus   `json:"dead_letters"`
	Spool       *SpoolStatus       `json:"spool,omitempty"` // nil without spool.dir
}

// SourceConnStatus is one source connection.
type SourceConnStatus struct {
	Name       string `json:"name"`
	Connected  bool   `json:"connected"`
	Reconnects int64  `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// PipelineStatus holds the pipeline's counters since start.
type PipelineStatus struct {
	Received     int64 `json:"received"`
	Forwarded    int64 `json:"forwarded"`
	DeadLettered int64 `json:"dead_lettered"`
	Duplicates   int64 `json:"duplicates"`
	Retried      int64 `json:"retried"`
	InFlight     int64 `json:"in_flight"`
	MaxInFlight  int   `json:"max_in_flight"`
}

// PartError is the last error a part saw and when; empty when none.
type PartError struct {
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// DeadLetterStatus is the dead-letter target: the last dead-lettered
// message's reason, and the last error writing to the target.
type DeadLetterStatus struct {
	LastReason   string     `json:"last_reason,omitempty"`
	LastReasonAt *time.Time `json:"last_reason_at,omitempty"`
	PartError
}

// SpoolStatus is the spool's depth and size.
type SpoolStatus struct {
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
}

// lastError remembers the most recent error of a part. Safe for concurrent use.
type lastError struct {
	mu  sync.Mutex
	msg string
	at  time.Time
}

func (l *lastError) set(msg string) {
	l.mu.Lock()
	l.msg, l.at = msg, time.Now()
	l.mu.Unlock()
}

func (l *lastError) get() PartError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msg == "" {
		return PartError{}
	}
	at := l.at
	return PartError{LastError: l.msg, LastErrorAt: &at}
}

// statusRecorder collects the last errors /status reports.
type statusRecorder struct {
	started    time.Time
	mns        lastError // the last failed MNS send
	deadReason lastError // the last dead-lettered message's reason
	deadWrite  lastError // the last failure writing a dead letter
	spool      func() spool.Stats
	spoolMu    sync.Mutex
}

// recordingSink passes sends on to the sink and remembers the last failure.
type recordingSink struct {
	bridge.Sink
	last *lastError
}

func (s recordingSink) Send(ctx context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	errs := s.Sink.Send(ctx, dest, msgs)
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			s.last.set(fmt.Sprintf("%s: message %s: %v", dest, msgs[i].ID, err))
			break
		}
	}
	return errs
}

// Limits passes on the sink's request limits (bridge.LimitedSink), so that
// the pipeline still batches once, within them.
func (s recordingSink) Limits(dest bridge.Destination) bridge.SinkLimits {
	if l, ok := s.Sink.(bridge.LimitedSink); ok {
		return l.Limits(dest)
	}
	return bridge.SinkLimits{}
}

var _ bridge.LimitedSink = recordingSink{}

// recordingDeadLetters passes dead letters on and remembers the last reason
// and the last write failure.
type recordingDeadLetters struct {
	bridge.DeadLetterSink
	reason, write *lastError
}

func (d recordingDeadLetters) DeadLetter(ctx context.Context, entries []bridge.DeadLetter) error {
	err := d.DeadLetterSink.DeadLetter(ctx, entries)
	if n := len(entries); n > 0 {
		e := entries[n-1]
		id := ""
		if e.Message != nil {
			id = e.Message.MessageID
		}
		d.reason.set(fmt.Sprintf("message %s: %s", id, e.Reason))
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		d.write.set(err.Error())
	}
	return err
}

func (r *statusRecorder) setSpool(f func() spool.Stats) {
	r.spoolMu.Lock()
	r.spool = f
	r.spoolMu.Unlock()
}

// Status returns a snapshot of the bridge's state.
func (b *Bridge) Status() Status {
	st := Status{Version: Version(), StartedAt: b.status.started, Time: time.Now()}
	st.NotReady = b.NotReady()
	st.Ready = len(st.NotReady) == 0
	if err := b.Healthy(); err != nil {
		st.HealthError = err.Error()
	} else {
		st.Healthy = true
	}
	if sr, ok := b.source.(bridge.StateReporter); ok {
		for _, c := range sr.ConnStates() {
			st.Source = append(st.Source, SourceConnStatus{Name: c.Name, Connected: c.Connected, Reconnects: c.Reconnects, LastError: c.LastError})
		}
	}
	ps := b.pipeline.Stats()
	st.Pipeline = PipelineStatus{Received: ps.Received, Forwarded: ps.Forwarded, DeadLettered: ps.DeadLettered,
		Duplicates: ps.Duplicates, Retried: ps.Retried, InFlight: ps.InFlight, MaxInFlight: b.cfg.Delivery.MaxInFlight}
	st.MNS = b.status.mns.get()
	reason := b.status.deadReason.get()
	st.DeadLetters = DeadLetterStatus{LastReason: reason.LastError, LastReasonAt: reason.LastErrorAt, PartError: b.status.deadWrite.get()}
	b.status.spoolMu.Lock()
	f := b.status.spool
	b.status.spoolMu.Unlock()
	if f != nil {
		s := f()
		st.Spool = &SpoolStatus{Messages: int64(s.Depth), Bytes: s.Bytes, MaxBytes: s.MaxBytes}
	}
	return st
}

func (b *Bridge) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(b.Status())
}

// localURL turns an http.listen address into a URL a client on the same
// host can ask: a wildcard host becomes 127.0.0.1.
func localURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// localEndpoint returns the base URL a client on the same host uses for the
// bridge whose http section is h, and an HTTP client for it: HTTPS trusting the
// web config's cert_file when http.web_config_file sets tls_server_config.
func localEndpoint(h config.HTTP) (string, *http.Client, error) {
	listen := h.Listen
	if listen == "" {
		return "", nil, usageErr("http.listen is empty: the bridge serves no HTTP endpoint")
	}
	base := localURL(listen)
	if f := h.WebConfigFile; f != "" {
		web, err := webconfig.Load(f)
		if err != nil {
			return "", nil, usageErr("http.web_config_file: %v", err)
		}
		if web.TLS != nil {
			client, err := trustingClient(web.TLS.CertFile)
			if err != nil {
				return "", nil, usageErr("http.web_config_file: tls_server_config.cert_file: %v", err)
			}
			return "https://" + strings.TrimPrefix(base, "http://"), client, nil
		}
	}
	return base, http.DefaultClient, nil
}

// trustingClient is an HTTP client that trusts the certificates in the PEM
// file (a CA, or the server's own self-signed certificate).
func trustingClient(pemFile string) (*http.Client, error) {
	pem, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", pemFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func cmdStatus(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("status", stdio)
	url := fs.String("url", "", "the bridge's base `URL` (default http://<http.listen> from -config, else http://127.0.0.1:9477)")
	path := fs.String("config", "", "config `FILE` whose http.listen to use")
	asJSON := fs.Bool("json", false, "print the two snapshots and the rates as JSON instead of a table")
	interval := fs.Duration("interval", time.Second, "time between the two snapshots the rates are computed from; 0: one snapshot, no rates")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	user := fs.String("user", "", "basic auth `user`, when http.web_config_file sets basic_auth_users")
	passwordFile := fs.String("password-file", "", "`file` holding the basic auth password (one line)")
	caFile := fs.String("ca-file", "", "PEM `file` of the CA (or self-signed certificate) to trust for an https URL; default with -config: the web config's cert_file")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	var password string
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return usageErr("-password-file: %v", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	if (*user == "") != (*passwordFile == "") {
		return usageErr("-user and -password-file go together")
	}
	if *interval < 0 {
		return usageErr("-interval %v: want 0 or more", *interval)
	}
	base := strings.TrimSuffix(*url, "/")
	client := http.DefaultClient
	if base == "" {
		h := config.Default().HTTP
		if *path != "" {
			var err error
			if h, err = loadHTTP(*path); err != nil {
				return err
			}
		}
		var err error
		if base, client, err = localEndpoint(h); err != nil {
			return err
		}
	}
	if *caFile != "" {
		c, err := trustingClient(*caFile)
		if err != nil {
			return usageErr("-ca-file: %v", err)
		}
		client = c
	}
	get := func() (Status, error) {
		var st Status
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(cctx, http.MethodGet, base+"/status", nil)
		if err != nil {
			return st, usageErr("-url: %v", err)
		}
		if *user != "" {
			req.SetBasicAuth(*user, password)
		}
		resp, err := client.Do(req)
		if err != nil {
			return st, fmt.Errorf("is the bridge running with http.listen at %s? %w", base, err)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			resp.Body.Close()
			return st, fmt.Errorf("%s/status: 401 Unauthorized: http.web_config_file asks for basic auth: pass -user and -password-file", base)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return st, fmt.Errorf("%s/status: %w", base, err)
		}
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("%s/status: %s: %s (a bridge older than the status command?)", base, resp.Status, strings.TrimSpace(string(body)))
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return st, fmt.Errorf("%s/status: not a bridge status: %w", base, err)
		}
		return st, nil
	}
	first, err := get()
	if err != nil {
		return err
	}
	last := first
	if *interval > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*interval):
		}
		if last, err = get(); err != nil {
			return err
		}
	}
	rates := statusRates(first, last)
	if *asJSON {
		enc := json.NewEncoder(stdio.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Status Status       `json:"status"`
			Rates  *StatusRates `json:"rates,omitempty"`
		}{last, rates})
	}
	return printStatus(stdio.Out, last, rates)
}

// StatusRates are per-second rates between two snapshots.
type StatusRates struct {
	Seconds      float64 `json:"seconds"`
	Received     float64 `json:"received_per_s"`
	Forwarded    float64 `json:"forwarded_per_s"`
	DeadLettered float64 `json:"dead_lettered_per_s"`
}

// statusRates is nil when b is not later than a (one snapshot) or the
// bridge restarted in between.
func statusRates(a, b Status) *StatusRates {
	secs := b.Time.Sub(a.Time).Seconds()
	if secs <= 0 || !a.StartedAt.Equal(b.StartedAt) {
		return nil
	}
	per := func(x, y int64) float64 { return float64(y-x) / secs }
	return &StatusRates{Seconds: secs, Received: per(a.Pipeline.Received, b.Pipeline.Received),
		Forwarded: per(a.Pipeline.Forwarded, b.Pipeline.Forwarded), DeadLettered: per(a.Pipeline.DeadLettered, b.Pipeline.DeadLettered)}
}

// printStatus writes the human table: one row per part.
func printStatus(w io.Writer, st Status, r *StatusRates) error {
	state := "ready"
	if !st.Ready {
		state = "NOT READY"
	}
	if !st.Healthy {
		state += ", UNHEALTHY: " + st.HealthError
	}
	fmt.Fprintf(w, "%s, up %s, %s\n", st.Version, st.Time.Sub(st.StartedAt).Round(time.Second), state)
	for _, reason := range st.NotReady {
		fmt.Fprintf(w, "  not ready: %s\n", reason)
	}
	fmt.Fprintln(w)
	rate := func(f func(*StatusRates) float64) string {
		if r == nil {
			return "-"
		}
		return strconv.FormatFloat(f(r), 'f', 1, 64)
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	since := func(at *time.Time) string {
		if at == nil {
			return ""
		}
		return " (" + st.Time.Sub(*at).Round(time.Second).String() + " ago)"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PART\tSTATE\tRATE/s\tTOTAL\tIN FLIGHT\tLAST ERROR")
	if len(st.Source) == 0 {
		fmt.Fprintln(tw, "source\t-\t-\t-\t-\t-")
	}
	for i, c := range st.Source {
		s := "connected"
		if !c.Connected {
			s = "DOWN"
		}
		rt, tot := "", ""
		if i == 0 { // received is counted for the source as a whole
			rt, tot = rate(func(r *StatusRates) float64 { return r.Received }), strconv.FormatInt(st.Pipeline.Received, 10)
		}
		fmt.Fprintf(tw, "source %s\t%s, %d reconnects\t%s\t%s\t\t%s\n", c.Name, s, c.Reconnects, rt, tot, orDash(c.LastError))
	}
	mnsState := "ok"
	if st.MNS.LastErrorAt != nil && st.Pipeline.InFlight > 0 {
		mnsState = "retrying"
	}
	for _, reason := range st.NotReady {
		// A destination lookup failing (wrong key, missing queue) before
		// any send did: the row must not say "ok" under that reason.
		if strings.HasPrefix(reason, "MNS queue ") || strings.HasPrefix(reason, "MNS topic ") {
			mnsState = "lookups failing (see not ready)"
			break
		}
	}
	fmt.Fprintf(tw, "mns\t%s, %d retried\t%s\t%d\t%d / %d\t%s\n", mnsState, st.Pipeline.Retried,
		rate(func(r *StatusRates) float64 { return r.Forwarded }), st.Pipeline.Forwarded,
		st.Pipeline.InFlight, st.Pipeline.MaxInFlight, orDash(st.MNS.LastError)+since(st.MNS.LastErrorAt))
	dl := orDash(st.DeadLetters.LastError) + since(st.DeadLetters.LastErrorAt)
	if st.DeadLetters.LastReason != "" {
		dl = "last: " + st.DeadLetters.LastReason + since(st.DeadLetters.LastReasonAt)
		if st.DeadLetters.LastError != "" {
			dl += "; writing failed: " + st.DeadLetters.LastError + since(st.DeadLetters.LastErrorAt)
		}
	}
	fmt.Fprintf(tw, "dead letters\t%d duplicates dropped\t%s\t%d\t\t%s\n", st.Pipeline.Duplicates,
		rate(func(r *StatusRates) float64 { return r.DeadLettered }), st.Pipeline.DeadLettered, dl)
	if sp := st.Spool; sp != nil {
		pct := 0.0
		if sp.MaxBytes > 0 {
			pct = 100 * float64(sp.Bytes) / float64(sp.MaxBytes)
		}
		fmt.Fprintf(tw, "spool\t%.1f%% full\t\t%d msgs, %d bytes\t\t-\n", pct, sp.Messages, sp.Bytes)
	}
	return tw.Flush()
}
