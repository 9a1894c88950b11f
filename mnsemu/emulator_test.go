package mnsemu

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
)

// clock is a settable clock shared by the emulator and the test's signer.
func newClock() *testclock.Clock {
	return testclock.New(time.Date(2026, 11, 23, 0, 9, 46, 0, time.UTC))
}

// req describes one request the way a particular SDK would send it. The
// signing below is written from the API brief, independently of both the
// emulator and sinks/mns.
type req struct {
	method, path, body string
	id, secret         string
	ctype              string // "" sends none
	md5                bool   // Content-MD5 = base64(hex(md5(body)))
	date               string // "" uses the clock
	noDate             bool
	xmnsDate           bool // also send x-mns-date (NodeSDK)
	version            string
	noVersion          bool
	extra              map[string]string // more headers, signed if x-mns-*
	auth               string            // overrides Authorization
	token              string
	v4region           string // sign with V4 for this region (the emulator's vector-tested signer)
}

type env struct {
	t   *testing.T
	e   *Emulator
	srv *httptest.Server
	clk *testclock.Clock
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	clk := newClock()
	if cfg.AccessKeys == nil {
		cfg.AccessKeys = map[string]string{"ak": "sk"}
	}
	cfg.Now = clk.Now
	e := New(cfg)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return &env{t: t, e: e, srv: srv, clk: clk}
}

func (v *env) do(r req) (int, http.Header, []byte) {
	v.t.Helper()
	if r.id == "" {
		r.id, r.secret = "ak", "sk"
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, v.srv.URL+r.path, body)
	if err != nil {
		v.t.Fatal(err)
	}
	date := r.date
	if date == "" {
		date = v.clk.Now().UTC().Format(http.TimeFormat)
	}
	if !r.noDate {
		hr.Header.Set("Date", date)
	}
	if r.xmnsDate {
		hr.Header.Set("x-mns-date", date)
	}
	if !r.noVersion {
		ver := r.version
		if ver == "" {
			ver = "2015-06-06"
		}
		hr.Header.Set("x-mns-version", ver)
	}
	if r.ctype != "" {
		hr.Header.Set("Content-Type", r.ctype)
	}
	cmd5 := ""
	if r.md5 {
		sum := md5.Sum([]byte(r.body))
		cmd5 = base64.StdEncoding.EncodeToString([]byte(hex.EncodeToString(sum[:])))
		hr.Header.Set("Content-MD5", cmd5)
	}
	for k, val := range r.extra {
		hr.Header.Set(k, val)
	}
	var names []string
	for k := range hr.Header {
		if strings.HasPrefix(strings.ToLower(k), "x-mns-") {
			names = append(names, strings.ToLower(k))
		}
	}
	sort.Strings(names)
	canon := ""
	for _, n := range names {
		canon += n + ":" + hr.Header.Get(n) + "\n"
	}
	sts := r.method + "\n" + cmd5 + "\n" + r.ctype + "\n" + hr.Header.Get("Date") + "\n" + canon + r.path
	m := hmac.New(sha1.New, []byte(r.secret))
	m.Write([]byte(sts))
	auth := "MNS " + r.id + ":" + base64.StdEncoding.EncodeToString(m.Sum(nil))
	if r.v4region != "" {
		dt, _ := http.ParseTime(hr.Header.Get("Date"))
		dts := dt.UTC().Format("20060102T150405Z")
		canon := v4CanonicalRequest(r.method, hr.URL.Path, hr.URL.Query(), hr.Header)
		auth = "MNS4-HMAC-SHA256 Credential=" + r.id + "/" + dts[:8] + "/" + r.v4region + "/mns/aliyun_v4_request,Signature=" + v4Sign(v4Public, r.secret, dts, r.v4region, canon)
	}
	if r.auth != "" {
		auth = r.auth
	}
	if r.auth != "-" {
		hr.Header.Set("Authorization", auth)
	}
	if r.token != "" {
		hr.Header.Set("security-token", r.token)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

type xmlError struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string
	Message   string
	RequestId string
	HostId    string
}

type xmlMsg struct {
	MessageId        string
	MessageBodyMD5   string
	MessageBody      string
	ReceiptHandle    string
	ErrorCode        string
	ErrorMessage     string
	DequeueCount     int
	Priority         int
	EnqueueTime      int64
	NextVisibleTime  int64
	FirstDequeueTime int64
}

type xmlMsgs struct {
	XMLName xml.Name `xml:"Messages"`
	Msgs    []xmlMsg `xml:"Message"`
}

func (v *env) wantError(status int, b []byte, wantStatus int, code string) {
	v.t.Helper()
	if status != wantStatus {
		v.t.Errorf("status = %d, want %d; body %s", status, wantStatus, b)
		return
	}
	var e xmlError
	if err := xml.Unmarshal(b, &e); err != nil {
		v.t.Errorf("error body: %v: %s", err, b)
		return
	}
	if e.Code != code || e.RequestId == "" || e.HostId == "" || e.Message == "" {
		v.t.Errorf("error = %+v, want code %s with message, request id and host id", e, code)
	}
	if !strings.Contains(string(b), `xmlns="http://mns.aliyuncs.com/doc/v1/"`) {
		v.t.Errorf("error body without the MNS namespace: %s", b)
	}
}

func md5Upper(s string) string {
	sum := md5.Sum([]byte(s))
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// Each official SDK's habits (API brief §1.1, §3): content type, Content-MD5,
// namespace, declaration and extra headers. All must be accepted.
func TestSDKRequestStyles(t *testing.T) {
	tests := []struct {
		sdk, ctype, ns string
		decl, md5      bool
		xmnsDate       bool
		extra          map[string]string
	}{
		{sdk: "go", ctype: "application/xml", md5: true},
		{sdk: "python", ctype: "text/xml;charset=UTF-8", ns: xmlNS, decl: true, md5: true, extra: map[string]string{"x-mns-user-request-id": "req-1"}},
		{sdk: "java", ctype: "text/xml;charset=UTF-8", ns: "http://mns.aliyuncs.com/doc/v1", decl: true, extra: map[string]string{"x-mns-user-request-id": "j-2"}},
		{sdk: "php", ctype: "text/xml", ns: xmlNS, decl: true},
		{sdk: "node", ctype: "text/xml", ns: xmlNS, decl: true, md5: true, xmnsDate: true},
	}
	for _, tt := range tests {
		t.Run(tt.sdk, func(t *testing.T) {
			v := newEnv(t, Config{Queues: []string{"q1"}, Topics: []string{"t1"}})
			open := func(root string) string {
				s := ""
				if tt.decl {
					s = `<?xml version="1.0" encoding="UTF-8"?>` + "\n"
				}
				if tt.ns != "" {
					return s + "<" + root + ` xmlns="` + tt.ns + `">`
				}
				return s + "<" + root + ">"
			}
			body := open("Message") + "<MessageBody>hi &lt;&amp;&gt; " + tt.sdk + "</MessageBody><DelaySeconds>0</DelaySeconds><Priority>8</Priority></Message>"
			st, h, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: body, ctype: tt.ctype, md5: tt.md5, xmnsDate: tt.xmnsDate, extra: tt.extra, token: "sts-token"})
			if st != 201 {
				t.Fatalf("SendMessage status %d: %s", st, b)
			}
			if h.Get("x-mns-request-id") == "" || h.Get("x-mns-version") != "2015-06-06" || !strings.HasPrefix(h.Get("Content-Type"), "text/xml") {
				t.Errorf("reply headers %v", h)
			}
			var m xmlMsg
			if err := xml.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			text := "hi <&> " + tt.sdk
			if len(m.MessageId) != 32 || m.MessageBodyMD5 != md5Upper(text) {
				t.Errorf("reply %+v, want 32-char id and MD5 %s", m, md5Upper(text))
			}
			if got := v.e.Messages("q1"); len(got) != 1 || got[0].Body != text || got[0].Priority != 8 {
				t.Errorf("stored %+v", got)
			}

			batch := open("Messages") + "\n  <Message><MessageBody>a</MessageBody></Message>\n  <Message><MessageBody>b</MessageBody><Priority>1</Priority></Message>\n</Messages>"
			st, _, b = v.do(req{method: "POST", path: "/queues/q1/messages", body: batch, ctype: tt.ctype, md5: tt.md5, xmnsDate: tt.xmnsDate, extra: tt.extra})
			var ms xmlMsgs
			if st != 201 || xml.Unmarshal(b, &ms) != nil || len(ms.Msgs) != 2 || ms.Msgs[1].MessageBodyMD5 != md5Upper("b") {
				t.Errorf("BatchSendMessage: %d %s", st, b)
			}

			pub := open("Message") + "<MessageBody>hello topic</MessageBody><MessageTag>tag1</MessageTag><MessageAttributes><DirectMail>{\"x\":1}</DirectMail></MessageAttributes></Message>"
			st, _, b = v.do(req{method: "POST", path: "/topics/t1/messages", body: pub, ctype: tt.ctype, md5: tt.md5, xmnsDate: tt.xmnsDate, extra: tt.extra})
			if st != 201 {
				t.Errorf("PublishMessage: %d %s", st, b)
			}
			if p := v.e.Published("t1"); len(p) != 1 || p[0].Body != "hello topic" || p[0].Tag != "tag1" {
				t.Errorf("published %+v", p)
			}
		})
	}
}

// The exact GoSDK v1.0.11 request of vector h: its signature is accepted,
// and its Priority 0 (the SDK's bug) is refused as MNS documents.
func TestGoSDKProbeRequest(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}})
	body := `<Message><MessageBody>hi &lt;&amp;&gt;</MessageBody><DelaySeconds>0</DelaySeconds><Priority>0</Priority></Message>`
	hr, _ := http.NewRequest("POST", v.srv.URL+"/queues/q1/messages", strings.NewReader(body))
	hr.Header.Set("Content-Type", "application/xml")
	hr.Header.Set("Content-MD5", "NmU4ZmE1YWJhZDE2Zjk2M2Q0NWFhYjUxM2FlMDI0YTk=")
	hr.Header.Set("Date", "Mon, 23 Nov 2026 00:09:46 GMT")
	hr.Header.Set("x-mns-version", "2015-06-06")
	hr.Header.Set("Authorization", "MNS ak:OK3PjOOL35R9jO47ZqW8eDWD1kA=")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	v.wantError(resp.StatusCode, b, 400, "InvalidArgument")
	if !strings.Contains(string(b), "The value of Priority should between 1 and 16") {
		t.Errorf("body %s", b)
	}
}

// Vectors f and g as whole requests: the emulator computes the same
// signatures the SDK tests publish.
func TestEmulatorSignVectors(t *testing.T) {
	tests := []struct {
		secret, method, md5, ctype, date, canon, res, want string
	}{
		{"accessKeySecret111", "PUT", "", "text/xml;charset=UTF-8", "Tue, 03 Jun 2025 11:23:48 GMT", "x-mns-version:2015-06-06\n", "/queues/TestQueue", "HCSlBi5KuXGNf06tZKFiQlNDt4c="},
		{"ACCESS_KEY_SECRET", "PUT", "574683b3684e3cff610afa155cc2506d", "text/xml", "Tue, 11 Apr 2017 10:09:19 GMT", "x-mns-version:2015-06-06\n", "/", "A9zehggaYHHujmuRMxGIDrhWwx8="},
		{"sk1", "POST", "", "", "Tue, 03 Jun 2025 11:23:48 GMT", canonicalHeaders(http.Header{"X-Mns-Abcdef": {"abcDEF"}, "X-Kkk-Def": {"x"}}), "/queues/TestQueue", "cAThPWnbphg3hDe3ZHDADTgkgyE="},
		{"testSk", "POST", "", "application/json", "Tue, 03 Jun 2025 11:23:48 GMT", "", "/queues/Test Queue@123", "GZ/I9UgZsqvbzfzjd0GmA6VHOx4="},
	}
	for _, tt := range tests {
		if got := sign(tt.secret, tt.method, tt.md5, tt.ctype, tt.date, tt.canon, tt.res); got != tt.want {
			t.Errorf("sign(%s %s) = %s, want %s", tt.method, tt.res, got, tt.want)
		}
	}
}

// refusal is a request the emulator must refuse with status and code.
type refusal struct {
	name   string
	r      req
	status int
	code   string
}

// variant returns a maker of variants of base: a copy changed by f.
func variant(base req) func(f func(r *req)) req {
	return func(f func(r *req)) req { r := base; f(&r); return r }
}

// wantRefused sends each request to a new emulator of cfg (which has queue
// q1) and wants its error reply and nothing stored.
func wantRefused(t *testing.T, cfg Config, cases []refusal) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			v := newEnv(t, cfg)
			st, _, b := v.do(tt.r)
			v.wantError(st, b, tt.status, tt.code)
			if len(v.e.Messages("q1")) != 0 {
				t.Error("a refused message was stored")
			}
		})
	}
}

func TestAuthErrors(t *testing.T) {
	body := `<Message><MessageBody>x</MessageBody></Message>`
	base := req{method: "POST", path: "/queues/q1/messages", body: body, ctype: "text/xml"}
	with := variant(base)
	wantRefused(t, Config{Queues: []string{"q1"}}, []refusal{
		{"no version", with(func(r *req) { r.noVersion = true }), 400, "MissingVersionHeader"},
		{"bad version", with(func(r *req) { r.version = "2014-01-01" }), 400, "InvalidVersionHeader"},
		{"no date", with(func(r *req) { r.noDate = true }), 400, "MissingDateHeader"},
		{"bad date", with(func(r *req) { r.date = "yesterday" }), 400, "InvalidDateHeader"},
		{"date 16 minutes old", with(func(r *req) { r.date = newClock().Now().Add(-16 * time.Minute).Format(http.TimeFormat) }), 408, "TimeExpired"},
		{"date 16 minutes ahead", with(func(r *req) { r.date = newClock().Now().Add(16 * time.Minute).Format(http.TimeFormat) }), 408, "TimeExpired"},
		{"no authorization", with(func(r *req) { r.auth = "-" }), 400, "MissingAuthorizationHeader"},
		{"malformed authorization", with(func(r *req) { r.auth = "Basic abc" }), 400, "InvalidAuthorizationHeader"},
		{"unknown key", with(func(r *req) { r.id, r.secret = "nobody", "sk" }), 403, "InvalidAccessKeyId"},
		{"wrong secret", with(func(r *req) { r.id, r.secret = "ak", "wrong" }), 403, "SignatureDoesNotMatch"},
		{"bad content type", with(func(r *req) { r.ctype = "application/json" }), 400, "InvalidContentType"},
		{"wrong content-md5", with(func(r *req) { r.extra = map[string]string{"Content-MD5": "AAAA"} }), 400, "InvalidDegist"},
	})
	// 14 minutes of skew is inside the window.
	v := newEnv(t, Config{Queues: []string{"q1"}})
	if st, _, b := v.do(with(func(r *req) { r.date = newClock().Now().Add(-14 * time.Minute).Format(http.TimeFormat) })); st != 201 {
		t.Errorf("14 minutes skew: %d %s", st, b)
	}
}

func TestLimitsAndErrors(t *testing.T) {
	msgs := func(n int, body string) string {
		return `<Messages xmlns="` + xmlNS + `">` + strings.Repeat("<Message><MessageBody>"+body+"</MessageBody></Message>", n) + "</Messages>"
	}
	one := func(inner string) string { return `<Message xmlns="` + xmlNS + `">` + inner + "</Message>" }
	big := strings.Repeat("A", 65537)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"body over 64 KB", "POST", "/queues/q1/messages", one("<MessageBody>" + big + "</MessageBody>"), 400, "InvalidArgument"},
		{"17 in a batch", "POST", "/queues/q1/messages", msgs(17, "x"), 400, "InvalidArgument"},
		{"batch over 64 KB", "POST", "/queues/q1/messages", msgs(2, strings.Repeat("B", 40000)), 400, "InvalidArgument"},
		{"empty batch", "POST", "/queues/q1/messages", `<Messages xmlns="` + xmlNS + `"></Messages>`, 400, "InvalidArgument"},
		{"negative delay", "POST", "/queues/q1/messages", one("<MessageBody>x</MessageBody><DelaySeconds>-1</DelaySeconds>"), 400, "InvalidArgument"},
		{"delay over 7 days", "POST", "/queues/q1/messages", one("<MessageBody>x</MessageBody><DelaySeconds>604801</DelaySeconds>"), 400, "InvalidArgument"},
		{"priority 0", "POST", "/queues/q1/messages", one("<MessageBody>x</MessageBody><Priority>0</Priority>"), 400, "InvalidArgument"},
		{"priority 17", "POST", "/queues/q1/messages", one("<MessageBody>x</MessageBody><Priority>17</Priority>"), 400, "InvalidArgument"},
		{"no body element", "POST", "/queues/q1/messages", one("<Priority>3</Priority>"), 400, "InvalidArgument"},
		{"malformed xml", "POST", "/queues/q1/messages", "<Message><MessageBody>x</Message>", 400, "MalformedXML"},
		{"foreign namespace", "POST", "/queues/q1/messages", `<Message xmlns="urn:other"><MessageBody>x</MessageBody></Message>`, 400, "MalformedXML"},
		{"queue not exist", "POST", "/queues/nope/messages", one("<MessageBody>x</MessageBody>"), 404, "QueueNotExist"},
		{"invalid queue name", "POST", "/queues/bad_name/messages", one("<MessageBody>x</MessageBody>"), 400, "InvalidQueueName"},
		{"queue name too long", "GET", "/queues/" + strings.Repeat("q", 121), "", 400, "QueueNameLengthError"},
		{"tag of 17", "POST", "/topics/t1/messages", one("<MessageBody>x</MessageBody><MessageTag>" + strings.Repeat("t", 17) + "</MessageTag>"), 400, "InvalidArgument"},
		{"topic body over 64 KB", "POST", "/topics/t1/messages", one("<MessageBody>" + big + "</MessageBody>"), 400, "InvalidArgument"},
		{"topic not exist", "POST", "/topics/nope/messages", one("<MessageBody>x</MessageBody>"), 404, "TopicNotExist"},
		{"get missing queue", "GET", "/queues/nope", "", 404, "QueueNotExist"},
		{"get missing topic", "GET", "/topics/nope", "", 404, "TopicNotExist"},
		{"receive empty", "GET", "/queues/q1/messages?waitseconds=0", "", 404, "MessageNotExist"},
		{"waitseconds 31", "GET", "/queues/q1/messages?waitseconds=31", "", 400, "InvalidArgument"},
		{"numOfMessages 17", "GET", "/queues/q1/messages?numOfMessages=17", "", 400, "InvalidArgument"},
		{"delete without handle", "DELETE", "/queues/q1/messages", "", 400, "MissingReceiptHandle"},
		{"delete bad handle", "DELETE", "/queues/q1/messages?ReceiptHandle=zzz", "", 400, "ReceiptHandleError"},
		{"delete unknown handle", "DELETE", "/queues/q1/messages?ReceiptHandle=1-abc", "", 404, "MessageNotExist"},
		{"unknown url", "GET", "/accounts", "", 400, "InvalidRequestURL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newEnv(t, Config{Queues: []string{"q1"}, Topics: []string{"t1"}})
			ct := ""
			if tt.body != "" {
				ct = "text/xml"
			}
			st, _, b := v.do(req{method: tt.method, path: tt.path, body: tt.body, ctype: ct})
			v.wantError(st, b, tt.status, tt.code)
			if n := len(v.e.Messages("q1")) + len(v.e.Published("t1")); n != 0 {
				t.Errorf("%d messages stored by a refused request", n)
			}
			if v.e.Stats().Errors[tt.code] != 1 {
				t.Errorf("Stats().Errors = %v", v.e.Stats().Errors)
			}
		})
	}
	// Exactly at the limits is fine.
	v := newEnv(t, Config{Queues: []string{"q1"}})
	for _, body := range []string{one("<MessageBody>" + big[1:] + "</MessageBody><Priority>16</Priority><DelaySeconds>604800</DelaySeconds>"), msgs(16, "x"), msgs(2, strings.Repeat("B", 32768))} {
		if st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: body, ctype: "text/xml"}); st != 201 {
			t.Errorf("at the limit: %d %.200s", st, b)
		}
	}
}

func TestReceiveAndDelete(t *testing.T) {
	v := newEnv(t, Config{AutoCreate: true})
	send := func(body string, prio int) {
		t.Helper()
		b := fmt.Sprintf(`<Message xmlns="%s"><MessageBody>%s</MessageBody><Priority>%d</Priority></Message>`, xmlNS, body, prio)
		if st, _, rb := v.do(req{method: "POST", path: "/queues/q2/messages", body: b, ctype: "text/xml"}); st != 201 {
			t.Fatalf("send: %d %s", st, rb)
		}
	}
	send("low", 10)
	send("high", 1)
	send("mid", 5)

	// Peek changes nothing and shows no receipt handle.
	st, _, b := v.do(req{method: "GET", path: "/queues/q2/messages?peekonly=true"})
	var m xmlMsg
	if st != 200 || xml.Unmarshal(b, &m) != nil || m.MessageBody != "high" || m.ReceiptHandle != "" {
		t.Fatalf("peek: %d %s", st, b)
	}
	// ReceiveMessage: highest priority first.
	st, _, b = v.do(req{method: "GET", path: "/queues/q2/messages?waitseconds=1"})
	if st != 200 || xml.Unmarshal(b, &m) != nil || m.MessageBody != "high" || m.DequeueCount != 1 || m.ReceiptHandle == "" || m.MessageBodyMD5 != md5Upper("high") {
		t.Fatalf("receive: %d %s", st, b)
	}
	// BatchReceiveMessage takes the other two, in priority order.
	st, _, b = v.do(req{method: "GET", path: "/queues/q2/messages?numOfMessages=16&waitseconds=0"})
	var ms xmlMsgs
	if st != 200 || xml.Unmarshal(b, &ms) != nil || len(ms.Msgs) != 2 || ms.Msgs[0].MessageBody != "mid" || ms.Msgs[1].MessageBody != "low" {
		t.Fatalf("batch receive: %d %s", st, b)
	}
	// All in flight: nothing to receive.
	st, _, b = v.do(req{method: "GET", path: "/queues/q2/messages?waitseconds=0"})
	v.wantError(st, b, 404, "MessageNotExist")

	// Delete the first; the queue keeps the other two.
	st, _, b = v.do(req{method: "DELETE", path: "/queues/q2/messages?ReceiptHandle=" + m.ReceiptHandle})
	if st != 204 {
		t.Fatalf("delete: %d %s", st, b)
	}
	st, _, b = v.do(req{method: "DELETE", path: "/queues/q2/messages?ReceiptHandle=" + m.ReceiptHandle})
	v.wantError(st, b, 404, "MessageNotExist")
	if got := v.e.Messages("q2"); len(got) != 2 {
		t.Errorf("after delete %d messages", len(got))
	}
	// After the visibility timeout (30 s) the in-flight messages return,
	// with a new dequeue count.
	v.clk.Add(31 * time.Second)
	st, _, b = v.do(req{method: "GET", path: "/queues/q2/messages?numOfMessages=16"})
	ms = xmlMsgs{}
	if st != 200 || xml.Unmarshal(b, &ms) != nil || len(ms.Msgs) != 2 || ms.Msgs[0].DequeueCount != 2 {
		t.Fatalf("after visibility timeout: %d %s", st, b)
	}
	s := v.e.Stats()
	if s.Sent != 3 || s.Received != 5 || s.Deleted != 1 {
		t.Errorf("stats %+v", s)
	}
}

// A long poll returns the message sent while it waits.
func TestReceiveLongPoll(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}})
	type result struct {
		st int
		b  []byte
	}
	got := make(chan result, 1)
	go func() {
		st, _, b := v.do(req{method: "GET", path: "/queues/q1/messages?waitseconds=30"})
		got <- result{st, b}
	}()
	// Send only once the poll is waiting (it has counted as a request).
	for v.e.Stats().Requests < 1 {
		time.Sleep(time.Millisecond)
	}
	if st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: "<Message><MessageBody>late</MessageBody></Message>", ctype: "text/xml"}); st != 201 {
		t.Fatalf("send: %d %s", st, b)
	}
	r := <-got
	var m xmlMsg
	if r.st != 200 || xml.Unmarshal(r.b, &m) != nil || m.MessageBody != "late" {
		t.Fatalf("long poll: %d %s", r.st, r.b)
	}
}

func TestDelayedMessage(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}})
	st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: "<Message><MessageBody>d</MessageBody><DelaySeconds>60</DelaySeconds></Message>", ctype: "text/xml"})
	var m xmlMsg
	if st != 201 || xml.Unmarshal(b, &m) != nil || m.ReceiptHandle == "" {
		t.Fatalf("delayed send: %d %s", st, b)
	}
	st, _, b = v.do(req{method: "GET", path: "/queues/q1/messages"})
	v.wantError(st, b, 404, "MessageNotExist")
	v.clk.Add(61 * time.Second)
	if st, _, b = v.do(req{method: "GET", path: "/queues/q1/messages"}); st != 200 {
		t.Errorf("after the delay: %d %s", st, b)
	}
}

func TestCreateAndAttributes(t *testing.T) {
	v := newEnv(t, Config{})
	qbody := `<?xml version="1.0" encoding="UTF-8"?><Queue xmlns="` + xmlNS + `"><VisibilityTimeout>60</VisibilityTimeout><PollingWaitSeconds>5</PollingWaitSeconds></Queue>`
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"create queue", "PUT", "/queues/q9", qbody, 201, ""},
		{"same again", "PUT", "/queues/q9", qbody, 204, ""},
		{"different attributes", "PUT", "/queues/q9", `<Queue><VisibilityTimeout>61</VisibilityTimeout></Queue>`, 409, "QueueAlreadyExist"},
		{"bad attribute", "PUT", "/queues/q10", `<Queue><PollingWaitSeconds>31</PollingWaitSeconds></Queue>`, 400, "InvalidArgument"},
		{"set attributes", "PUT", "/queues/q9?metaoverride=true", `<Queue><DelaySeconds>3</DelaySeconds></Queue>`, 204, ""},
		{"create topic", "PUT", "/topics/t9", `<Topic xmlns="` + xmlNS + `"><MaximumMessageSize>2048</MaximumMessageSize></Topic>`, 201, ""},
		{"topic again", "PUT", "/topics/t9", `<Topic xmlns="` + xmlNS + `"><MaximumMessageSize>2048</MaximumMessageSize></Topic>`, 204, ""},
		{"topic differs", "PUT", "/topics/t9", `<Topic/>`, 409, "TopicAlreadyExist"},
	}
	for _, tt := range tests {
		st, h, b := v.do(req{method: tt.method, path: tt.path, body: tt.body, ctype: "text/xml;charset=UTF-8"})
		if tt.code != "" {
			v.wantError(st, b, tt.status, tt.code)
			continue
		}
		if st != tt.status {
			t.Errorf("%s: %d %s", tt.name, st, b)
		}
		if st == 201 && !strings.HasSuffix(h.Get("Location"), tt.path) {
			t.Errorf("%s: Location %q", tt.name, h.Get("Location"))
		}
	}
	st, _, b := v.do(req{method: "GET", path: "/queues/q9"})
	var qa struct {
		QueueName                                                  string
		VisibilityTimeout, PollingWaitSeconds, DelaySeconds        int
		MaximumMessageSize, MessageRetentionPeriod, ActiveMessages int
		LoggingEnabled                                             bool
	}
	if st != 200 || xml.Unmarshal(b, &qa) != nil || qa.QueueName != "q9" || qa.VisibilityTimeout != 60 ||
		qa.PollingWaitSeconds != 5 || qa.DelaySeconds != 3 || qa.MaximumMessageSize != 65536 {
		t.Errorf("GetQueueAttributes: %d %s", st, b)
	}
	st, _, b = v.do(req{method: "GET", path: "/topics/t9"})
	var ta struct {
		TopicName          string
		MaximumMessageSize int
		MessageCount       int
	}
	if st != 200 || xml.Unmarshal(b, &ta) != nil || ta.TopicName != "t9" || ta.MaximumMessageSize != 2048 {
		t.Errorf("GetTopicAttributes: %d %s", st, b)
	}
	// The topic's smaller size limit applies.
	st, _, b = v.do(req{method: "POST", path: "/topics/t9/messages", body: "<Message><MessageBody>" + strings.Repeat("x", 2049) + "</MessageBody></Message>", ctype: "text/xml"})
	v.wantError(st, b, 400, "InvalidArgument")
}

func TestFaultThrottle(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}, Faults: Faults{ThrottleRate: 20}})
	batch := `<Messages>` + strings.Repeat("<Message><MessageBody>x</MessageBody></Message>", 16) + `</Messages>`
	send := func() (int, []byte) {
		st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: batch, ctype: "text/xml"})
		return st, b
	}
	if st, b := send(); st != 201 {
		t.Fatalf("first batch: %d %s", st, b)
	}
	// 16 more messages within the same second exceed 20/s.
	st, b := send()
	v.wantError(st, b, 429, "TooManyRequests")
	// One second later the bucket has refilled.
	v.clk.Add(time.Second)
	if st, b := send(); st != 201 {
		t.Fatalf("after a second: %d %s", st, b)
	}
	if s := v.e.Stats(); s.Throttled != 1 || s.Sent != 32 {
		t.Errorf("stats %+v", s)
	}
	// Throttling off at run time.
	v.e.SetFaults(Faults{})
	if st, b := send(); st != 201 {
		t.Fatalf("throttling off: %d %s", st, b)
	}
}

func TestFaultErrorRate(t *testing.T) {
	for _, status := range []int{500, 503} {
		code := map[int]string{500: "InternalError", 503: "ServiceUnavailable"}[status]
		v := newEnv(t, Config{Queues: []string{"q1"}, Faults: Faults{ErrorRate: 1, ErrorStatus: status}})
		st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: "<Message><MessageBody>x</MessageBody></Message>", ctype: "text/xml"})
		v.wantError(st, b, status, code)
		if len(v.e.Messages("q1")) != 0 || v.e.Stats().InjectedErrors != 1 {
			t.Errorf("status %d: stored %d, stats %+v", status, len(v.e.Messages("q1")), v.e.Stats())
		}
	}
	// A rate of one half fails some of many requests, not all and not none.
	v := newEnv(t, Config{Queues: []string{"q1"}, Seed: 7, Faults: Faults{ErrorRate: 0.5}})
	ok := 0
	for range 40 {
		if st, _, _ := v.do(req{method: "GET", path: "/queues/q1"}); st == 200 {
			ok++
		}
	}
	if ok == 0 || ok == 40 {
		t.Errorf("error rate 0.5: %d of 40 succeeded", ok)
	}
}

func TestFaultPartialBatch(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}, Faults: Faults{FailMessage: func(q string, i int, body string) bool { return body == "bad" }}})
	batch := `<Messages xmlns="` + xmlNS + `"><Message><MessageBody>good1</MessageBody></Message><Message><MessageBody>bad</MessageBody></Message><Message><MessageBody>good2</MessageBody></Message></Messages>`
	st, _, b := v.do(req{method: "POST", path: "/queues/q1/messages", body: batch, ctype: "text/xml"})
	var ms xmlMsgs
	if st != 500 || xml.Unmarshal(b, &ms) != nil || len(ms.Msgs) != 3 {
		t.Fatalf("partial failure: %d %s", st, b)
	}
	if ms.Msgs[0].MessageBodyMD5 != md5Upper("good1") || ms.Msgs[1].ErrorCode != "InternalError" || ms.Msgs[1].MessageId != "" || ms.Msgs[2].MessageBodyMD5 != md5Upper("good2") {
		t.Errorf("entries %+v", ms.Msgs)
	}
	got := v.e.Messages("q1")
	if len(got) != 2 || got[0].Body != "good1" || got[1].Body != "good2" {
		t.Errorf("stored %+v", got)
	}
	if s := v.e.Stats(); s.PartialFailures != 1 || s.Sent != 2 {
		t.Errorf("stats %+v", s)
	}
	// Rate 1: every message fails, the reply is still <Messages>.
	v.e.SetFaults(Faults{PartialFailureRate: 1})
	st, _, b = v.do(req{method: "POST", path: "/queues/q1/messages", body: batch, ctype: "text/xml"})
	if st != 500 || !strings.Contains(string(b), "<Messages") || strings.Count(string(b), "<ErrorCode>") != 3 {
		t.Errorf("all failed: %d %s", st, b)
	}
}

func TestFaultLatencyServes(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}, Faults: Faults{Latency: time.Millisecond, Jitter: time.Millisecond}})
	if st, _, b := v.do(req{method: "GET", path: "/queues/q1"}); st != 200 {
		t.Errorf("with latency: %d %s", st, b)
	}
}

func TestReset(t *testing.T) {
	v := newEnv(t, Config{Queues: []string{"q1"}, AutoCreate: true})
	v.do(req{method: "POST", path: "/queues/other/messages", body: "<Message><MessageBody>x</MessageBody></Message>", ctype: "text/xml"})
	v.e.Reset()
	if v.e.Messages("other") != nil || v.e.Messages("q1") == nil || v.e.Stats().Requests != 0 {
		t.Errorf("after Reset: %v %v %+v", v.e.Messages("other"), v.e.Messages("q1"), v.e.Stats())
	}
}

func TestStoredMessageDecodedBody(t *testing.T) {
	m := StoredMessage{Body: base64.StdEncoding.EncodeToString([]byte{0, 1, 0xff})}
	if b, err := m.DecodedBody(); err != nil || !bytes.Equal(b, []byte{0, 1, 0xff}) {
		t.Errorf("DecodedBody = %v, %v", b, err)
	}
}

// TestDenyActions: Config.Deny answers the listed actions with 403
// AccessDenied, as MNS does for a RAM user whose policy lacks them, for every
// queue or topic or for the one named; a queue POST is SendMessage or
// BatchSendMessage by its body. Nothing is stored by a refused request.
func TestDenyActions(t *testing.T) {
	one := `<Message xmlns="` + xmlNS + `"><MessageBody>x</MessageBody></Message>`
	batch := `<Messages xmlns="` + xmlNS + `">` + "<Message><MessageBody>x</MessageBody></Message></Messages>"
	v := newEnv(t, Config{Queues: []string{"q1", "dlq"}, Topics: []string{"t1"},
		Deny: []string{"GetQueueAttributes", "BatchSendMessage:dlq", "PublishMessage"}})
	tests := []struct {
		name, method, path, body string
		denied                   bool
	}{
		{"queue attributes", "GET", "/queues/q1", "", true},
		{"topic attributes", "GET", "/topics/t1", "", false},
		{"batch to q1", "POST", "/queues/q1/messages", batch, false},
		{"batch to dlq", "POST", "/queues/dlq/messages", batch, true},
		{"one to dlq", "POST", "/queues/dlq/messages", one, false},
		{"publish", "POST", "/topics/t1/messages", one, true},
	}
	for _, tt := range tests {
		ct := ""
		if tt.body != "" {
			ct = "text/xml"
		}
		st, _, b := v.do(req{method: tt.method, path: tt.path, body: tt.body, ctype: ct})
		if tt.denied {
			v.wantError(st, b, 403, "AccessDenied")
			if !strings.Contains(string(b), "no permission for ") {
				t.Errorf("%s: the message does not name the action: %s", tt.name, b)
			}
		} else if st >= 300 {
			t.Errorf("%s: %d %s, want it allowed", tt.name, st, b)
		}
	}
	if n, p := len(v.e.Messages("q1")), len(v.e.Messages("dlq")); n != 1 || p != 1 || len(v.e.Published("t1")) != 0 {
		t.Errorf("stored q1 %d, dlq %d, t1 %d; want 1, 1 (the single SendMessage), 0", n, p, len(v.e.Published("t1")))
	}
}
