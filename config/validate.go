package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// Limits the platform and MNS put on config values.
const (
	MaxConnections   = 64                // clients per consumer group
	MaxBatchSize     = 16                // messages per MNS batch request
	MaxBatchBytes    = 65536             // body bytes per MNS batch request
	MaxMessageBytes  = 65536             // one MNS message body, after encoding
	MaxMNSNameLen    = 120               // queue and topic names
	MaxMessageTagLen = 16                // MNS message tags, in characters
	MaxNamedSegments = 16                // {name} segments in one route pattern
	MinIdleTimeout   = 60 * time.Second  // go-amqp advertises half: 30s
	MaxIdleTimeout   = 600 * time.Second // advertised 300s
)

// Validate checks the whole config and reports every problem at once
// (errors.Join of *FieldError), each with its key path and, for a config
// read by Parse, its file and line. It reads the secret files, so a missing
// or unreadable one is reported too. Errors never quote a secret.
func (c *Config) Validate() error {
	v := validator{c: c}
	v.source()
	v.mns()
	v.routes()
	v.delivery()
	v.rest()
	return errors.Join(v.errs...)
}

type validator struct {
	c    *Config
	errs []error
}

// bad records a problem with the key at path.
func (v *validator) bad(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: v.c.Path, Line: v.c.line(path), Path: path, Reason: fmt.Sprintf(format, args...)})
}

// line returns the line of the key at path, or of its nearest written
// parent, or 0.
func (c *Config) line(path string) int {
	if c.meta == nil {
		return 0
	}
	for path != "" {
		if l, ok := c.meta.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

func (v *validator) oneOf(path, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.bad(path, "%q is not supported: use %s", value, orList(allowed))
	}
}

func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.bad(path, "must be more than 0, got %s", d)
	}
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.bad(path, "must not be negative, got %s (0 disables)", d)
	}
}

func (v *validator) atLeast(path string, n, low int) {
	if n < low {
		v.bad(path, "must be at least %d, got %d", low, n)
	}
}

func (v *validator) between(path string, n, low, high int) {
	if n < low || n > high {
		v.bad(path, "must be %d to %d, got %d", low, high, n)
	}
}

// noSeparators rejects the characters the platform's username uses as
// separators; a secret's value is not quoted.
func (v *validator) noSeparators(path, value string, secret bool) {
	i := strings.IndexAny(value, "|,=")
	switch {
	case i < 0:
	case secret:
		v.bad(path, "must not contain '|', ',' or '=': the username uses them as separators")
	default:
		v.bad(path, "%q must not contain %q: the username uses '|', ',' and '=' as separators", value, value[i:i+1])
	}
}

func (v *validator) source() {
	s := &v.c.Source
	v.oneOf("source.protocol", s.Protocol, "stomp", "amqp")
	if _, err := s.Address(); err != nil {
		v.bad("source.endpoint", "%v", err)
	}
	switch n := len([]rune(s.ClientID)); {
	case n == 0:
		v.bad("source.client_id", "required: a unique id of this bridge, 1 to %d characters (the host name is a good choice)", iotauth.MaxClientIDLen)
	case n > iotauth.MaxClientIDLen:
		v.bad("source.client_id", "is %d characters long: the platform allows 1 to %d", n, iotauth.MaxClientIDLen)
	case s.Connections > 1 && n+len(fmt.Sprintf("-%d", s.Connections)) > iotauth.MaxClientIDLen:
		v.bad("source.client_id", "is %d characters long: with %d connections each gets a suffix like \"-%d\", which must fit in %d characters", n, s.Connections, s.Connections, iotauth.MaxClientIDLen)
	}
	v.noSeparators("source.client_id", s.ClientID, false)
	if s.ConsumerGroupID == "" {
		v.bad("source.consumer_group_id", "required (the platform's default group is DEFAULT_GROUP)")
	}
	v.noSeparators("source.consumer_group_id", s.ConsumerGroupID, false)
	v.noSeparators("source.iot_instance_id", s.IotInstanceID, false)
	if _, err := iotauth.NormalizeSignMethod(s.SignMethod); err != nil {
		v.bad("source.sign_method", "%v", err)
	}
	v.between("source.connections", s.Connections, 1, MaxConnections)
	v.credentials("source.credentials", s.Credentials)
	v.caFile("source.tls.ca_file", s.TLS.CAFile)

	v.oneOf("source.stomp.ack", s.STOMP.Ack, "auto", "client-individual")
	if s.STOMP.Destination == "" {
		v.bad("source.stomp.destination", "required (the platform's is /topic/#)")
	}
	v.nonNegative("source.stomp.heartbeat", s.STOMP.HeartBeat)
	v.positive("source.stomp.check_interval", s.STOMP.CheckInterval)

	v.atLeast("source.amqp.credit", s.AMQP.Credit, 1)
	if d := s.AMQP.IdleTimeout; d < MinIdleTimeout || d > MaxIdleTimeout {
		v.bad("source.amqp.idle_timeout", "must be 60s to 600s, got %s: go-amqp advertises half of it and the platform accepts 30s to 300s", d)
	}
	v.positive("source.dial_timeout", s.DialTimeout)
	v.positive("source.reconnect_min_backoff", s.ReconnectMinBackoff)
	if s.ReconnectMaxBackoff < s.ReconnectMinBackoff {
		v.bad("source.reconnect_max_backoff", "%s is less than reconnect_min_backoff %s", s.ReconnectMaxBackoff, s.ReconnectMinBackoff)
	}
}

// credentials checks an AccessKey pair and reads its secret files.
func (v *validator) credentials(path string, cr Credentials) {
	if cr.AccessKeyID == "" {
		v.bad(path+".access_key_id", "required")
	}
	v.noSeparators(path+".access_key_id", cr.AccessKeyID, false)
	checkFile := true
	if cr.AccessKeySecret != "" && cr.AccessKeySecretFile != "" {
		v.bad(path, "access_key_secret and access_key_secret_file are both set: use one")
		checkFile = false
	}
	if cr.AccessKeySecret == "" && cr.AccessKeySecretFile == "" {
		v.bad(path+".access_key_secret", "required (or access_key_secret_file)")
	}
	if cr.SecurityToken != "" && cr.SecurityTokenFile != "" {
		v.bad(path, "security_token and security_token_file are both set: use one")
		checkFile = false
	}
	if !checkFile {
		return
	}
	_, token, err := v.c.meta.secrets(path, cr)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			v.bad(fe.Path, "%s", fe.Reason)
		} else {
			v.bad(path, "%v", err)
		}
		return
	}
	v.noSeparators(path+".security_token", token, true)
}

func (v *validator) caFile(path, name string) {
	if name == "" {
		return
	}
	if _, err := os.Stat(name); err != nil {
		v.bad(path, "%v", err)
	}
}

// Address returns the endpoint as host:port, adding the protocol's default
// port (61614 for stomp, 5671 for amqp) when it has none.
func (s *Source) Address() (string, error) {
	e := s.Endpoint
	if e == "" {
		return "", errors.New("required: the host of the subscription endpoint, like iot-06z00xxxx.amqp.iothub.aliyuncs.com")
	}
	if scheme, _, ok := strings.Cut(e, "://"); ok {
		return "", fmt.Errorf("%q is a URL: write host or host:port, drop the %s:// prefix", e, scheme)
	}
	if strings.ContainsAny(e, "/?# \t") {
		return "", fmt.Errorf("%q must be host or host:port, with no path or spaces", e)
	}
	host, port := e, ""
	if strings.Contains(e, ":") {
		var err error
		if host, port, err = net.SplitHostPort(e); err != nil {
			return "", fmt.Errorf("%q is not host or host:port: %v", e, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q has port %q: use 1 to 65535", e, port)
		}
	}
	if host == "" {
		return "", fmt.Errorf("%q has no host", e)
	}
	if port == "" {
		port = DefaultSTOMPPort
		if s.Protocol == "amqp" {
			port = DefaultAMQPPort
		}
	}
	return net.JoinHostPort(host, port), nil
}

func (v *validator) mns() {
	m := &v.c.MNS
	if err := checkMNSEndpoint(m.Endpoint); err != nil {
		v.bad("mns.endpoint", "%v", err)
	}
	// Credentials copied from the source were checked there.
	if cr := v.c.mnsCredentials(); cr != v.c.Source.Credentials {
		v.credentials("mns.credentials", cr)
	}
	v.oneOf("mns.body_encoding", m.BodyEncoding, "base64", "raw")
	v.positive("mns.request_timeout", m.RequestTimeout)
	v.oneOf("mns.signature_version", m.SignatureVersion, "v2", "v4")
	if m.Region != "" && !validRegion(m.Region) {
		v.bad("mns.region", "%q is not a region id like cn-hangzhou: lower-case letters, digits and '-'", m.Region)
	}
	for _, n := range append([]string{bridge.PropTopic}, m.Properties.PlatformProperties...) {
		if err := bridge.CheckPropertyName(m.Properties.Prefix + n); err != nil {
			field := "mns.properties.platform_properties"
			if n == bridge.PropTopic {
				field = "mns.properties.prefix"
			}
			v.bad(field, "%v", err)
		}
	}
	if m.SignatureVersion == "v4" && m.Region == "" && checkMNSEndpoint(m.Endpoint) == nil {
		if _, ok := mns.RegionFromEndpoint(m.Endpoint); !ok {
			v.bad("mns.region", "required with signature_version v4: it cannot be derived from mns.endpoint %q (only from the documented form https://ACCOUNT_ID.mns.REGION.aliyuncs.com); set it, e.g. cn-hangzhou", m.Endpoint)
		}
	}
}

// validRegion reports whether s looks like a region id (cn-hangzhou,
// eu-west-1, ...).
func validRegion(s string) bool {
	if len(s) > 64 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func checkMNSEndpoint(e string) error {
	const form = "http(s)://ACCOUNT_ID.mns.REGION.aliyuncs.com"
	if e == "" {
		return fmt.Errorf("required: %s", form)
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q must be http(s)://host[:port], like %s", e, form)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must have no path or query: drop everything after the host", e)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q has port %q: use 1 to 65535", e, p)
		}
	}
	return nil
}

func (v *validator) routes() {
	for i, r := range v.c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		names, err := patternNames(r.Match)
		if err != nil {
			v.bad(p+".match", "%v", err)
		}
		v.target(p, r.Match, names, err == nil, r.Queue, r.Topic, r.MessageTag)
		if r.Queue == "" && r.Topic == "" {
			v.bad(p, "set queue or topic")
		}
	}
	d := v.c.DefaultRoute
	if len(v.c.Routes) == 0 && d.Queue == "" && d.Topic == "" && !d.DeadLetter && d.MessageTag == "" && d.MessageGroupID == "" && len(d.Properties) == 0 {
		v.bad("routes", "none set and no default_route: add a route, or a default_route with a queue or topic")
	}
	set := 0
	for _, s := range []bool{d.Queue != "", d.Topic != "", d.DeadLetter} {
		if s {
			set++
		}
	}
	if set > 1 {
		v.bad("default_route", "set only one of queue, topic and dead_letter: true")
	}
	v.target("default_route", "", nil, true, d.Queue, d.Topic, d.MessageTag)
}

// target checks a route's destination and tag. match is the route's
// pattern with its segment names ("" for the default route); known is false
// when the pattern was invalid, so its names are unknown.
func (v *validator) target(path, match string, names []string, known bool, queue, topic, tag string) {
	if queue != "" && topic != "" {
		v.bad(path, "set queue or topic, not both")
	}
	if queue != "" {
		v.template(path+".queue", "queue", match, names, known, queue)
	}
	if topic != "" {
		v.template(path+".topic", "topic", match, names, known, topic)
	}
	if tag == "" {
		return
	}
	if topic == "" {
		v.bad(path+".message_tag", "applies to topics only: set topic, or drop message_tag")
	}
	lits, used, err := parseTemplate(tag)
	if err != nil {
		v.bad(path+".message_tag", "%q %v", tag, err)
		return
	}
	v.placeholders(path+".message_tag", match, names, known, used)
	if strings.IndexFunc(tag, unicode.IsControl) >= 0 {
		v.bad(path+".message_tag", "must not contain control characters")
	}
	if n := utf8.RuneCountInString(strings.Join(lits, "")) + len(used); n > MaxMessageTagLen {
		v.bad(path+".message_tag", "%q is %s: MNS message tags are at most %d", tag, lengthText(lits, used), MaxMessageTagLen)
	}
}

// template checks a queue or topic name template: its placeholders must be
// segment names of the match, its literal text a valid piece of an MNS name.
func (v *validator) template(path, kind, match string, names []string, known bool, tmpl string) {
	lits, used, err := parseTemplate(tmpl)
	if err != nil {
		v.bad(path, "%q %v", tmpl, err)
		return
	}
	v.placeholders(path, match, names, known, used)
	for _, l := range lits {
		if strings.IndexFunc(l, func(r rune) bool { return !isNameChar(r) }) >= 0 {
			v.bad(path, "%q is not a valid MNS %s name: letters, digits and '-' only", tmpl, kind)
			return
		}
	}
	if tmpl[0] == '-' {
		v.bad(path, "%q is not a valid MNS %s name: it must start with a letter or digit", tmpl, kind)
	}
	if n := len(strings.Join(lits, "")) + len(used); n > MaxMNSNameLen {
		v.bad(path, "%q is not a valid MNS %s name: it is %s, the limit is %d", tmpl, kind, lengthText(lits, used), MaxMNSNameLen)
	}
}

// lengthText describes the length of a template: "22 characters long", or
// "21 characters long before its placeholders are filled in".
func lengthText(lits, used []string) string {
	n := utf8.RuneCountInString(strings.Join(lits, ""))
	if len(used) == 0 {
		return fmt.Sprintf("%d characters long", n)
	}
	return fmt.Sprintf("%d characters long before its placeholders are filled in", n)
}

func (v *validator) placeholders(path, match string, names []string, known bool, used []string) {
	for _, u := range used {
		switch {
		case match == "":
			v.bad(path, "template uses {%s} but the default route has no pattern: use a fixed name", u)
		case known && !slices.Contains(names, u):
			v.bad(path, "template uses {%s} but match %q has no such segment", u, match)
		}
	}
}

func isNameChar(r rune) bool {
	return r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

// validMNSName reports whether s is a valid MNS queue or topic name.
func validMNSName(s string) bool {
	return len(s) >= 1 && len(s) <= MaxMNSNameLen && s[0] != '-' &&
		strings.IndexFunc(s, func(r rune) bool { return !isNameChar(r) }) < 0
}

// patternNames checks a route pattern and returns its {name} segments in
// order. Segments are literal text, "+" (one segment), "#" (the rest; last
// only) or "{name}" (one segment, named for templates). This is only what
// validation needs; the bridge's router does the matching.
func patternNames(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("required: a topic pattern like /{productKey}/{deviceName}/user/#")
	}
	if p[0] != '/' {
		return nil, fmt.Errorf("%q must start with '/'", p)
	}
	segs := strings.Split(p[1:], "/")
	var names []string
	for i, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("%q has an empty segment (a doubled or trailing '/')", p)
		case s == "#":
			if i != len(segs)-1 {
				return nil, fmt.Errorf("%q has '#' before the last segment: '#' matches the rest of the topic, so it must come last", p)
			}
		case s == "+":
		case s[0] == '{' && s[len(s)-1] == '}':
			name := s[1 : len(s)-1]
			if !validPlaceholder(name) {
				return nil, fmt.Errorf("%q: segment %q is not a name: use letters, digits and '_' inside {}, not starting with a digit", p, s)
			}
			if slices.Contains(names, name) {
				return nil, fmt.Errorf("%q names two segments {%s}: use distinct names", p, name)
			}
			names = append(names, name)
			if len(names) > MaxNamedSegments {
				return nil, fmt.Errorf("%q has more than %d named segments", p, MaxNamedSegments)
			}
		case strings.ContainsAny(s, "+#{}"):
			return nil, fmt.Errorf("%q: segment %q mixes text with a wildcard: a segment is literal text, +, # or {name}", p, s)
		}
	}
	return names, nil
}

// parseTemplate splits "telemetry-{productKey}" into its literal parts
// ("telemetry-", "") and the placeholder names it uses ("productKey").
// The returned error reads after the quoted template.
func parseTemplate(t string) (lits, names []string, err error) {
	rest := t
	for {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			return append(lits, rest), names, nil
		}
		if rest[i] == '}' {
			return nil, nil, errors.New("has a '}' without its '{'")
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return nil, nil, errors.New("has a '{' without its '}'")
		}
		name := rest[i+1 : i+end]
		if !validPlaceholder(name) {
			return nil, nil, fmt.Errorf("has {%s}, which is not a segment name: use letters, digits and '_' inside {}, not starting with a digit", name)
		}
		lits = append(lits, rest[:i])
		names = append(names, name)
		rest = rest[i+end+1:]
	}
}

// validPlaceholder reports whether s is a segment name: letters, digits
// and '_', not starting with a digit.
func validPlaceholder(s string) bool {
	return validVarName(s)
}

func (v *validator) delivery() {
	d := &v.c.Delivery
	v.between("delivery.batch_size", d.BatchSize, 1, MaxBatchSize)
	v.between("delivery.batch_bytes", d.BatchBytes, 1, MaxBatchBytes)
	v.nonNegative("delivery.linger", d.Linger)
	v.atLeast("delivery.max_in_flight", d.MaxInFlight, 1)
	if d.MaxInFlightBytes < MaxMessageBytes {
		v.bad("delivery.max_in_flight_bytes", "%d is less than the largest message MNS accepts (%d bytes, 64KiB): the pipeline could not hold one; use at least 64KiB (default 64MiB)",
			int64(d.MaxInFlightBytes), MaxMessageBytes)
	}
	v.atLeast("delivery.max_requests_per_destination", d.MaxRequestsPerDestination, 1)
	v.atLeast("delivery.max_requests", d.MaxRequests, 1)

	r := &d.Retry
	v.positive("delivery.retry.initial_backoff", r.InitialBackoff)
	if r.MaxBackoff < r.InitialBackoff {
		v.bad("delivery.retry.max_backoff", "%s is less than initial_backoff %s", r.MaxBackoff, r.InitialBackoff)
	}
	v.atLeast("delivery.retry.max_attempts", r.MaxAttempts, 0)
	v.nonNegative("delivery.retry.max_age", r.MaxAge)

	v.atLeast("delivery.dedup.size", d.Dedup.Size, 0)
	if d.Dedup.Size > 0 {
		v.positive("delivery.dedup.max_age", d.Dedup.MaxAge)
	}

	dl := &d.DeadLetter
	if dl.File == "" && dl.Queue == "" {
		v.bad("delivery.dead_letter", "set file, queue or both: messages that cannot be delivered need somewhere to go")
	}
	if dl.Queue != "" && !validMNSName(dl.Queue) {
		v.bad("delivery.dead_letter.queue", "%q is not a valid MNS queue name: 1 to %d letters, digits and '-', starting with a letter or digit", dl.Queue, MaxMNSNameLen)
	}
}

func (v *validator) rest() {
	c := v.c
	if c.Spool.Dir != "" && c.Spool.MaxBytes <= 0 {
		v.bad("spool.max_bytes", "must be more than 0 when spool.dir is set, got %d", int64(c.Spool.MaxBytes))
	}
	v.nonNegative("spool.commit_interval", c.Spool.CommitInterval)
	v.oneOf("envelope", c.Envelope, "raw", "json")
	if l := c.HTTP.Listen; l != "" {
		_, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			v.bad("http.listen", "%q must be host:port, like 127.0.0.1:9477 (empty disables the listener)", l)
		}
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.nonNegative("log.summary_interval", c.Log.SummaryInterval)
	v.positive("shutdown_timeout", c.ShutdownTimeout)
}
