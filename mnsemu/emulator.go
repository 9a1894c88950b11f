// Package mnsemu is an emulator of the Alibaba Cloud MNS (SMQ) HTTP API for
// tests, the demo and benchmarks. It follows the published protocol, not any
// one client: it verifies V2 and V4 (MNS4-HMAC-SHA256) signatures and the
// 15-minute Date window, accepts what the official SDKs send (with or without Content-MD5, three
// Content-Types, the XML namespace with or without the trailing slash or not
// at all) and answers with the documented XML, status codes and limits.
//
// Messages keep their user and system properties and MessageGroupId, which
// ReceiveMessage and peek return as the docs show; malformed properties are
// refused with InvalidArgument.
//
// Operations: SendMessage, BatchSendMessage, PublishMessage, ReceiveMessage
// (with waitseconds), BatchReceiveMessage, peek, DeleteMessage,
// GetQueueAttributes, GetTopicAttributes, CreateQueue, CreateTopic.
//
// Faults can be injected and changed at run time: latency with jitter, an
// error rate with a chosen status, throttling above a message rate (429
// TooManyRequests, batch messages counted one by one) and partial batch
// failures. Stats, Messages and Published let tests see everything.
//
// An *Emulator is an http.Handler (use it with httptest.NewServer);
// RunCommand is the body of the "mns-emulator" subcommand.
package mnsemu

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures an Emulator.
type Config struct {
	// AccessKeys maps AccessKey ids to secrets. Every request must be signed
	// with one of them; with none, every request is refused.
	AccessKeys map[string]string
	// Authorize, when set, replaces AccessKeys: it returns the secret of an
	// AccessKeyId and the security token that must come with it in the
	// security-token header ("" for none), or ok false to refuse the id
	// (unknown, or expired). A test uses it to check each request against
	// what a fake STS issued.
	Authorize func(id string) (secret, token string, ok bool)
	// Queues and Topics exist from the start.
	Queues, Topics []string
	// Region, when set, is the only region V4 signatures may name; ""
	// accepts the region of any Credential.
	Region string
	// AutoCreate creates a queue or topic with default attributes on first
	// use instead of answering QueueNotExist / TopicNotExist.
	AutoCreate bool

	// Faults are the faults injected from the start; SetFaults changes
	// them at run time.
	Faults

	// SendOnly answers GetQueueAttributes and GetTopicAttributes with 403
	// AccessDenied, as MNS does for a RAM user that may only send
	// (mns:SendMessage, mns:PublishMessage) and not read attributes.
	SendOnly bool
	// Deny answers the listed API actions with 403 AccessDenied, as MNS
	// does for a RAM user whose policy does not allow them: "Action" for
	// every queue or topic, "Action:name" for one (e.g. "BatchSendMessage"
	// or "BatchSendMessage:dead-letters"). The actions are in
	// DeniableActions; a queue POST is SendMessage or BatchSendMessage by
	// its body, as MNS tells them apart.
	Deny []string

	// StoreLimit, when > 0, bounds the messages kept per queue and topic;
	// the oldest are dropped (for long benchmarks and demos).
	StoreLimit int
	// Seed makes the random faults repeatable; 0 picks one at random.
	Seed uint64
	// Now is the clock for Date checks, visibility and throttling; default
	// time.Now.
	Now func() time.Time
	// Logger receives one line per error reply at debug level; default
	// discards.
	Logger *slog.Logger
}

// Faults are the injected faults.
type Faults struct {
	// Latency is added before every reply, plus a uniform random [0, Jitter).
	Latency, Jitter time.Duration
	// ErrorRate is the fraction of requests answered with ErrorStatus (500
	// InternalError by default, or 503 ServiceUnavailable).
	ErrorRate   float64
	ErrorStatus int
	// ThrottleRate, when > 0, is the messages per second above which
	// requests get 429 TooManyRequests; batch messages count one by one.
	ThrottleRate float64
	// ThrottleHold is how long a throttled request is held before its 429
	// (MNS holds about 500 ms). Default 0.
	ThrottleHold time.Duration
	// ThrottleCode is the code throttled requests get: "" or
	// "TooManyRequests" (429, today's MNS), or "QpsLimitExceeded" (400, the
	// legacy per-queue limit).
	ThrottleCode string
	// PartialFailureRate is the fraction of messages in a BatchSendMessage
	// that fail with InternalError while the others are stored.
	PartialFailureRate float64
	// FailMessage, when set, decides which batch messages fail instead of
	// PartialFailureRate (for tests that need exact failures).
	FailMessage func(queue string, index int, body string) bool
}

// Stats counts what the emulator did since New or Reset.
type Stats struct {
	Requests int64
	// Sent counts messages stored by SendMessage and BatchSendMessage.
	Sent int64
	// Published counts messages stored by PublishMessage.
	Published int64
	Received  int64
	Deleted   int64
	// Throttled counts requests throttled (429, or 400 QpsLimitExceeded); InjectedErrors those failed
	// by ErrorRate; PartialFailures the batch messages failed on purpose.
	Throttled       int64
	InjectedErrors  int64
	PartialFailures int64
	// Errors counts every error reply by MNS code.
	Errors map[string]int64
}

// Emulator is an in-memory MNS. It is an http.Handler and safe for
// concurrent use.
type Emulator struct {
	cfg  Config
	now  func() time.Time
	log  *slog.Logger
	keys map[string]string

	fmu    sync.Mutex // guards faults, rng, bucket
	faults Faults
	rng    *mrand.Rand
	bucket tokenBucket

	mu     sync.Mutex // guards queues, topics, errCount
	queues map[string]*queue
	topics map[string]*topic

	deny map[string]bool // Config.Deny

	idPrefix [8]byte
	seq      atomic.Uint64
	stats    counters
}

type counters struct {
	requests, sent, published, received, deleted atomic.Int64
	throttled, injected, partial                 atomic.Int64
	errMu                                        sync.Mutex
	errors                                       map[string]int64
}

// New returns an emulator with cfg's queues, topics and faults.
func New(cfg Config) *Emulator {
	e := &Emulator{cfg: cfg, now: cfg.Now, log: cfg.Logger, keys: make(map[string]string), deny: make(map[string]bool)}
	for _, d := range cfg.Deny {
		e.deny[d] = true
	}
	for id, secret := range cfg.AccessKeys {
		e.keys[id] = secret
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	seed := cfg.Seed
	if seed == 0 {
		var b [8]byte
		rand.Read(b[:])
		seed = binary.LittleEndian.Uint64(b[:])
	}
	e.rng = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	rand.Read(e.idPrefix[:])
	e.faults = cfg.Faults
	e.Reset()
	return e
}

// SetFaults replaces the injected faults; it is safe to call while requests
// are served. Throttling starts again with a full bucket.
func (e *Emulator) SetFaults(f Faults) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.faults = f
	e.bucket = tokenBucket{}
}

// Faults returns the faults in force.
func (e *Emulator) Faults() Faults {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.faults
}

// Reset drops every message, queue and topic, declares the configured ones
// again and zeroes the counters. Faults stay as they are.
func (e *Emulator) Reset() {
	e.mu.Lock()
	e.queues = make(map[string]*queue)
	e.topics = make(map[string]*topic)
	now := e.now()
	for _, q := range e.cfg.Queues {
		e.queues[q] = defaultQueue(q, now)
	}
	for _, t := range e.cfg.Topics {
		e.topics[t] = defaultTopic(t, now)
	}
	e.mu.Unlock()
	s := &e.stats
	for _, c := range []*atomic.Int64{&s.requests, &s.sent, &s.published, &s.received, &s.deleted, &s.throttled, &s.injected, &s.partial} {
		c.Store(0)
	}
	s.errMu.Lock()
	s.errors = make(map[string]int64)
	s.errMu.Unlock()
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	s := &e.stats
	st := Stats{Requests: s.requests.Load(), Sent: s.sent.Load(), Published: s.published.Load(),
		Received: s.received.Load(), Deleted: s.deleted.Load(), Throttled: s.throttled.Load(),
		InjectedErrors: s.injected.Load(), PartialFailures: s.partial.Load(), Errors: make(map[string]int64)}
	s.errMu.Lock()
	for k, v := range s.errors {
		st.Errors[k] = v
	}
	s.errMu.Unlock()
	return st
}

// StoredMessage is a message as the emulator keeps it.
type StoredMessage struct {
	ID string
	// Body is the MessageBody text exactly as stored (after XML
	// unescaping): base64 text when the sender encoded it.
	Body string
	// BodyMD5 is the upper-case hex MD5 of Body.
	BodyMD5      string
	Priority     int
	DelaySeconds int
	// Tag is the MessageTag (topics).
	Tag          string
	EnqueueTime  time.Time
	DequeueCount int
	// UserProperties and SystemProperties are the message's properties in
	// the order sent (nil for none); MessageGroupID its FIFO group.
	UserProperties, SystemProperties []Property
	MessageGroupID                   string
}

// DecodedBody returns Body base64-decoded, for senders that encode.
func (m StoredMessage) DecodedBody() ([]byte, error) {
	return base64.StdEncoding.DecodeString(m.Body)
}

// Messages returns the messages in queue name (not yet deleted, visible or
// not) in enqueue order; nil when there is no such queue.
func (e *Emulator) Messages(name string) []StoredMessage {
	_, out, _ := under(e, e.declaredQueue, name, nil, func(q *queue) []StoredMessage {
		out := make([]StoredMessage, len(q.msgs))
		for i, m := range q.msgs {
			out[i] = m.StoredMessage
		}
		return out
	})
	return out
}

// Depth returns how many messages queue name holds (not yet deleted,
// visible or not): len(Messages(name)) without copying them, for tests that
// wait for a queue to fill. 0 when there is no such queue.
func (e *Emulator) Depth(name string) int {
	_, n, _ := under(e, e.declaredQueue, name, nil, func(q *queue) int { return len(q.msgs) })
	return n
}

// Published returns the messages published to topic name, oldest first;
// nil when there is no such topic.
func (e *Emulator) Published(name string) []StoredMessage {
	_, out, _ := under(e, e.declaredTopic, name, nil, func(t *topic) []StoredMessage {
		return append([]StoredMessage(nil), t.msgs...)
	})
	return out
}

// CreateQueue declares a queue with default attributes if it does not
// exist (for tests that need one after New).
func (e *Emulator) CreateQueue(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	declared(e, e.queues, name, true, defaultQueue)
}

// CreateTopic declares a topic with default attributes if it does not exist.
func (e *Emulator) CreateTopic(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	declared(e, e.topics, name, true, defaultTopic)
}

// apiError is an error reply.
type apiError struct {
	status int
	code   string
	msg    string
}

func errf(status int, code, msg string) *apiError { return &apiError{status, code, msg} }

// exchange is one request being served.
type exchange struct {
	w     http.ResponseWriter
	r     *http.Request
	reqID string
	body  []byte
	buf   *bytes.Buffer
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxRequestBody = 1 << 20

// ServeHTTP serves one MNS API request.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.stats.requests.Add(1)
	x := &exchange{w: w, r: r, reqID: e.newRequestID(), buf: bufPool.Get().(*bytes.Buffer)}
	defer bufPool.Put(x.buf)
	x.buf.Reset()

	f := e.Faults()
	if d := f.Latency + e.jitter(f.Jitter); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if _, err := x.buf.ReadFrom(io.LimitReader(r.Body, maxRequestBody+1)); err != nil {
		return // the client went away
	}
	if x.buf.Len() > maxRequestBody {
		e.reply(x, errf(400, "InvalidArgument", "The request body is too large."))
		return
	}
	x.body = x.buf.Bytes()
	if err := e.authenticate(r, x.body); err != nil {
		e.reply(x, err)
		return
	}
	e.reply(x, e.route(x, f))
}

// reply writes an error reply when err is not nil; successes are written
// by the operations themselves.
func (e *Emulator) reply(x *exchange, err *apiError) {
	if err == nil {
		return
	}
	e.stats.errMu.Lock()
	e.stats.errors[err.code]++
	e.stats.errMu.Unlock()
	e.log.Debug("mns error reply", "method", x.r.Method, "path", x.r.URL.Path, "status", err.status, "code", err.code, "message", err.msg)
	x.buf.Reset()
	b := encodeReply(x.buf, "Error", errorReply{Code: err.code, Message: err.msg, RequestId: x.reqID, HostId: hostID(x.r)})
	e.write(x, err.status, b)
}

func hostID(r *http.Request) string {
	return "http://" + r.Host
}

func (e *Emulator) write(x *exchange, status int, body []byte) {
	h := x.w.Header()
	h["Content-Type"] = []string{"text/xml;charset=utf-8"}
	h["X-Mns-Request-Id"] = []string{x.reqID}
	h["X-Mns-Version"] = []string{apiVersion}
	if e.cfg.Now != nil {
		// A clock of its own (ahead or behind, to try a client's): its
		// replies are dated by it, as MNS's by MNS's clock; net/http dates
		// the others by this machine's.
		h["Date"] = []string{e.now().UTC().Format(http.TimeFormat)}
	}
	if body != nil {
		h["Content-Length"] = []string{itoa(len(body))}
	}
	x.w.WriteHeader(status)
	if body != nil {
		x.w.Write(body)
	}
}

// route dispatches by path and method.
func (e *Emulator) route(x *exchange, f Faults) *apiError {
	r := x.r
	p := r.URL.Path
	var kind, name, rest string
	switch {
	case strings.HasPrefix(p, "/queues/"):
		kind, p = "queue", p[len("/queues/"):]
	case strings.HasPrefix(p, "/topics/"):
		kind, p = "topic", p[len("/topics/"):]
	default:
		return errf(400, "InvalidRequestURL", "The emulator does not implement "+r.Method+" "+r.URL.Path+".")
	}
	name, rest, _ = strings.Cut(p, "/")
	if rest != "" && rest != "messages" {
		return errf(400, "InvalidRequestURL", "The request URL "+r.URL.Path+" is invalid.")
	}
	if err := checkName(kind, name); err != nil {
		return err
	}
	if len(e.deny) > 0 {
		if action := actionOf(kind, rest, r.Method, x.body); e.deny[action] || e.deny[action+":"+name] {
			return errf(403, "AccessDenied", "The user has no permission for "+action+" on "+kind+" "+name+".")
		}
	}
	switch {
	case kind == "queue" && rest == "messages" && r.Method == http.MethodPost:
		return e.sendMessages(x, f, name)
	case kind == "queue" && rest == "messages" && r.Method == http.MethodGet:
		return e.receiveMessages(x, f, name)
	case kind == "queue" && rest == "messages" && r.Method == http.MethodDelete:
		return e.deleteMessage(x, f, name)
	case rest == "" && r.Method == http.MethodGet && e.cfg.SendOnly:
		return errf(403, "AccessDenied", "The user has no permission to get the attributes of "+kind+" "+name+".")
	case kind == "queue" && rest == "" && r.Method == http.MethodGet:
		return e.getAttributes(x, f, "Queue", func() (any, *apiError) { return e.queueAttributes(name) })
	case kind == "queue" && rest == "" && r.Method == http.MethodPut:
		return e.createQueue(x, f, name)
	case kind == "topic" && rest == "messages" && r.Method == http.MethodPost:
		return e.publishMessage(x, f, name)
	case kind == "topic" && rest == "" && r.Method == http.MethodGet:
		return e.getAttributes(x, f, "Topic", func() (any, *apiError) { return e.topicAttributes(name) })
	case kind == "topic" && rest == "" && r.Method == http.MethodPut:
		return e.createTopic(x, f, name)
	}
	return errf(400, "InvalidRequestURL", "The emulator does not implement "+r.Method+" "+r.URL.Path+".")
}

// DeniableActions are the API actions Config.Deny may name.
var DeniableActions = []string{"SendMessage", "BatchSendMessage", "ReceiveMessage", "DeleteMessage",
	"GetQueueAttributes", "CreateQueue", "PublishMessage", "GetTopicAttributes", "CreateTopic"}

// actionOf names the API action of a request (a RAM policy's mns:Action).
func actionOf(kind, rest, method string, body []byte) string {
	switch {
	case kind == "queue" && rest == "messages" && method == http.MethodPost:
		if bytes.Contains(body, []byte("<Messages")) {
			return "BatchSendMessage"
		}
		return "SendMessage"
	case kind == "queue" && rest == "messages" && method == http.MethodGet:
		return "ReceiveMessage"
	case kind == "queue" && rest == "messages" && method == http.MethodDelete:
		return "DeleteMessage"
	case kind == "topic" && rest == "messages" && method == http.MethodPost:
		return "PublishMessage"
	case rest == "" && method == http.MethodGet:
		return "Get" + strings.ToUpper(kind[:1]) + kind[1:] + "Attributes"
	case rest == "" && method == http.MethodPut:
		return "Create" + strings.ToUpper(kind[:1]) + kind[1:]
	}
	return ""
}

// checkName applies the MNS name rules to a queue or topic in a URL.
func checkName(kind, name string) *apiError {
	code := "InvalidQueueName"
	lenCode := "QueueNameLengthError"
	if kind == "topic" {
		code, lenCode = "InvalidArgument", "InvalidArgument"
	}
	if len(name) > 120 {
		return errf(400, lenCode, "The length of "+kind+" name should not be larger than 120.")
	}
	if !validName(name) {
		return errf(400, code, "The "+kind+" name you provided is invalid.")
	}
	return nil
}

func validName(n string) bool {
	if n == "" || len(n) > 120 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0
		if !ok {
			return false
		}
	}
	return true
}

// admit applies the injected whole-request faults for a request that
// counts as n messages: throttling, then the error rate.
func (e *Emulator) admit(f Faults, r *http.Request, n int) *apiError {
	e.fmu.Lock()
	throttled := f.ThrottleRate > 0 && !e.bucket.take(e.now(), f.ThrottleRate, n)
	inject := !throttled && f.ErrorRate > 0 && e.rng.Float64() < f.ErrorRate
	e.fmu.Unlock()
	if throttled {
		e.stats.throttled.Add(1)
		if f.ThrottleHold > 0 {
			t := time.NewTimer(f.ThrottleHold)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		if f.ThrottleCode == "QpsLimitExceeded" {
			return errf(400, "QpsLimitExceeded", "The queue's QPS limit was exceeded.")
		}
		return errf(429, "TooManyRequests", "The request is denied by cluster flow limiter for too many requests.")
	}
	if inject {
		e.stats.injected.Add(1)
		if f.ErrorStatus == 503 {
			return errf(503, "ServiceUnavailable", "The service is temporarily unavailable.")
		}
		st := f.ErrorStatus
		if st == 0 {
			st = 500
		}
		return errf(st, "InternalError", "The request processing has failed due to some unknown error.")
	}
	return nil
}

// failOne decides whether message index of a batch fails on purpose.
func (e *Emulator) failOne(f Faults, queue string, index int, body string) bool {
	if f.FailMessage != nil {
		return f.FailMessage(queue, index, body)
	}
	if f.PartialFailureRate <= 0 {
		return false
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.rng.Float64() < f.PartialFailureRate
}

func (e *Emulator) jitter(j time.Duration) time.Duration {
	if j <= 0 {
		return 0
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return time.Duration(e.rng.Int64N(int64(j)))
}

// tokenBucket refuses messages above rate per second; it holds at most one
// second of messages (and at least one full batch).
type tokenBucket struct {
	tokens float64
	last   time.Time
	primed bool
}

func (b *tokenBucket) take(now time.Time, rate float64, n int) bool {
	capacity := max(rate, 16)
	if !b.primed {
		b.tokens, b.last, b.primed = capacity, now, true
	}
	if d := now.Sub(b.last).Seconds(); d > 0 {
		b.tokens = min(capacity, b.tokens+d*rate)
		b.last = now
	}
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

const hexUpper = "0123456789ABCDEF"

// newID returns a 32-character upper-case hex message id.
func (e *Emulator) newID() string {
	var b [32]byte
	e.putID(b[:])
	return string(b[:])
}

// putID writes a new 32-character id into b.
func (e *Emulator) putID(b []byte) {
	n := e.seq.Add(1)
	for i, c := range e.idPrefix {
		b[2*i], b[2*i+1] = hexUpper[c>>4], hexUpper[c&15]
	}
	for i := 31; i >= 16; i-- {
		b[i] = hexUpper[n&15]
		n >>= 4
	}
}

// newRequestID returns a 24-character upper-case hex request id.
func (e *Emulator) newRequestID() string {
	id := e.newID()
	return id[:8] + id[16:]
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	if n == 0 {
		return "0"
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
