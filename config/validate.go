package config

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// The limits of config values are their owners': the platform's and the
// sources' are package source's, values and checks (source.MaxConnections,
// source.CheckCredit, ...), MNS's are the MNS client's (mns.MaxBatchCount, mns.NameRules, ...).
// maxReadGather is the config's own: a longer pause would add more latency
// to every message than the read it saves is worth.
const maxReadGather = 50 * time.Millisecond

// minDeadLetterBytes is the config's own floor of
// delivery.dead_letter.max_bytes: below it a few large dead letters would
// fill the file.
const minDeadLetterBytes = MiB

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

// bad records a problem with the key at path, unless Parse already
// rejected its value (or a parent's): it would only repeat that problem.
func (v *validator) bad(path, format string, args ...any) {
	if v.c.failed(path) {
		return
	}
	v.errs = append(v.errs, &FieldError{File: v.c.Path, Line: v.c.line(path), Path: path, Reason: fmt.Sprintf(format, args...)})
}

// failed reports whether Parse rejected the value of a key at one of paths
// or of a parent of one: a check of such a key, or one that compares it with
// another key, would report a follow-on of that problem.
func (c *Config) failed(paths ...string) bool {
	if c.meta == nil || len(c.meta.failed) == 0 {
		return false
	}
	for _, path := range paths {
		for p := path; p != ""; {
			if c.meta.failed[p] {
				return true
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	return false
}

// failedUnder reports whether Parse rejected the value of a key under
// path: a check of path as a whole (a route's fields together) would report
// a follow-on of that problem.
func (c *Config) failedUnder(path string) bool {
	if c.meta == nil {
		return false
	}
	for p := range c.meta.failed {
		if strings.HasPrefix(p, path+".") || strings.HasPrefix(p, path+"[") {
			return true
		}
	}
	return false
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

// reason records a problem at path when a check (its owner's, e.g.
// source.CheckCredit) returned one; the check's text names no field.
func (v *validator) reason(path string, err error) {
	if err != nil {
		v.bad(path, "%v", err)
	}
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
// separators (the rule is iotauth's); a secret's value is not quoted.
func (v *validator) noSeparators(path, value string, secret bool) {
	c := iotauth.ForbiddenSeparator(value, secret)
	switch {
	case c == "":
	case secret:
		v.bad(path, "must not contain '|' or ',': the username uses them as separators")
	default:
		v.bad(path, "%q must not contain %q: the username uses '|', ',' and '=' as separators", value, c)
	}
}

func (v *validator) source() {
	s := &v.c.Source
	v.oneOf("source.protocol", s.Protocol, "stomp", "amqp")
	// A block of the other protocol that sets anything but the defaults is
	// a mistake (a copied config, a protocol switched half-way): its
	// settings would be ignored. (configs/example.yaml shows both blocks at
	// their defaults, which is harmless.)
	def := Default().Source
	for _, other := range []struct {
		name, protocol string
		changed        bool
	}{{"stomp", "amqp", s.STOMP != def.STOMP}, {"amqp", "stomp", s.AMQP != def.AMQP}} {
		if s.Protocol == other.protocol && other.changed && v.c.written("source."+other.name) && !v.c.failed("source.protocol") {
			v.bad("source."+other.name, "is set but source.protocol is %s, so it would be ignored: remove the block, or set protocol: %s", other.protocol, other.name)
		}
	}
	if addr, err := s.Address(); err != nil {
		v.bad("source.endpoint", "%v", err)
	} else if mns.IsEndpointHost(hostOf(addr)) {
		v.bad("source.endpoint", "%q is an MNS endpoint (it belongs in mns.endpoint, with https://): write the subscription endpoint "+
			"from the IoT platform console (instance details, AMQP endpoint), like iot-06z00xxxx.amqp.iothub.aliyuncs.com", s.Endpoint)
	} else if why := platformPort(s.Protocol, addr); why != "" && !v.c.failed("source.protocol") {
		v.bad("source.endpoint", "%s", why)
	}
	switch n := len([]rune(s.ClientID)); {
	case n == 0:
		v.bad("source.client_id", "required: a unique id of this bridge, 1 to %d characters (the host name is a good choice)", iotauth.MaxClientIDLen)
	case n > iotauth.MaxClientIDLen:
		v.bad("source.client_id", "is %d characters long: the platform allows 1 to %d", n, iotauth.MaxClientIDLen)
	case s.Connections > 1 && n+len(fmt.Sprintf("-%d", s.Connections)) > iotauth.MaxClientIDLen && !v.c.failed("source.connections"):
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
	v.reason("source.connections", source.CheckConnections(s.Connections))
	v.credentials("source.credentials", s.Credentials)
	v.caFile("source.tls.ca_file", s.TLS.CAFile)

	v.oneOf("source.stomp.ack", s.STOMP.Ack, "auto", "client-individual")
	if s.STOMP.Destination == "" {
		v.bad("source.stomp.destination", "required (the platform's is /topic/#)")
	}
	v.reason("source.stomp.heartbeat", source.CheckHeartBeat(s.STOMP.HeartBeat))
	v.positive("source.stomp.check_interval", s.STOMP.CheckInterval)
	if d := s.STOMP.ReadGather; d < 0 || d > maxReadGather {
		v.bad("source.stomp.read_gather", "must be 0 to %s, got %s: it adds up to its length to every message's latency", maxReadGather, d)
	}

	v.reason("source.amqp.credit", source.CheckCredit(s.AMQP.Credit))
	v.reason("source.amqp.idle_timeout", source.CheckIdleTimeout(s.AMQP.IdleTimeout))
	v.positive("source.dial_timeout", s.DialTimeout)
	v.positive("source.reconnect_min_backoff", s.ReconnectMinBackoff)
	if s.ReconnectMaxBackoff < s.ReconnectMinBackoff && !v.c.failed("source.reconnect_min_backoff") {
		v.bad("source.reconnect_max_backoff", "%s is less than reconnect_min_backoff %s", s.ReconnectMaxBackoff, s.ReconnectMinBackoff)
	}
	v.reason("source.connect_attempts_per_minute", source.CheckAttemptsPerMinute(s.ConnectAttemptsPerMinute))
}

// credentials checks the provider choice and, for static keys, the
// AccessKey pair, reading its files.
func (v *validator) credentials(path string, cr Credentials) {
	if v.c.failed(path + ".provider") {
		return // the checks depend on the provider
	}
	if name, ok := v.credentialsProvider(path, cr); !ok || name != "static" {
		return
	}
	v.checkIDFile(path, cr)
	if cr.AccessKeyID == "" && cr.AccessKeyIDFile == "" && !v.c.failed(path+".access_key_id_file") {
		v.bad(path+".access_key_id", "required (or access_key_id_file)")
	}
	v.noSeparators(path+".access_key_id", cr.AccessKeyID, false)
	checkFile := true
	if cr.AccessKeySecret != "" && cr.AccessKeySecretFile != "" {
		v.bad(path, "access_key_secret and access_key_secret_file are both set: use one")
		checkFile = false
	}
	if cr.AccessKeySecret == "" && cr.AccessKeySecretFile == "" && !v.c.failed(path+".access_key_secret_file") {
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
	if err := credentials.CheckToken(cr.AccessKeyID, token); err != nil {
		v.bad(path+".security_token", "%v; set security_token (or security_token_file), or credentials_file for a triple that rotates", err)
	}
}

func (v *validator) caFile(path, name string) {
	if name == "" {
		return
	}
	if err := checkCAFile(name); err != nil {
		v.bad(path, "%v", err)
	}
}

// checkCAFile reports a CA bundle that cannot work: missing, a directory,
// empty, or without a PEM certificate that parses. It is checked here, not
// at the first dial, so that "check" finds it and "run" exits 2 instead of
// retrying a connection that cannot succeed.
func checkCAFile(name string) error {
	st, err := os.Stat(name)
	switch {
	case err != nil:
		return fmt.Errorf("%v: the CA bundle must be a readable PEM file", err)
	case st.IsDir():
		return fmt.Errorf("%s is a directory: name the PEM file of the CA bundle", name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("%v: the CA bundle must be readable by the bridge's user", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("%s is empty: it must hold the CA certificate(s) in PEM (-----BEGIN CERTIFICATE-----)", name)
	}
	certs := 0
	var others []string // the types of the other PEM blocks
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if !slices.Contains(others, b.Type) {
				others = append(others, b.Type)
			}
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("%s: a CERTIFICATE block does not parse: %v", name, err)
		}
		certs++
	}
	switch {
	case certs > 0:
		return nil
	case len(others) > 0:
		return fmt.Errorf("%s holds PEM blocks (%s) but no certificate (-----BEGIN CERTIFICATE-----): name the file of the CA's certificate",
			name, strings.Join(others, ", "))
	}
	if _, err := x509.ParseCertificate(data); err == nil {
		return fmt.Errorf("%s holds a certificate in DER, not PEM: convert it (openssl x509 -inform der -in %s -out ca.pem) and name the PEM file", name, name)
	}
	return fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----): is it the CA bundle?", name)
}

// Address returns the endpoint as host:port, adding the protocol's default
// port (source.STOMPPort, source.AMQPPort: 61614 for stomp, 5671 for amqp)
// when it has none.
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
		port = source.STOMPPort
		if s.Protocol == "amqp" {
			port = source.AMQPPort
		}
	}
	return net.JoinHostPort(host, port), nil
}

// platformPort says why addr (host:port), on one of the platform's hosts,
// cannot serve protocol, "" when it can. The platform serves STOMP on 61614
// and AMQP 1.0 on 5671 of the same host with the same certificate, so on
// any *.aliyuncs.com host the other protocol's port passes TLS and the
// server hangs up on a login it cannot read, attempt after attempt. On a
// subscription host (isPlatformHost) any other port is refused too: the
// platform serves the subscription over TLS only, so AMQP's plain 5672, or
// an MQTT port copied from the device endpoint, never answers. Other hosts
// (a tunnel, a proxy, a load balancer, the simulator) number their own
// ports.
func platformPort(protocol, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || !strings.HasSuffix(canonicalHost(host), ".aliyuncs.com") {
		return ""
	}
	own, other, otherPort := source.STOMPPort, "amqp", source.AMQPPort
	if protocol == "amqp" {
		own, other, otherPort = source.AMQPPort, "stomp", source.STOMPPort
	}
	switch {
	case port == otherPort:
		return fmt.Sprintf("%q has port %s, where the platform serves %s, but source.protocol is %s (served on %s): "+
			"write the port %s, or leave the port out (it then defaults to the protocol's), or set source.protocol: %s",
			addr, port, other, protocol, own, own, other)
	case port != own && isPlatformHost(host):
		plain := ""
		if port == "5672" {
			plain = " (5672 is AMQP without TLS)"
		}
		return fmt.Sprintf("%q has port %s, which the platform does not serve: it serves the subscription over TLS only, "+
			"AMQP 1.0 on %s and STOMP on %s%s: write the port %s, or leave the port out (it then defaults to the protocol's)",
			addr, port, source.AMQPPort, source.STOMPPort, plain, own)
	}
	return ""
}

// canonicalHost is host as the platform's host rules compare it: in lower
// case (DNS names are), without the trailing dot of a fully qualified name.
func canonicalHost(host string) string {
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// hostOf returns the host of host:port.
func hostOf(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return host
}

// isPlatformHost reports whether host is one of the IoT platform's
// subscription hosts: iot-06z00xxxx.amqp.iothub.aliyuncs.com (an
// instance's), UID.iot-amqp.REGION.aliyuncs.com (a public instance opened
// before 2021-07-30).
func isPlatformHost(host string) bool {
	host = canonicalHost(host)
	if !strings.HasSuffix(host, ".aliyuncs.com") {
		return false
	}
	for _, l := range strings.Split(host, ".") {
		if l == "iothub" || l == "iot-amqp" {
			return true
		}
	}
	return false
}

func (v *validator) mns() {
	m := &v.c.MNS
	if err := checkMNSEndpoint(m.Endpoint); err != nil {
		v.bad("mns.endpoint", "%v", err)
	} else if u, _ := url.Parse(m.Endpoint); isPlatformHost(u.Hostname()) {
		v.bad("mns.endpoint", "%q is the IoT platform's subscription endpoint (it belongs in source.endpoint, without a scheme): "+
			"write the MNS endpoint from the MNS console (queue details, endpoint), like https://ACCOUNT_ID.mns.REGION.aliyuncs.com", m.Endpoint)
	} else if p, want := u.Port(), map[string]string{"http": "80", "https": "443"}[u.Scheme]; p != "" && p != want && mns.IsEndpointHost(u.Hostname()) {
		v.bad("mns.endpoint", "%q has port %s: MNS serves http on 80 and https on 443; leave the port out", m.Endpoint, p)
	}
	// Credentials copied from the source were checked there.
	if cr := v.c.mnsCredentials(); cr != v.c.Source.Credentials {
		v.credentials("mns.credentials", cr)
	}
	v.oneOf("mns.body_encoding", m.BodyEncoding, "base64", "raw")
	v.positive("mns.request_timeout", m.RequestTimeout)
	v.oneOf("mns.signature_version", m.SignatureVersion, "v2", "v4")
	if m.Region != "" && !mns.ValidRegion(m.Region) {
		v.bad("mns.region", "%q is not a region id like cn-hangzhou: lower-case letters, digits and '-'", m.Region)
	}
	for _, n := range append([]string{bridge.PropTopic}, m.Properties.PlatformProperties...) {
		if err := mns.ValidPropertyName(m.Properties.Prefix + n); err != nil {
			field := "mns.properties.platform_properties"
			if n == bridge.PropTopic {
				field = "mns.properties.prefix"
			} else if n == "" && v.c.failedUnder(field) {
				continue // an item that did not decode, reported
			}
			v.bad(field, "%v", err)
		}
	}
	if m.SignatureVersion == "v4" && m.Region == "" && checkMNSEndpoint(m.Endpoint) == nil {
		if _, ok := mns.RegionFromEndpoint(m.Endpoint); !ok {
			v.bad("mns.region", "required with signature_version v4: it cannot be derived from mns.endpoint %q (only from the documented form https://ACCOUNT_ID.mns.REGION.aliyuncs.com); set it, e.g. cn-hangzhou", m.Endpoint)
		}
	}
	// V4 signs for mns.region: MNS refuses every request signed for a
	// region other than the endpoint's, so a region that contradicts the
	// endpoint (one of the two copied from another region) can never work.
	if m.SignatureVersion == "v4" && m.Region != "" && mns.ValidRegion(m.Region) {
		if r, ok := mns.RegionFromEndpoint(m.Endpoint); ok && r != m.Region {
			v.bad("mns.region", "%q, but mns.endpoint %q is in region %s: signature_version v4 signs for mns.region and MNS refuses a signature for another region; "+
				"remove mns.region (it is then %s, from the endpoint), or use the endpoint of %s (https://ACCOUNT_ID.mns.%s.aliyuncs.com)", m.Region, m.Endpoint, r, r, m.Region, m.Region)
		}
	}
}

// checkMNSEndpoint is the MNS client's own check of the endpoint.
func checkMNSEndpoint(e string) error {
	_, err := mns.ParseEndpoint(e)
	return err
}

// routes compiles the routes with the bridge's router, the one parser of
// the route grammar, and reports its problems at their config paths.
func (v *validator) routes() {
	d := v.c.DefaultRoute
	if len(v.c.Routes) == 0 && d.Queue == "" && d.Topic == "" && !d.DeadLetter && d.MessageTag == "" && d.MessageGroupID == "" && len(d.Properties) == 0 {
		v.bad("routes", "none set and no default_route: add a route, or a default_route with a queue or topic")
	}
	if _, err := v.c.Router(); err != nil {
		v.routeErrors(err)
	}
	if v.c.written("default_route") && d.Queue == "" && d.Topic == "" && !d.DeadLetter && !v.c.failedUnder("default_route") {
		v.bad("default_route", "is empty: set queue, topic or dead_letter: true, or remove default_route (messages no route matches are then dead-lettered)")
	}
}

// written reports whether the file set the key at path.
func (c *Config) written(path string) bool {
	if c.meta == nil {
		return false
	}
	_, ok := c.meta.lines[path]
	return ok
}

// routeErrors reports each *bridge.RouteError in err (a join of them) at
// its path; anything else at "routes".
func (v *validator) routeErrors(err error) {
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			v.routeErrors(e)
		}
		return
	}
	var re *bridge.RouteError
	if errors.As(err, &re) {
		if v.c.failedUnder(re.Path) {
			return // a check of the route's keys together
		}
		v.bad(re.Path, "%v", re.Err)
		return
	}
	v.bad("routes", "%v", err)
}

// Router compiles the routes and the default route, with the MNS naming
// rules; the error joins a *bridge.RouteError for each problem.
func (c *Config) Router() (*bridge.Router, error) {
	specs := make([]bridge.RouteSpec, len(c.Routes))
	for i, r := range c.Routes {
		specs[i] = bridge.RouteSpec{Match: r.Match, Queue: r.Queue, Topic: r.Topic, MessageTag: r.MessageTag,
			MessageGroupID: r.MessageGroupID, Properties: routeProperties(r.Properties)}
	}
	d := c.DefaultRoute
	def := bridge.DefaultRouteSpec{Queue: d.Queue, Topic: d.Topic, MessageTag: d.MessageTag, DeadLetter: d.DeadLetter,
		MessageGroupID: d.MessageGroupID, Properties: routeProperties(d.Properties)}
	return bridge.NewRouter(specs, def, mns.NameRules)
}

// routeProperties turns a route's properties map into a list sorted by
// name, so that every message carries them in one order.
func routeProperties(m map[string]string) []bridge.RouteProperty {
	if len(m) == 0 {
		return nil
	}
	out := make([]bridge.RouteProperty, 0, len(m))
	for k, v := range m {
		out = append(out, bridge.RouteProperty{Name: k, Value: v})
	}
	slices.SortFunc(out, func(a, b bridge.RouteProperty) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (v *validator) delivery() {
	d := &v.c.Delivery
	v.between("delivery.batch_size", d.BatchSize, 1, mns.MaxBatchCount)
	v.between("delivery.batch_bytes", d.BatchBytes, 1, mns.MaxBatchBytes)
	v.nonNegative("delivery.linger", d.Linger)
	v.atLeast("delivery.max_in_flight", d.MaxInFlight, 1)
	if d.MaxInFlightBytes < mns.MaxBodySize {
		v.bad("delivery.max_in_flight_bytes", "%d is less than the largest message MNS accepts (%d bytes, %s): the pipeline could not hold one; use at least %[3]s (default %s)",
			int64(d.MaxInFlightBytes), mns.MaxBodySize, Size(mns.MaxBodySize), Default().Delivery.MaxInFlightBytes)
	}
	v.atLeast("delivery.max_requests_per_destination", d.MaxRequestsPerDestination, 1)
	v.atLeast("delivery.max_requests", d.MaxRequests, 1)

	r := &d.Retry
	v.positive("delivery.retry.initial_backoff", r.InitialBackoff)
	if r.MaxBackoff < r.InitialBackoff && !v.c.failed("delivery.retry.initial_backoff") {
		v.bad("delivery.retry.max_backoff", "%s is less than initial_backoff %s", r.MaxBackoff, r.InitialBackoff)
	}
	v.atLeast("delivery.retry.max_attempts", r.MaxAttempts, 0)
	v.nonNegative("delivery.retry.max_age", r.MaxAge)

	v.reason("delivery.dedup.size", bridge.CheckDedupSize(d.Dedup.Size))
	if d.Dedup.Size > 0 && !v.c.failed("delivery.dedup.size") {
		v.positive("delivery.dedup.max_age", d.Dedup.MaxAge)
	}

	dl := &d.DeadLetter
	if dl.File == "" && dl.Queue == "" && !v.c.failedUnder("delivery.dead_letter") {
		v.bad("delivery.dead_letter", "set file, queue or both: messages that cannot be delivered need somewhere to go")
	}
	if dl.File != "" && dl.MaxBytes < minDeadLetterBytes {
		v.bad("delivery.dead_letter.max_bytes", "%d is less than %s: a few large dead letters would fill it; use at least %[2]s (default %s)",
			int64(dl.MaxBytes), minDeadLetterBytes, Default().Delivery.DeadLetter.MaxBytes)
	}
	if dl.File == "" && dl.Queue != "" && v.c.Spool.Dir == "" && v.c.Source.SpoolByDefault() &&
		!v.c.failed("spool.dir", "source.protocol", "source.stomp.ack") {
		// At shutdown the messages MNS has not accepted yet must go
		// somewhere that does not need MNS: the platform will not send them
		// again (ack auto).
		v.bad("delivery.dead_letter.file", "is empty while source.stomp.ack is auto and spool.dir is empty: the messages MNS has not taken at shutdown would have nowhere to go; set delivery.dead_letter.file or spool.dir (or use ack client-individual)")
	}
	if dl.Queue != "" {
		for i, r := range v.c.Routes {
			if r.Queue == dl.Queue {
				v.bad("delivery.dead_letter.queue", "%q is also the queue of routes[%d]: dead letters would mix with the messages; use a queue of its own", dl.Queue, i)
			}
		}
		if v.c.DefaultRoute.Queue == dl.Queue {
			v.bad("delivery.dead_letter.queue", "%q is also the queue of default_route: dead letters would mix with the messages; use a queue of its own", dl.Queue)
		}
		if err := mns.ValidName(dl.Queue); err != nil {
			v.bad("delivery.dead_letter.queue", "%q is not a valid MNS queue name: %v", dl.Queue, err)
		}
	}
}

// http checks the http section: the listener and the web config file.
func (v *validator) http() {
	v.httpListen()
	v.webConfigFile()
}

// webConfigFile checks that http.web_config_file, when set, is a file
// (its contents are read by the HTTP server at start).
func (v *validator) webConfigFile() {
	name := v.c.HTTP.WebConfigFile
	if name == "" {
		return
	}
	st, err := os.Stat(name)
	switch {
	case err != nil:
		v.bad("http.web_config_file", "%v: it must be a readable web config file (TLS and basic auth, Prometheus exporter-toolkit format)", err)
	case st.IsDir():
		v.bad("http.web_config_file", "%s is a directory: name the web config file", name)
	}
}

// httpListen checks http.listen: host:port, or empty.
func (v *validator) httpListen() {
	if l := v.c.HTTP.Listen; l != "" {
		_, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			v.bad("http.listen", "%q must be host:port, like 127.0.0.1:9477 (empty disables the listener)", l)
		}
	}
}

func (v *validator) rest() {
	c := v.c
	if c.Spool.Dir != "" && c.Spool.MaxBytes <= 0 {
		v.bad("spool.max_bytes", "must be more than 0 when spool.dir is set, got %d", int64(c.Spool.MaxBytes))
	}
	v.nonNegative("spool.commit_interval", c.Spool.CommitInterval)
	v.oneOf("envelope", c.Envelope, "raw", "json")
	v.http()
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.nonNegative("log.summary_interval", c.Log.SummaryInterval)
	if c.Runtime.MaxProcs < 0 {
		v.bad("runtime.max_procs", "must not be negative, got %d (0: automatic)", c.Runtime.MaxProcs)
	}
	v.positive("shutdown_timeout", c.ShutdownTimeout)
}
