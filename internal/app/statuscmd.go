package app

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/webconfig"
)

// The commands that ask a running bridge over its HTTP endpoint, from an
// operator's shell: status (GET /status, see Status) and healthcheck
// (GET /healthz). Both find the bridge from the http section of -config.

// loadHTTP reads only the http section of the config file named by -config
// (see config.LoadHTTP): status and healthcheck run from an operator's shell,
// which has neither the bridge's environment nor its secrets.
func loadHTTP(path string) (config.HTTP, error) {
	h, err := config.LoadHTTP(path)
	if err != nil {
		return config.HTTP{}, &UsageError{Err: err}
	}
	return h, nil
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
// bridge configured by the file at path (the default http section when path
// is ""), and an HTTP client for it: HTTPS trusting the web config's
// cert_file when http.web_config_file sets tls_server_config.
func localEndpoint(path string) (string, *http.Client, error) {
	h := config.Default().HTTP
	if path != "" {
		var err error
		if h, err = loadHTTP(path); err != nil {
			return "", nil, err
		}
	}
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
	pool, err := webconfig.CertPool(pemFile)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

func cmdStatus(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("status", stdio)
	url := fs.String("url", "", "the bridge's base `URL` (default http://<http.listen> from -config, else "+localURL(config.Default().HTTP.Listen)+")")
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
		var err error
		if base, client, err = localEndpoint(*path); err != nil {
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
	Seconds        float64 `json:"seconds"`
	SourceReceived float64 `json:"source_received_per_s"`
	Received       float64 `json:"received_per_s"`
	Forwarded      float64 `json:"forwarded_per_s"`
	DeadLettered   float64 `json:"dead_lettered_per_s"`
}

// statusRates is nil when b is not later than a (one snapshot) or the
// bridge restarted in between.
func statusRates(a, b Status) *StatusRates {
	secs := b.Time.Sub(a.Time).Seconds()
	if secs <= 0 || !a.StartedAt.Equal(b.StartedAt) {
		return nil
	}
	per := func(x, y int64) float64 { return float64(y-x) / secs }
	return &StatusRates{Seconds: secs, SourceReceived: per(fromSource(a.Pipeline), fromSource(b.Pipeline)), Received: per(a.Pipeline.Received, b.Pipeline.Received),
		Forwarded: per(a.Pipeline.Forwarded, b.Pipeline.Forwarded), DeadLettered: per(a.Pipeline.DeadLettered, b.Pipeline.DeadLettered)}
}

// fromSource is what the bridge took from the platform: source_received,
// or from a bridge that does not report it (older than the field: no
// in_spool_at_start either, and source_received 0 while it received),
// received, which is the same without the spool.
func fromSource(p PipelineStatus) int64 {
	if p.SourceReceived == 0 && p.InSpoolAtStart == nil && p.Received > 0 {
		return p.Received
	}
	return p.SourceReceived
}

// printStatus writes the human table: one row per part, then the
// message counts with the stop line's names.
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
	if st.ConfigReloadRefused != "" {
		fmt.Fprintf(w, "  config reload refused, running config kept: %s\n", st.ConfigReloadRefused)
	}
	if len(st.ConfigRestartPending) > 0 {
		fmt.Fprintf(w, "  config changes waiting for a restart: %s\n", strings.Join(st.ConfigRestartPending, ", "))
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
		if i == 0 { // source_received is counted for the source as a whole
			rt, tot = rate(func(r *StatusRates) float64 { return r.SourceReceived }), strconv.FormatInt(fromSource(st.Pipeline), 10)
		}
		fmt.Fprintf(tw, "source %s\t%s, %d reconnects\t%s\t%s\t\t%s\n", c.Name, s, c.Reconnects, rt, tot, orDash(c.LastError))
	}
	// Live state only: an error of an hour ago with messages in flight
	// now (a busy bridge) is not "retrying"; the LAST ERROR column keeps it.
	var mnsStates []string
	if n := st.MNSSendsFailing; n > 0 {
		mnsStates = append(mnsStates, fmt.Sprintf("FAILING to %d destination(s), retrying", n))
	}
	if st.MNSLookupsFailing > 0 {
		// A destination lookup failing (wrong key, missing queue) before
		// any send did: the row must not say "ok" under that reason.
		mnsStates = append(mnsStates, "lookups failing (see not ready)")
	}
	mnsState := "ok"
	if len(mnsStates) > 0 {
		mnsState = strings.Join(mnsStates, "; ")
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
	// Both are redeliveries not sent again: after MNS accepted the message
	// (the de-dup window) or while the bridge held it (joined).
	fmt.Fprintf(tw, "dead letters\t%d duplicates dropped\t%s\t%d\t\t%s\n", st.Pipeline.Duplicates+st.Pipeline.Joined,
		rate(func(r *StatusRates) float64 { return r.DeadLettered }), st.Pipeline.DeadLettered, dl)
	if q := st.DeadLetterQueue; q != nil {
		// Its requests are not the mns row's: a queue that refuses the
		// entries shows here (TOTAL: the entries it accepted).
		state := "ok"
		switch {
		case q.Requests == 0:
			state = "no requests yet"
		case q.Failing:
			state = "FAILING"
		}
		fmt.Fprintf(tw, "dead-letter queue %s\t%s, %d of %d requests failed\t\t%d\t\t%s\n", q.Name, state, q.Failed, q.Requests,
			q.Accepted, orDash(q.LastError)+since(q.LastErrorAt))
	}
	if sp := st.Spool; sp != nil {
		pct := 0.0
		if sp.MaxBytes > 0 {
			pct = 100 * float64(sp.Bytes) / float64(sp.MaxBytes)
		}
		state := fmt.Sprintf("%.1f%% full", pct)
		if sp.Full {
			state += ", refusing messages (source paused)"
		}
		if sp.WritesFailing != "" {
			state += ", writes FAILING (source paused)"
		}
		fmt.Fprintf(tw, "spool\t%s\t\t%d msgs, %d bytes\t\t%s\n", state, sp.Messages, sp.Bytes, orDash(sp.WritesFailing))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := messageCounts(st)
	fields := make([]string, 0, len(counts)/2)
	for i := 0; i < len(counts); i += 2 {
		fields = append(fields, fmt.Sprintf("%s=%d", counts[i], counts[i+1]))
	}
	_, err := fmt.Fprintf(w, "\nmessages: %s\n", strings.Join(fields, " "))
	return err
}

// messageCounts are the pipeline's counts (key, value pairs) with the stop
// line's names, in its order, and with what is not settled yet: in_flight,
// and with the spool in_spool (spool.messages), which holds what the
// pipeline holds. They add up as the stop line does (PipelineStatus).
// The summary line logs them too.
func messageCounts(st Status) []any {
	p := st.Pipeline
	var args []any
	if p.InSpoolAtStart != nil {
		args = append(args, "in_spool_at_start", *p.InSpoolAtStart)
	}
	args = append(args, "source_received", fromSource(p), "received", p.Received, "forwarded", p.Forwarded,
		"dead_lettered", p.DeadLettered, "duplicates", p.Duplicates, "joined", p.Joined, "released", p.Released,
		"stranded", p.Stranded, "in_flight", p.InFlight)
	if st.Spool != nil {
		args = append(args, "in_spool", st.Spool.Messages)
	}
	return args
}

func cmdHealthcheck(ctx context.Context, args []string, stdio Stdio) error {
	fs := newFlags("healthcheck", stdio)
	url := fs.String("url", "", "health `URL` (default http://<http.listen>/healthz from -config, else "+localURL(config.Default().HTTP.Listen)+"/healthz)")
	path := fs.String("config", "", "config `FILE` whose http.listen to use")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	target := *url
	client := http.DefaultClient
	if target == "" {
		// HTTPS when http.web_config_file sets TLS (/healthz needs no
		// credentials).
		base, c, err := localEndpoint(*path)
		if err != nil {
			return err
		}
		target, client = base+"/healthz", c
	}
	cctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, target, nil)
	if err != nil {
		return usageErr("-url: %v", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintln(stdio.Out, strings.TrimSpace(string(body)))
	return nil
}
