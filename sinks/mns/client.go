package mns

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certclock"
)

// MNS limits the client enforces before sending.
const (
	// MaxBodySize is the most bytes of MessageBody text (after the body
	// encoding) in one message.
	MaxBodySize = 65536
	// MaxBatchCount is the most messages in one BatchSendMessage request.
	MaxBatchCount = 16
	// MaxBatchBytes is the most MessageBody bytes in one batch request.
	MaxBatchBytes = 65536
	// MaxTagLen is the most characters in a MessageTag.
	MaxTagLen = 16
)

// writeBufferSize is the write buffer of an MNS connection: a typical batch
// request (16 messages of a few hundred bytes, in base64, with its headers)
// fits, so it goes out in one socket write. With net/http's 4 KB default
// the headers and the first 4 KB went in one write and the rest of the body
// in another, and each write to a peer that waits for it costs a wake-up.
const writeBufferSize = 16 << 10

const (
	contentType  = "text/xml;charset=UTF-8"
	canonVersion = "x-mns-version:" + APIVersion + "\n"
	// canonUserRequestID starts the x-mns-user-request-id line, which sorts
	// before x-mns-version.
	canonUserRequestID = "x-mns-user-request-id:"
	maxReplySize       = 4 << 20
)

// Config configures a Client. It is taken as given: Endpoint, either the
// static AccessKey pair or Credentials, BodyEncoding, Timeout, MaxConns and
// SignatureVersion are required (the client has no defaults of its own for
// them; the wiring passes the config's, which owns the defaults).
type Config struct {
	// Endpoint is "https://<account-id>.mns.<region>.aliyuncs.com" (or the
	// -internal, -internal-vpc forms, or any http(s)://host[:port] such as
	// an emulator). It has no path.
	Endpoint string
	// AccessKeyID, AccessKeySecret and the optional STS SecurityToken sign
	// every request.
	AccessKeyID, AccessKeySecret, SecurityToken string
	// Credentials, when set, is called before every request and wins over
	// the static fields, so rotated secrets and STS tokens take effect at
	// once. It must be safe for concurrent use and fast. When it fails the
	// request is not sent and the error (retryable) is returned.
	Credentials func(ctx context.Context) (id, secret, token string, err error)
	// Refused, when set, is called with the AccessKeyId a request was
	// signed with when MNS refused that key or its security token (403
	// InvalidAccessKeyId, or a code naming the SecurityToken): the caller's
	// credentials cache may fetch a new triple before its planned refresh
	// (credentials.Cache.Refused). It must be safe for concurrent use.
	Refused func(id string)
	// BodyEncoding is "base64" (binary-safe, what the SDKs read by
	// default) or "raw" (the bytes as XML text; only for UTF-8 text that XML
	// 1.0 can carry).
	BodyEncoding string
	// Timeout bounds each request, from sending to the last byte of the
	// reply. It must be positive.
	Timeout time.Duration
	// MaxConns is the size of the connection pool: the most concurrent
	// requests, and the idle connections kept alive. At least 1.
	MaxConns int
	// HTTPClient replaces the client's own (for tests); its Timeout should
	// be 0, the per-request Timeout applies anyway.
	HTTPClient *http.Client
	// Proxy picks the HTTP proxy for the endpoint, as http.Transport.Proxy;
	// default http.ProxyFromEnvironment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// Now is the clock for the Date header; default time.Now.
	Now func() time.Time
	// SignatureVersion is "v2" (HMAC-SHA1, what every SDK sends by default)
	// or "v4" (MNS4-HMAC-SHA256, opt-in in the Java SDK 2.0).
	SignatureVersion string
	// Region is the region V4 signs for; "" derives it from Endpoint (see
	// RegionFromEndpoint). Unused by V2.
	Region string
	// Version is the bridge's version, sent in the User-Agent
	// "iot-mns-bridge/<version> (<go version>; <os>/<arch>)"; default "dev".
	Version string
	// Names is what the operator calls the Fields, for the errors and hints
	// of the client (see Names); nil names them "Config.<Field>".
	Names Names
}

// Client is an MNS HTTP API client. It is safe for concurrent use. It does
// not retry: callers decide with bridge.Retryable (see Error.Retryable).
// Every method blocks until the reply, the per-request timeout or ctx; on
// ctx cancel it returns an error wrapping ctx's error.
type Client struct {
	base    string // scheme://host[:port]
	names   Names
	raw     bool
	timeout time.Duration
	hc      *http.Client // with a proxy or Config.HTTPClient
	proxy   string       // the proxy the requests go through (password redacted), "" for none
	probe   proxyProbe   // whether the proxy wants credentials (proxyRefusal)
	h1      *h1          // else: the exchange in the calling goroutine
	creds   func(ctx context.Context) (id, secret, token string, err error)
	refused func(id string)
	now     func() time.Time
	date    atomic.Pointer[dateEntry]
	ua      string
	// v4 signing: region, and the cached signing key.
	v4     bool
	region string
	v4key  v4KeyCache
	// user request ids: a random prefix per client and a counter.
	ridPrefix string
	ridSeq    atomic.Uint64
}

type dateEntry struct {
	sec   int64
	s, v4 string
}

// SendResult is what MNS returned for one accepted message.
type SendResult struct {
	// MessageID is the MNS message id.
	MessageID string
	// BodyMD5 is the upper-case hex MD5 of the MessageBody text, already
	// checked against the body sent.
	BodyMD5 string
	// ReceiptHandle is set for delayed messages only.
	ReceiptHandle string
}

// NewClient checks cfg and returns a Client. Every problem is reported at
// once, each a *FieldError naming its Field as cfg.Names calls it (in the
// bridge, the config key).
func NewClient(cfg Config) (*Client, error) {
	n := cfg.Names
	problems := n.Problems()
	bad := problems.Bad
	base, err := ParseEndpoint(cfg.Endpoint)
	if err != nil {
		bad(FieldEndpoint, "%w", err)
	}
	c := &Client{base: base, names: n, timeout: cfg.Timeout, hc: cfg.HTTPClient, creds: cfg.Credentials, refused: cfg.Refused, now: cfg.Now}
	switch cfg.BodyEncoding {
	case "base64":
	case "raw":
		c.raw = true
	default:
		bad(FieldBodyEncoding, "%q is neither base64 nor raw", cfg.BodyEncoding)
	}
	if c.creds == nil {
		if cfg.AccessKeyID == "" {
			bad(FieldAccessKeyID, "empty; set the AccessKey id that may send to MNS")
		}
		if cfg.AccessKeySecret == "" {
			bad(FieldAccessKeySecret, "empty; set the AccessKey secret")
		}
		id, secret, token := cfg.AccessKeyID, cfg.AccessKeySecret, cfg.SecurityToken
		c.creds = func(context.Context) (string, string, string, error) { return id, secret, token, nil }
	}
	switch cfg.SignatureVersion {
	case "v2":
	case "v4":
		c.v4 = true
		c.region = cfg.Region
		if c.region == "" {
			r, ok := RegionFromEndpoint(cfg.Endpoint)
			if !ok && err == nil {
				bad(FieldRegion, "empty, and %s v4 cannot derive it from %s %q (only from the documented form https://ACCOUNT_ID.mns.REGION.aliyuncs.com); set %s, e.g. cn-hangzhou",
					n.Of(FieldSignatureVersion), n.Of(FieldEndpoint), cfg.Endpoint, n.Of(FieldRegion))
			}
			c.region = r
		}
	default:
		bad(FieldSignatureVersion, "%q is neither v2 nor v4", cfg.SignatureVersion)
	}
	if cfg.Region != "" && !ValidRegion(cfg.Region) {
		bad(FieldRegion, "%q is not a region id like cn-hangzhou (lower-case letters, digits and '-')", cfg.Region)
	}
	switch {
	case cfg.Timeout < 0:
		bad(FieldTimeout, "%s is negative", cfg.Timeout)
	case cfg.Timeout == 0:
		bad(FieldTimeout, "must be positive, got %s", cfg.Timeout)
	}
	maxConns := cfg.MaxConns
	if maxConns < 1 {
		bad(FieldMaxConns, "must be at least 1, got %d", maxConns)
	}
	if err := problems.Err(); err != nil {
		return nil, err
	}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	if c.hc == nil {
		c.h1 = newH1(base, maxConns, proxy)
		if u, err := url.Parse(base); err == nil {
			if p, err := proxy(&http.Request{URL: u}); err == nil && p != nil {
				c.proxy = p.Redacted()
			}
		}
	}
	if c.hc == nil && c.h1 == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = proxy
		tr.OnProxyConnectResponse = connectAnswer
		tr.MaxIdleConns = maxConns
		tr.MaxIdleConnsPerHost = maxConns
		tr.MaxConnsPerHost = maxConns
		tr.DisableCompression = true
		tr.WriteBufferSize = writeBufferSize
		c.hc = &http.Client{Transport: tr}
	}
	if c.now == nil {
		c.now = time.Now
	}
	v := cfg.Version
	if v == "" {
		v = "dev"
	}
	c.ua = UserAgent(v)
	var p [10]byte
	rand.Read(p[:])
	c.ridPrefix = hex.EncodeToString(p[:])
	return c, nil
}

// UserAgent is the User-Agent the client sends for a bridge version.
func UserAgent(version string) string {
	return "iot-mns-bridge/" + version + " (" + runtime.Version() + "; " + runtime.GOOS + "/" + runtime.GOARCH + ")"
}

// newRequestID returns a fresh x-mns-user-request-id: 32 hex digits, a
// random per-client prefix and a counter, so ids are unique without a
// random read per request.
func (c *Client) newRequestID() string {
	var b [32]byte
	copy(b[:], c.ridPrefix)
	n := c.ridSeq.Add(1)
	const hexL = "0123456789abcdef"
	for i := 31; i >= 20; i-- {
		b[i] = hexL[n&15]
		n >>= 4
	}
	return string(b[:])
}

// dateHeader returns the Date header and the V4 date-time of one instant.
func (c *Client) dateHeader() (string, string) {
	now := c.now().UTC()
	sec := now.Unix()
	if e := c.date.Load(); e != nil && e.sec == sec {
		return e.s, e.v4
	}
	s, v4 := now.Format(http.TimeFormat), now.Format(v4DateTime)
	c.date.Store(&dateEntry{sec: sec, s: s, v4: v4})
	return s, v4
}

// target names the operation and destination in errors.
type target struct {
	op, kind, name string
}

func (t target) String() string { return "mns: " + t.op + " " + t.kind + " " + t.name }

// replyBuf is a pooled reply buffer with its parsed form.
type replyBuf struct {
	buf  bytes.Buffer
	r    reply
	ids  idText // parseReply's scratch
	date string // a refusal's Date header (keepDate)
}

var replyPool = sync.Pool{New: func() any { return new(replyBuf) }}

// reqIDs identifies one request: the id MNS gave it (x-mns-request-id,
// "" without a reply), ours (x-mns-user-request-id) and the AccessKeyId it
// was signed with.
type reqIDs struct {
	server, user, key string
	date              string // the request's Date header, as signed
}

// roundTrip signs and sends one request and reads the whole reply into rb.
// It returns the status and the request ids.
func (c *Client) roundTrip(ctx context.Context, t target, method, resource string, body []byte, refs []bodyRef, rb *replyBuf) (int, reqIDs, error) {
	ids := reqIDs{user: c.newRequestID()}
	if err := ctx.Err(); err != nil {
		return 0, ids, fmt.Errorf("%s: %w", t, err)
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	id, secret, token, err := c.creds(rctx)
	if err != nil {
		return 0, ids, fmt.Errorf("%s: %w", t, err)
	}
	ids.key = id
	date, dateTime := c.dateHeader()
	ids.date = date
	ct := ""
	if body != nil {
		ct = contentType
	}
	var auth string
	if c.v4 {
		h := http.Header{"X-Mns-Version": {APIVersion}, "X-Mns-User-Request-Id": {ids.user}}
		if ct != "" {
			h["Content-Type"] = []string{ct}
		}
		var cb [256]byte
		canon := appendV4CanonicalRequest(cb[:0], method, resource, nil, h)
		auth = v4Aliyun.authorization(id, dateTime, c.region, c.v4key.get(secret, dateTime[:8], c.region), canon)
	} else {
		var sb [256]byte
		sts := appendStringToSign(sb[:0], method, "", ct, date, canonUserRequestID+ids.user+"\n"+canonVersion, resource)
		auth = authorization(id, secret, sts)
	}
	var hb [7][2]string
	hs := hb[:0]
	if ct != "" {
		hs = append(hs, [2]string{"Content-Type", ct})
	}
	hs = append(hs, [2]string{"Date", date}, [2]string{"X-Mns-Version", APIVersion}, [2]string{"X-Mns-User-Request-Id", ids.user},
		[2]string{"User-Agent", c.ua}, [2]string{"Authorization", auth})
	if token != "" {
		hs = append(hs, [2]string{"Security-Token", token})
	}
	var status int
	if c.h1 != nil {
		status, ids.server, err = c.h1.do(rctx, &h1Request{method: method, resource: resource, headers: hs, xml: body, refs: refs}, rb)
		if err != nil {
			// Named as net/http names a failed request: Post "URL": ...
			err = &url.Error{Op: method[:1] + strings.ToLower(method[1:]), URL: c.base + resource, Err: err}
		}
	} else {
		status, ids.server, err = c.viaNetHTTP(rctx, method, resource, hs, body, refs, rb)
	}
	if err != nil {
		// A POST has a body. Not body itself: any use of it after the
		// exchange keeps the XML alive while the request waits for its
		// reply (TestRequestWaitingForItsReplyHoldsNoBody).
		if method == http.MethodPost {
			if e := c.proxyRefusal(ctx, t, ids, err); e != nil {
				return 0, ids, e
			}
		}
		return 0, ids, c.transportError(ctx, t, ids, err)
	}
	return status, ids, nil
}

// proxyProbeEvery bounds the probes proxyRefusal sends: at most one per
// this per client; meanwhile the last answer stands.
const proxyProbeEvery = time.Second

// proxyProbe is proxyRefusal's last probe: when, and whether the proxy
// answered it 407.
type proxyProbe struct {
	mu      sync.Mutex
	at      time.Time
	wants   bool
	running bool
}

// proxyRefusal asks the plain-http proxy, with a request without a body,
// whether it wants credentials, after a request with a body failed through
// it without a reply (err). A proxy that wants a password may answer 407 to
// the request's head and close before reading its body (tinyproxy with
// BasicAuth): the sender then sees the connection reset, not the 407, while
// the destination check (a GET) shows the 407. It returns that 407 as the
// request's Error (retryable, with the proxy's hint), or nil: no proxy, an
// https endpoint (a proxy's 407 to the CONNECT is reported as it is), a
// timeout or a cancel, or the proxy did not answer 407.
func (c *Client) proxyRefusal(ctx context.Context, t target, ids reqIDs, err error) *Error {
	if c.proxy == "" || c.hc == nil || !strings.HasPrefix(c.base, "http://") || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	p := &c.probe
	p.mu.Lock()
	probe := !p.running && (p.at.IsZero() || c.now().Sub(p.at) >= proxyProbeEvery)
	if probe {
		p.running = true
	}
	wants := p.wants
	p.mu.Unlock()
	if probe {
		wants = c.proxyWantsCredentials(ctx)
		p.mu.Lock()
		p.at, p.wants, p.running = c.now(), wants, false
		p.mu.Unlock()
	}
	if !wants {
		return nil
	}
	e := c.newError(t, http.StatusProxyAuthRequired, ids, fmt.Sprintf(
		"Proxy Authentication Required: the proxy closed this request's connection while its body was sent (%v), and answers 407 to a request without a body", err))
	e.foreign, e.via = true, c.proxy
	return e
}

// proxyWantsCredentials sends GET / of the endpoint through the proxy, with
// no body and no signature, and reports whether the proxy answered 407.
func (c *Client) proxyWantsCredentials(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, c.base+"/", nil)
	if err != nil {
		return false
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxReplySize))
	resp.Body.Close()
	return resp.StatusCode == http.StatusProxyAuthRequired
}

// viaNetHTTP is the exchange through net/http (a proxy, or
// Config.HTTPClient): it sends the request with headers hs and reads the
// whole reply into rb.
func (c *Client) viaNetHTTP(rctx context.Context, method, resource string, hs [][2]string, body []byte, refs []bodyRef, rb *replyBuf) (int, string, error) {
	var rd io.Reader
	var sent *sentBody
	if body != nil && refs == nil {
		br := bytes.NewReader(body)
		rd = br
		if len(body) >= bodyByRef {
			sent = &sentBody{full: body, br: br}
			rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{WroteRequest: sent.wrote})
		}
	}
	req, err := http.NewRequestWithContext(rctx, method, c.base+resource, rd)
	if err != nil {
		return 0, "", &permanentError{fmt.Errorf("build request: %w", err)}
	}
	if refs != nil {
		setBodyByRef(req, body, refs)
	}
	if sent != nil {
		req.GetBody = sent.getBody
	}
	for _, kv := range hs {
		req.Header[kv[0]] = []string{kv[1]}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	rb.buf.Reset()
	if _, err := rb.buf.ReadFrom(io.LimitReader(resp.Body, maxReplySize)); err != nil {
		return 0, "", fmt.Errorf("read reply: %w", err)
	}
	keepDate(rb, resp.StatusCode, resp.Header.Get("Date"))
	return resp.StatusCode, resp.Header.Get("X-Mns-Request-Id"), nil
}

// sentBody lets a large request body go once it has been written to the
// connection: a request waiting for its reply then holds no copy of its
// messages, which the pipeline holds anyway. Until then the transport may
// rewind it (GetBody) to send it on a fresh connection. The body stays a
// *bytes.Reader, which the transport writes with its headers.
type sentBody struct {
	mu   sync.Mutex
	full []byte // nil once written
	br   *bytes.Reader
}

// errBodySent is what GetBody returns once the body was written: the
// transport then reports the failed request, which the pipeline retries.
var errBodySent = errors.New("mns: the request body was already sent; not sending it again")

// wrote is the WroteRequest hook: the transport has read the body whole.
func (s *sentBody) wrote(info httptrace.WroteRequestInfo) {
	if info.Err != nil {
		return
	}
	s.mu.Lock()
	s.full = nil
	s.mu.Unlock()
	s.br.Reset(nil)
}

func (s *sentBody) getBody() (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full == nil {
		return nil, errBodySent
	}
	return io.NopCloser(bytes.NewReader(s.full)), nil
}

// bodyRef is a message body sent in place inside a request: it goes at
// offset at of the request's XML, not copied into it.
type bodyRef struct {
	at int
	b  []byte
}

// bodyByRef is the size from which a pre-encoded base64 body is sent in
// place: a request in flight (and one being retried) then does not hold a
// second copy of a large held message.
const bodyByRef = 8 << 10

// setBodyByRef makes req's body the XML with the bodies of refs in place.
// The bodies are only read, also after the reply (the transport may still
// be writing when a server answers early); they are never modified.
func setBodyByRef(req *http.Request, xml []byte, refs []bodyRef) {
	segs := make([][]byte, 0, 2*len(refs)+1)
	at, n := 0, int64(len(xml))
	for _, r := range refs {
		segs = append(segs, xml[at:r.at], r.b)
		at = r.at
		n += int64(len(r.b))
	}
	segs = append(segs, xml[at:])
	open := func() (io.ReadCloser, error) {
		b := net.Buffers(slices.Clone(segs))
		return io.NopCloser(&b), nil
	}
	req.Body, _ = open()
	req.GetBody = open
	req.ContentLength = n
}

func (c *Client) transportError(ctx context.Context, t target, ids reqIDs, err error) error {
	done := callerDone(ctx)
	if done == nil && errors.Is(err, context.DeadlineExceeded) {
		return &NoReplyError{Timeout: true, err: err,
			msg: fmt.Sprintf("%s: no reply within %s (%s)%s [user request id %s]; MNS or the network is slow: %v", t, c.timeout, c.names.Of(FieldTimeout), c.viaProxy(), ids.user, err)}
	}
	if done != nil {
		return fmt.Errorf("%s: %w", t, done)
	}
	check := "check " + c.names.Of(FieldEndpoint) + " (scheme, host and port) and the network"
	if c.proxy != "" {
		check = "check the proxy, " + c.names.Of(FieldEndpoint) + " and the network"
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
		notTLS    tls.RecordHeaderError // crypto/tls returns it as a value
	)
	var (
		refused *connectRefused
		dial    *net.OpError
	)
	dates, outsideDates := certclock.Explain("the TLS certificate that answered", err, time.Now())
	switch {
	case c.proxy == "" && errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &dial) && dial.Addr != nil:
		// The host answered, but nothing listens at the port: a wrong
		// port, or a host that is not MNS (an address the name resolves to
		// that serves something else).
		check += ": nothing accepts connections at " + dial.Addr.String() + " (connection refused; MNS listens on 443 for https:// and 80 for http://)"
	case errors.As(err, &refused):
		check = "the proxy answered the CONNECT " + strconv.Itoa(refused.code) + ": " + refused.hint(c.proxy, c.names)
	case errors.As(err, &notTLS):
		check = "the server at " + c.names.Of(FieldEndpoint) + " does not speak TLS: write the endpoint with http:// " +
			"(MNS's internal endpoints are http only), or check its port"
	case errors.As(err, &hostname):
		check = "the TLS certificate that answered is not for the host of " + c.names.Of(FieldEndpoint) + "; check it (and, with a TLS-intercepting proxy, that the proxy's certificates name the host)"
	case outsideDates:
		// A verification error too, which the CA store cannot mend.
		check = dates
	case errors.As(err, &unknownCA), errors.As(err, &verify):
		check = "the TLS certificate that answered is not trusted by this machine's CA certificates; check " + c.names.Of(FieldEndpoint) +
			" and the system's CA store (a TLS-intercepting proxy's CA must be added there, or to a bundle named by SSL_CERT_FILE)"
	}
	return &NoReplyError{err: err,
		msg: fmt.Sprintf("%s [user request id %s]: no reply from MNS%s; %s: %v", t, ids.user, c.viaProxy(), check, err)}
}

// callerDone returns ctx's error, or context.DeadlineExceeded once ctx's
// deadline has passed by the clock though its timer has not fired yet: a
// request's socket deadline, the same instant when the caller's deadline
// comes before Config.Timeout, can fire first, and its time-out is then the
// caller's, not the request's own (Config.Timeout).
func callerDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// connectRefused is a proxy's answer other than 200 to the CONNECT of an
// https endpoint. net/http would report only its reason phrase, which a
// proxy words its own way (tinyproxy: "403 Filtered", and 401 for a wrong
// password); connectAnswer keeps the status.
type connectRefused struct {
	code   int
	status string // the status line's code and reason, "403 Filtered"
}

func (e *connectRefused) Error() string { return "CONNECT: " + e.status }

// hint says what the status means for the operator; via names the proxy.
func (e *connectRefused) hint(via string, names Names) string {
	switch {
	case e.code == http.StatusProxyAuthRequired, e.code == http.StatusUnauthorized:
		return proxyWantsCredentials(via, names)
	case e.code >= 500:
		return "the proxy " + via + " could not reach the host of " + names.Of(FieldEndpoint) + "; check its host and port, and the proxy's own network; the bridge holds the messages and retries"
	}
	return proxyRefusesHost(via, names)
}

// connectAnswer is the client's http.Transport.OnProxyConnectResponse.
func connectAnswer(_ context.Context, _ *url.URL, _ *http.Request, res *http.Response) error {
	if res.StatusCode == http.StatusOK {
		return nil
	}
	return &connectRefused{code: res.StatusCode, status: res.Status}
}

// Proxy returns the proxy the requests go through (from Config.Proxy, by
// default HTTPS_PROXY / HTTP_PROXY / NO_PROXY), its password redacted, or
// "" without one.
func (c *Client) Proxy() string { return c.proxy }

// viaProxy names the proxy the requests go through and where it came from,
// or is "" without one.
func (c *Client) viaProxy() string {
	if c.proxy == "" {
		return ""
	}
	return " through the proxy " + c.proxy + " (HTTPS_PROXY or HTTP_PROXY in the bridge's environment; hosts listed in NO_PROXY bypass it)"
}

// newError is the Error of a request about t that got a reply with
// status; its hints name the Fields as the client's Names do.
func (c *Client) newError(t target, status int, ids reqIDs, msg string) *Error {
	return &Error{Op: t.op, Kind: t.kind, Name: t.name, Status: status, RequestID: ids.server, UserRequestID: ids.user,
		Message: msg, names: c.names}
}

// httpError makes an Error from a reply that is not a success.
func (c *Client) httpError(t target, status int, ids reqIDs, rb *replyBuf) *Error {
	e := c.newError(t, status, ids, "")
	e.Region, e.sts = c.region, credentials.Temporary(ids.key)
	e.requestDate, e.replyDate = ids.date, rb.date
	if parseReply(rb.buf.Bytes(), &rb.r, &rb.ids) == nil && rb.r.root == "Error" {
		e.Code, e.Message, e.HostID = rb.r.err.Code, rb.r.err.Message, rb.r.err.HostID
		if rb.r.err.RequestID != "" {
			e.RequestID = rb.r.err.RequestID
		}
		if c.refused != nil && e.keyRefused() {
			c.refused(ids.key)
		}
		return e
	}
	e.Message = snippet(rb.buf.Bytes())
	e.foreign, e.via = true, c.proxy
	return e
}

// snippet returns the start of a non-MNS reply as printable text.
func snippet(b []byte) string {
	// An HTML page (a proxy's or a gateway's) starts with a doctype and
	// markup; its title says what it is (squid: "ERROR: The requested URL
	// could not be retrieved", tinyproxy: "403 Filtered").
	if t := htmlTitle(b); t != "" {
		b = []byte("an HTML page titled \"" + t + "\"")
	}
	if len(b) > 200 {
		b = b[:200]
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(b))
	if s = strings.TrimSpace(s); s == "" {
		return "empty reply"
	}
	return "unexpected reply: " + s
}

// htmlTitle is the text of the <title> element within the first 4 KiB of
// b, or "" when there is none.
func htmlTitle(b []byte) string {
	b = b[:min(len(b), 4<<10)]
	lower := make([]byte, len(b)) // ASCII only: the same length as b
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	i := bytes.Index(lower, []byte("<title>"))
	if i < 0 {
		return ""
	}
	i += len("<title>")
	j := bytes.Index(lower[i:], []byte("</title>"))
	if j < 0 {
		return ""
	}
	return strings.Join(strings.Fields(string(b[i:i+j])), " ")
}

// label names message i of a call in errors.
type label func(i int) string

func indexLabel(i int) string { return "#" + strconv.Itoa(i) }

// sendOutcomes posts a Message or Messages request and fills res and errs
// for the messages idx (indexes into res and errs) whose MessageBody texts
// hash to sums.
func (c *Client) sendOutcomes(ctx context.Context, t target, resource string, body []byte, refs []bodyRef, idx []int, sums [][md5.Size]byte, lab label, res []SendResult, errs []error) {
	rb := replyPool.Get().(*replyBuf)
	defer replyPool.Put(rb)
	setAll := func(err error) {
		for _, i := range idx {
			errs[i] = err
		}
	}
	status, ids, err := c.roundTrip(ctx, t, "POST", resource, body, refs, rb)
	if err != nil {
		setAll(err)
		return
	}
	if err := parseReply(rb.buf.Bytes(), &rb.r, &rb.ids); err != nil || rb.r.root == "Error" ||
		(rb.r.root == "Message" && (status < 200 || status > 299)) {
		setAll(c.httpError(t, status, ids, rb))
		return
	}
	if len(rb.r.entries) != len(idx) {
		setAll(c.newError(t, status, ids, fmt.Sprintf("reply has %d results for %d messages", len(rb.r.entries), len(idx))))
		return
	}
	for k, e := range rb.r.entries {
		i := idx[k]
		switch {
		case e.ErrorCode != "":
			ie := c.newError(t, status, ids, e.ErrorMessage)
			ie.Item, ie.Code = lab(i), e.ErrorCode
			errs[i] = ie
		case e.MessageID == "":
			ie := c.newError(t, status, ids, "reply has no MessageId for this message")
			ie.Item = lab(i)
			errs[i] = ie
		case !md5Equal(e.BodyMD5, sums[k]):
			errs[i] = fmt.Errorf("%s: message %s: got %q [request id %s, user request id %s]: %w", t, lab(i), e.BodyMD5, ids.server, ids.user, ErrBodyMD5Mismatch)
		default:
			res[i] = SendResult{MessageID: e.MessageID, BodyMD5: e.BodyMD5, ReceiptHandle: e.ReceiptHandle}
			errs[i] = nil
		}
	}
}

func md5Equal(hexSum string, sum [md5.Size]byte) bool {
	var got [md5.Size]byte
	if len(hexSum) != 2*md5.Size {
		return false
	}
	if _, err := hex.Decode(got[:], []byte(hexSum)); err != nil {
		return false
	}
	return got == sum
}

// checkMessage returns what message m counts toward the batch limit (its
// MessageBody text and its properties) and the length it takes in the XML
// request, or the permanent error that keeps it from being sent.
func (c *Client) checkMessage(t target, i int, lab label, m *bridge.Outgoing) (size, xmlLen int, err error) {
	body, pre, err := c.bodyOf(m)
	textLen, xmlLen := len(body), len(body)
	if err == nil && !pre {
		textLen, xmlLen, err = bodyText(body, c.raw)
	}
	if errors.Is(err, ErrBodyNotXMLText) {
		err = fmt.Errorf("%w; use %s base64", err, c.names.Of(FieldBodyEncoding))
	}
	if err != nil {
		return 0, 0, &permanentError{fmt.Errorf("%s: message %s: %w", t, lab(i), err)}
	}
	enc := "base64"
	if c.raw {
		enc = "raw"
	}
	if textLen > MaxBodySize {
		before := len(body)
		if pre {
			before = base64.StdEncoding.DecodedLen(len(body)) - (len(body) - len(bytes.TrimRight(body, "=")))
		}
		return 0, 0, &permanentError{fmt.Errorf("%s: message %s: body is %d bytes after %s encoding (%d before); not sent: %w; %s",
			t, lab(i), textLen, enc, before, ErrBodyTooLarge, c.tooLargeAdvice(before))}
	}
	if len(m.Properties) == 0 && len(m.SystemProperties) == 0 && m.GroupID == "" {
		return textLen, xmlLen, nil
	}
	psize, pxml, err := checkProps(m)
	if err != nil {
		return 0, 0, &permanentError{fmt.Errorf("%s: message %s: %w; not sent", t, lab(i), err)}
	}
	if textLen+psize > MaxMessageSize {
		return 0, 0, &permanentError{fmt.Errorf("%s: message %s: body is %d bytes after %s encoding and its properties %d more; not sent: %w",
			t, lab(i), textLen, enc, psize, ErrMessageTooLarge)}
	}
	return textLen + psize, xmlLen + pxml, nil
}

// tooLargeAdvice tells the operator what to do with a body of before bytes
// (before its encoding) that is over the MNS limit once encoded: base64
// makes a body a third larger, so one of 48 to 64 KiB fits as raw text, and
// a larger one fits no way (the platform takes larger device messages than
// MNS does), so replay cannot send it either.
func (c *Client) tooLargeAdvice(before int) string {
	if !c.raw && before <= MaxBodySize {
		return fmt.Sprintf("it fits unencoded: %s raw sends a body of XML 1.0 text as it is (its consumers then read it without base64 decoding)",
			c.names.Of(FieldBodyEncoding))
	}
	return "MNS takes no larger message, so replay cannot send it either: the device must send less (split the message, or store the payload elsewhere and send a reference)"
}

// bodyOf returns what m's MessageBody is made from: the payload, or (pre)
// the base64 text to send as it is, when m carries the platform's
// canonical base64 (Outgoing.Base64) and the client writes base64. With
// BodyEncoding raw such a body is decoded first.
func (c *Client) bodyOf(m *bridge.Outgoing) (body []byte, pre bool, err error) {
	if !m.Base64 {
		return m.Body, false, nil
	}
	if !c.raw {
		return m.Body, true, nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(m.Body)))
	n, err := base64.StdEncoding.Decode(out, m.Body)
	if err != nil {
		return nil, false, fmt.Errorf("body marked base64 is not valid base64: %w", err)
	}
	return out[:n], false, nil
}

// appendBody appends m's <MessageBody> and returns its text (see
// appendMessageBody); a pre-encoded base64 body is copied as it is, or,
// from bodyByRef bytes, added to refs to be sent in place. m was checked by
// checkMessage.
func (c *Client) appendBody(dst []byte, refs *[]bodyRef, m *bridge.Outgoing) ([]byte, []byte) {
	body, pre, _ := c.bodyOf(m)
	if !pre {
		return appendMessageBody(dst, body, c.raw)
	}
	dst = append(dst, "<MessageBody>"...)
	if c.byRef(m) > 0 {
		*refs = append(*refs, bodyRef{at: len(dst), b: body})
		return append(dst, "</MessageBody>"...), body
	}
	st := len(dst)
	dst = append(dst, body...)
	text := dst[st:]
	return append(dst, "</MessageBody>"...), text
}

// byRef is the length of m's body when appendBody sends it in place, else
// 0: what the request's XML buffer need not hold.
func (c *Client) byRef(m *bridge.Outgoing) int {
	if m.Base64 && !c.raw && len(m.Body) >= bodyByRef {
		return len(m.Body)
	}
	return 0
}

func checkName(t target) error {
	if err := ValidName(t.name); err != nil {
		return &permanentError{fmt.Errorf("mns: %s %s %q is not a valid MNS %s name: %w", t.op, t.kind, t.name, t.kind, err)}
	}
	return nil
}

// SendMessage sends one message to a queue.
func (c *Client) SendMessage(ctx context.Context, queue string, body []byte) (SendResult, error) {
	return c.sendOne(ctx, queue, bridge.Outgoing{Body: body})
}

// sendOne sends m to a queue with SendMessage (its properties and group id
// too).
func (c *Client) sendOne(ctx context.Context, queue string, m bridge.Outgoing) (SendResult, error) {
	t := target{"SendMessage", "queue", queue}
	if err := checkName(t); err != nil {
		return SendResult{}, err
	}
	return c.sendSingle(ctx, t, "/queues/"+queue+"/messages", &m, "", indexLabel)
}

// sendSingle sends m alone to path as the request of t (SendMessage or
// PublishMessage): one <Message> with its body, the tag when not "" (topics
// only), its properties and group id. lab names it in errors.
func (c *Client) sendSingle(ctx context.Context, t target, path string, m *bridge.Outgoing, tag string, lab func(int) string) (SendResult, error) {
	_, xmlLen, err := c.checkMessage(t, 0, lab, m)
	if err != nil {
		return SendResult{}, err
	}
	var refs []bodyRef
	buf := make([]byte, 0, len(xmlDecl)+len(xmlNS)+xmlLen-c.byRef(m)+len(tag)*5+100)
	buf = append(buf, xmlDecl+`<Message xmlns="`+xmlNS+`">`...)
	buf, text := c.appendBody(buf, &refs, m)
	sums := [1][md5.Size]byte{md5.Sum(text)}
	if tag != "" {
		buf = append(buf, "<MessageTag>"...)
		buf = appendText(buf, []byte(tag))
		buf = append(buf, "</MessageTag>"...)
	}
	buf = appendProps(buf, m)
	buf = append(buf, "</Message>"...)
	var res [1]SendResult
	var errs [1]error
	c.sendOutcomes(ctx, t, path, buf, refs, []int{0}, sums[:], lab, res[:], errs[:])
	return res[0], errs[0]
}

// BatchSendMessage sends bodies to a queue in as few BatchSendMessage
// requests as the limits allow (16 messages and 64 KB of bodies each), one
// request after the other. It returns one result and one error per body, in
// order; errs[i] == nil means MNS accepted body i. A body that cannot be
// sent (too large, not XML text) gets a permanent error and the others are
// still sent. After ctx is done the unsent bodies get ctx's error.
func (c *Client) BatchSendMessage(ctx context.Context, queue string, bodies [][]byte) ([]SendResult, []error) {
	msgs := make([]bridge.Outgoing, len(bodies))
	for i, b := range bodies {
		msgs[i].Body = b
	}
	return c.SendMessages(ctx, queue, msgs)
}

// SendMessages is BatchSendMessage for messages with properties and group
// ids: their bodies and properties together count toward the 64 KB of a
// request. Messages whose properties break the MNS rules get a permanent
// error naming the message (its ID, or "#index") and are not sent.
func (c *Client) SendMessages(ctx context.Context, queue string, msgs []bridge.Outgoing) ([]SendResult, []error) {
	res := make([]SendResult, len(msgs))
	errs := make([]error, len(msgs))
	lab := func(i int) string {
		if msgs[i].ID != "" {
			return msgs[i].ID
		}
		return indexLabel(i)
	}
	c.batchSend(ctx, queue, msgs, lab, res, errs)
	return res, errs
}

func (c *Client) batchSend(ctx context.Context, queue string, msgs []bridge.Outgoing, lab label, res []SendResult, errs []error) {
	t := target{opBatchSend, "queue", queue}
	if err := checkName(t); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return
	}
	var (
		idx    [MaxBatchCount]int
		sums   [MaxBatchCount][md5.Size]byte
		n      int
		bytesN int
		xmlN   int
		refs   []bodyRef // allocated only for a large pre-encoded body
	)
	flush := func() {
		if n == 0 {
			return
		}
		if err := ctx.Err(); err != nil {
			for _, i := range idx[:n] {
				errs[i] = fmt.Errorf("%s: not sent: %w", t, err)
			}
			n, bytesN, xmlN, refs = 0, 0, 0, nil
			return
		}
		buf := make([]byte, 0, len(xmlDecl)+len(xmlNS)+xmlN+n*60+40)
		buf = append(buf, xmlDecl+`<Messages xmlns="`+xmlNS+`">`...)
		for k, i := range idx[:n] {
			var text []byte
			buf = append(buf, "<Message>"...)
			buf, text = c.appendBody(buf, &refs, &msgs[i])
			sums[k] = md5.Sum(text)
			buf = appendProps(buf, &msgs[i])
			buf = append(buf, "</Message>"...)
		}
		buf = append(buf, "</Messages>"...)
		c.sendOutcomes(ctx, t, "/queues/"+queue+"/messages", buf, refs, idx[:n], sums[:n], lab, res, errs)
		n, bytesN, xmlN, refs = 0, 0, 0, nil
	}
	for i := range msgs {
		tl, xl, err := c.checkMessage(t, i, lab, &msgs[i])
		if err != nil {
			errs[i] = err
			continue
		}
		if n == MaxBatchCount || bytesN+tl > MaxBatchBytes {
			flush()
		}
		idx[n] = i
		n++
		bytesN += tl
		xmlN += xl - c.byRef(&msgs[i])
	}
	flush()
}

// PublishMessage publishes one message to a topic, with an optional
// MessageTag of at most 16 characters ("" for none).
func (c *Client) PublishMessage(ctx context.Context, topic string, body []byte, tag string) (SendResult, error) {
	return c.publish(ctx, topic, bridge.Outgoing{Body: body, Tag: tag}, "#0")
}

// Publish publishes m (body, tag, properties and group id) to a topic.
// lab names the message in errors ("" uses m.ID, else "#0").
func (c *Client) Publish(ctx context.Context, topic string, m bridge.Outgoing) (SendResult, error) {
	lab := m.ID
	if lab == "" {
		lab = "#0"
	}
	return c.publish(ctx, topic, m, lab)
}

func (c *Client) publish(ctx context.Context, topic string, m bridge.Outgoing, lab string) (SendResult, error) {
	t := target{opPublish, "topic", topic}
	if err := checkName(t); err != nil {
		return SendResult{}, err
	}
	tag := m.Tag
	if err := ValidTag(tag); err != nil {
		return SendResult{}, &permanentError{fmt.Errorf("%s: message %s: tag %q is not a valid MNS message tag: %w", t, lab, tag, err)}
	}
	return c.sendSingle(ctx, t, "/topics/"+topic+"/messages", &m, tag, func(int) string { return lab })
}

// QueueAttributes is what GetQueueAttributes returns. Times are Unix
// seconds.
type QueueAttributes struct {
	QueueName              string `xml:"QueueName"`
	CreateTime             int64  `xml:"CreateTime"`
	LastModifyTime         int64  `xml:"LastModifyTime"`
	DelaySeconds           int    `xml:"DelaySeconds"`
	MaximumMessageSize     int    `xml:"MaximumMessageSize"`
	MessageRetentionPeriod int    `xml:"MessageRetentionPeriod"`
	VisibilityTimeout      int    `xml:"VisibilityTimeout"`
	PollingWaitSeconds     int    `xml:"PollingWaitSeconds"`
	ActiveMessages         int64  `xml:"ActiveMessages"`
	InactiveMessages       int64  `xml:"InactiveMessages"`
	DelayMessages          int64  `xml:"DelayMessages"`
	LoggingEnabled         bool   `xml:"LoggingEnabled"`
}

// TopicAttributes is what GetTopicAttributes returns. Times are Unix
// seconds.
type TopicAttributes struct {
	TopicName              string `xml:"TopicName"`
	CreateTime             int64  `xml:"CreateTime"`
	LastModifyTime         int64  `xml:"LastModifyTime"`
	MaximumMessageSize     int    `xml:"MaximumMessageSize"`
	MessageRetentionPeriod int    `xml:"MessageRetentionPeriod"`
	MessageCount           int64  `xml:"MessageCount"`
	LoggingEnabled         bool   `xml:"LoggingEnabled"`
}

// GetQueueAttributes looks a queue up; it is how the bridge checks that a
// queue exists and the credentials may reach it.
func (c *Client) GetQueueAttributes(ctx context.Context, queue string) (QueueAttributes, error) {
	var a QueueAttributes
	err := c.get(ctx, target{"GetQueueAttributes", "queue", queue}, "/queues/"+queue, &a)
	return a, err
}

// GetTopicAttributes looks a topic up.
func (c *Client) GetTopicAttributes(ctx context.Context, topic string) (TopicAttributes, error) {
	var a TopicAttributes
	err := c.get(ctx, target{"GetTopicAttributes", "topic", topic}, "/topics/"+topic, &a)
	return a, err
}

func (c *Client) get(ctx context.Context, t target, resource string, out any) error {
	if err := checkName(t); err != nil {
		return err
	}
	rb := replyPool.Get().(*replyBuf)
	defer replyPool.Put(rb)
	status, ids, err := c.roundTrip(ctx, t, "GET", resource, nil, nil, rb)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return c.httpError(t, status, ids, rb)
	}
	if err := xml.Unmarshal(rb.buf.Bytes(), out); err != nil {
		return c.newError(t, status, ids, "unreadable reply: "+err.Error())
	}
	return nil
}
