package mns

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

type clock = testclock.Clock

type fixture struct {
	c   *Client
	emu *mnsemu.Emulator
	srv *httptest.Server
	clk *clock
}

// newFixture starts an emulator with queue q1 and topic t1 and a client
// for it; both share one settable clock.
func newFixture(t *testing.T, ecfg mnsemu.Config, mod func(*Config)) *fixture {
	t.Helper()
	clk := testclock.New(time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC))
	if ecfg.AccessKeys == nil {
		ecfg.AccessKeys = map[string]string{"ak": "secret-sk"}
	}
	ecfg.Queues = append(ecfg.Queues, "q1")
	ecfg.Topics = append(ecfg.Topics, "t1")
	ecfg.Now = clk.Now
	emu := mnsemu.New(ecfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	cfg := Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "secret-sk", Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	c, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, emu: emu, srv: srv, clk: clk}
}

func TestNewClientValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error
	}{
		{"empty", Config{}, []string{"Config.Endpoint: required", "Config.AccessKeyID", "Config.AccessKeySecret"}},
		{"no scheme", Config{Endpoint: "123.mns.cn-hangzhou.aliyuncs.com", AccessKeyID: "a", AccessKeySecret: "s"}, []string{"Config.Endpoint", "scheme"}},
		{"ftp", Config{Endpoint: "ftp://h", AccessKeyID: "a", AccessKeySecret: "s"}, []string{"Config.Endpoint"}},
		{"path", Config{Endpoint: "https://h/queues", AccessKeyID: "a", AccessKeySecret: "s"}, []string{"Config.Endpoint", "path"}},
		{"user info", Config{Endpoint: "https://u:p@h", AccessKeyID: "a", AccessKeySecret: "s"}, []string{"Config.Endpoint", "user info"}},
		{"bad port", Config{Endpoint: "http://h:99999", AccessKeyID: "a", AccessKeySecret: "s"}, []string{"Config.Endpoint", "port"}},
		{"encoding", Config{Endpoint: "https://h", AccessKeyID: "a", AccessKeySecret: "s", BodyEncoding: "hex"}, []string{"Config.BodyEncoding"}},
		{"negative timeout", Config{Endpoint: "https://h", AccessKeyID: "a", AccessKeySecret: "s", Timeout: -1}, []string{"Config.Timeout: -1ns is negative"}},
		{"negative pool", Config{Endpoint: "https://h", AccessKeyID: "a", AccessKeySecret: "s", MaxConns: -1}, []string{"Config.MaxConns: must be at least 1, got -1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newClient(tt.cfg)
			errtext.Want(t, "NewClient", err, tt.want, "secret-value")
		})
	}
	for _, ep := range []string{
		"https://1234567890123456.mns.cn-hangzhou.aliyuncs.com",
		"http://1234567890123456.mns.cn-hangzhou-internal.aliyuncs.com/",
		"http://1234567890123456.mns.cn-hangzhou-internal-vpc.aliyuncs.com",
		"http://127.0.0.1:8080",
	} {
		if _, err := newClient(Config{Endpoint: ep, Credentials: func(context.Context) (string, string, string, error) { return "a", "s", "", nil }}); err != nil {
			t.Errorf("%s: %v", ep, err)
		}
	}
}

// TestNewClientTakesConfigAsGiven: the client has no defaults of its own
// for the settings the config owns: a zero Timeout or MaxConns and an empty
// BodyEncoding or SignatureVersion are refused, each naming its Field as
// Names calls it (nil Names: "Config.<Field>"). Names reach the texts of
// the requests too.
func TestNewClientTakesConfigAsGiven(t *testing.T) {
	_, err := NewClient(Config{Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", AccessKeySecret: "s"})
	errtext.Want(t, "zero settings", err, []string{
		"Config.Timeout: must be positive, got 0s",
		"Config.MaxConns: must be at least 1, got 0",
		`Config.BodyEncoding: "" is neither base64 nor raw`,
		`Config.SignatureVersion: "" is neither v2 nor v4`,
	})
	named := Names{FieldTimeout: "the timeout key", FieldMaxConns: "the pool key", FieldEndpoint: "the endpoint key"}
	_, err = NewClient(Config{Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", AccessKeySecret: "s",
		BodyEncoding: "base64", SignatureVersion: "v2", Names: named})
	errtext.Want(t, "named", err, []string{"the timeout key: must be positive", "the pool key: must be at least 1"})

	c, err := newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s", Names: named,
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	errtext.Want(t, "no reply", err, []string{"no reply from MNS; check the endpoint key (scheme, host and port)"})
}

// TestHTTPSEndpointOfAPlainHTTPServer: an https:// endpoint whose server
// speaks plain HTTP (the emulator; an internal endpoint, which is http
// only) says to write http://; before, it said "check the endpoint key
// (scheme, host and port) and the network: ... tls: first record does not
// look like a TLS handshake".
func TestHTTPSEndpointOfAPlainHTTPServer(t *testing.T) {
	srv := httptest.NewServer(mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"a": "s"}, Queues: []string{"q1"}}))
	t.Cleanup(srv.Close)
	c, err := newClient(Config{Endpoint: "https://" + srv.Listener.Addr().String(), AccessKeyID: "a", AccessKeySecret: "s",
		Names: Names{FieldEndpoint: "the endpoint key"}, Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	errtext.Want(t, "https to plain HTTP", err, []string{"no reply from MNS; the server at the endpoint key does not speak TLS: write the endpoint with http://"})
	if !bridge.Retryable(err) {
		t.Errorf("%v: not retryable (the endpoint may be fixed by a reload)", err)
	}
}

func TestSendMessageEncodings(t *testing.T) {
	tests := []struct {
		enc      string
		body     []byte
		wantText string
	}{
		{"base64", []byte{0, 1, 2, 0xff, '<'}, base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff, '<'})},
		{"", []byte("hello"), base64.StdEncoding.EncodeToString([]byte("hello"))},
		{"raw", []byte("a<b>&c\r\nd\t\"e' 设备"), "a<b>&c\r\nd\t\"e' 设备"},
		{"raw", []byte{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.enc, func(t *testing.T) {
			f := newFixture(t, mnsemu.Config{}, func(c *Config) { c.BodyEncoding = tt.enc })
			res, err := f.c.SendMessage(context.Background(), "q1", tt.body)
			if err != nil {
				t.Fatal(err)
			}
			got := f.emu.Messages("q1")
			if len(got) != 1 || got[0].Body != tt.wantText || got[0].ID != res.MessageID || got[0].BodyMD5 != res.BodyMD5 {
				t.Errorf("stored %+v, result %+v, want body %q", got, res, tt.wantText)
			}
		})
	}
}

func TestRawBodyNotXMLText(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, func(c *Config) { c.BodyEncoding = "raw" })
	for _, body := range [][]byte{{'a', 0}, {0xff, 0xfe}, []byte("bell\a"), []byte("\uFFFE")} {
		_, err := f.c.SendMessage(context.Background(), "q1", body)
		if !errors.Is(err, ErrBodyNotXMLText) || bridge.Retryable(err) || !strings.Contains(err.Error(), "; use Config.BodyEncoding base64") {
			t.Errorf("body %q: err %v, want permanent ErrBodyNotXMLText, advising Config.BodyEncoding base64", body, err)
		}
	}
	if n := f.emu.Stats().Requests; n != 0 {
		t.Errorf("%d requests sent for bodies that cannot be sent", n)
	}
}

// wantOneRefused fails unless errs[bad] is a permanent error that is target
// and names "message "+label, and every other error is nil.
func wantOneRefused(t *testing.T, errs []error, bad int, target error, label string) {
	t.Helper()
	for i, err := range errs {
		if i != bad {
			if err != nil {
				t.Errorf("message %d: %v", i, err)
			}
			continue
		}
		if !errors.Is(err, target) || bridge.Retryable(err) || !strings.Contains(err.Error(), "message "+label) {
			t.Errorf("message %d: %v, want a permanent %q naming message %s", i, err, target, label)
		}
	}
}

func TestBatchSendSplitsAndLimits(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	var bodies [][]byte
	for i := range 40 {
		bodies = append(bodies, []byte{byte(i)})
	}
	// Three bodies of 22,668 base64 characters: two fit in 64 KB, the third
	// starts a new request. One body over the limit is refused alone.
	big := make([]byte, 17000)
	tooBig := make([]byte, 49153) // 65540 base64 characters
	bodies = append(bodies, big, big, big, tooBig, []byte("last"))
	res, errs := f.c.BatchSendMessage(context.Background(), "q1", bodies)
	if len(res) != len(bodies) || len(errs) != len(bodies) {
		t.Fatalf("got %d results, %d errors for %d bodies", len(res), len(errs), len(bodies))
	}
	wantOneRefused(t, errs, 43, ErrBodyTooLarge, "#43")
	// 40 small: 16+16+8 → the 8 share a request with big, big (64 KB) → a
	// new request: big, last.
	if n := f.emu.Stats().Requests; n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
	stored := f.emu.Messages("q1")
	if len(stored) != len(bodies)-1 {
		t.Fatalf("stored %d", len(stored))
	}
	k := 0
	for i, b := range bodies {
		if i == 43 {
			continue
		}
		if stored[k].Body != base64.StdEncoding.EncodeToString(b) || stored[k].ID != res[i].MessageID {
			t.Errorf("stored[%d] does not match body %d", k, i)
		}
		k++
	}
}

func TestPartialBatchFailureMapping(t *testing.T) {
	bad := base64.StdEncoding.EncodeToString([]byte("bad"))
	f := newFixture(t, mnsemu.Config{Faults: mnsemu.Faults{FailMessage: func(q string, i int, body string) bool { return body == bad }}}, nil)
	bodies := [][]byte{[]byte("ok0"), []byte("bad"), []byte("ok2"), []byte("bad"), []byte("ok4")}
	res, errs := f.c.BatchSendMessage(context.Background(), "q1", bodies)
	stored := f.emu.Messages("q1")
	if len(stored) != 3 {
		t.Fatalf("stored %d", len(stored))
	}
	k := 0
	for i, err := range errs {
		if string(bodies[i]) == "bad" {
			var me *Error
			if !errors.As(err, &me) || me.Code != "InternalError" || me.Item != "#"+string(rune('0'+i)) || !bridge.Retryable(err) {
				t.Errorf("message %d: %v, want retryable InternalError for #%d", i, err, i)
			}
			continue
		}
		if err != nil || res[i].MessageID != stored[k].ID {
			t.Errorf("message %d: %v, result %+v, stored %+v", i, err, res[i], stored[k])
		}
		k++
	}
}

// A 429 is retryable, and sending again once the rate allows succeeds.
func TestThrottledThenRetried(t *testing.T) {
	f := newFixture(t, mnsemu.Config{Faults: mnsemu.Faults{ThrottleRate: 16}}, nil)
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i] = []byte{byte(i)}
	}
	if _, errs := f.c.BatchSendMessage(context.Background(), "q1", bodies); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
	attempts := 0
	for {
		attempts++
		_, errs := f.c.BatchSendMessage(context.Background(), "q1", bodies)
		err := errs[0]
		if err == nil {
			break
		}
		var me *Error
		if !errors.As(err, &me) || me.Status != 429 || me.Code != "TooManyRequests" || !bridge.Retryable(err) {
			t.Fatalf("attempt %d: %v, want retryable 429 TooManyRequests", attempts, err)
		}
		if attempts > 3 {
			t.Fatal("still throttled after 3 attempts")
		}
		f.clk.Add(time.Second) // the backoff
	}
	if attempts != 2 || len(f.emu.Messages("q1")) != 32 || f.emu.Stats().Throttled != 1 {
		t.Errorf("attempts %d, stored %d, stats %+v", attempts, len(f.emu.Messages("q1")), f.emu.Stats())
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name      string
		ecfg      mnsemu.Config
		mod       func(*Config)
		queue     string
		retryable bool
		code      string
		mention   string
	}{
		{"queue missing", mnsemu.Config{}, nil, "nope", false, "QueueNotExist", "create queue nope in the MNS console, or fix the config key that names it (routes, default_route or delivery.dead_letter.queue)"},
		{"wrong secret", mnsemu.Config{}, func(c *Config) { c.AccessKeySecret = "wrong-secret" }, "q1", true, "SignatureDoesNotMatch", "check that Config.AccessKeySecret belongs to the access key id"},
		{"unknown key", mnsemu.Config{}, func(c *Config) { c.AccessKeyID = "other" }, "q1", true, "InvalidAccessKeyId", "check Config.AccessKeyID (is the key enabled, in this account?)"},
		{"token of another issue", mnsemu.Config{Authorize: func(string) (string, string, bool) { return "secret-sk", "issued-token", true }}, nil, "q1", true,
			"InvalidSecurityToken", "the security token is not the one issued with Config.AccessKeyID, or it expired"},
		{"v4 for another region", mnsemu.Config{Region: "cn-hangzhou"}, func(c *Config) { c.SignatureVersion, c.Region = "v4", "cn-shanghai" }, "q1", true, "SignatureDoesNotMatch", "Config.Region (cn-shanghai) is the region of Config.Endpoint: Config.SignatureVersion v4 signs for it"},
		// By how much and which way, from MNS's reply's Date (walk14 left
		// it): the emulator's clock is the fixture's, 01:00.
		{"clock off", mnsemu.Config{}, func(c *Config) { c.Now = func() time.Time { return time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC) } }, "q1", true, "TimeExpired",
			"this machine's clock is 1h0m0s behind MNS's (the request was dated Mon, 23 Nov 2026 00:00:00 GMT, MNS's reply Mon, 23 Nov 2026 01:00:00 GMT), " +
				"and MNS takes a request dated up to 15 minutes off; synchronise it (NTP)"},
		{"clock ahead", mnsemu.Config{}, func(c *Config) { c.Now = func() time.Time { return time.Date(2026, 11, 23, 1, 20, 0, 0, time.UTC) } }, "q1", true, "TimeExpired",
			"this machine's clock is 20m0s ahead of MNS's"},
		{"500", mnsemu.Config{Faults: mnsemu.Faults{ErrorRate: 1}}, nil, "q1", true, "InternalError", "retries"},
		{"503", mnsemu.Config{Faults: mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503}}, nil, "q1", true, "ServiceUnavailable", "503"},
		{"429", mnsemu.Config{Faults: mnsemu.Faults{ThrottleRate: 0.5}}, nil, "q1", true, "TooManyRequests", "throttling"},
		{"legacy QpsLimitExceeded (400)", mnsemu.Config{Faults: mnsemu.Faults{ThrottleRate: 0.5, ThrottleCode: "QpsLimitExceeded"}}, nil, "q1", true, "QpsLimitExceeded", "throttling"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.ecfg, tt.mod)
			bodies := make([][]byte, 17) // 429 case: more than the bucket holds
			for i := range bodies {
				bodies[i] = []byte("x")
			}
			_, errs := f.c.BatchSendMessage(context.Background(), tt.queue, bodies)
			err := errs[len(errs)-1]
			var me *Error
			if !errors.As(err, &me) || me.Code != tt.code || me.RequestID == "" || me.UserRequestID == "" {
				t.Fatalf("err = %v, want code %s with request id and user request id", err, tt.code)
			}
			if me.Throttled() != strings.Contains(tt.name, "429") && me.Throttled() != strings.Contains(tt.name, "Qps") {
				t.Errorf("Throttled() = %v", me.Throttled())
			}
			if !strings.Contains(err.Error(), "request id "+me.RequestID+", user request id "+me.UserRequestID) {
				t.Errorf("error %q does not name both request ids", err)
			}
			if bridge.Retryable(err) != tt.retryable {
				t.Errorf("Retryable = %v, want %v", bridge.Retryable(err), tt.retryable)
			}
			errtext.Want(t, "BatchSendMessage", err, []string{"BatchSendMessage", "queue " + tt.queue, tt.mention}, "secret-sk", "wrong-secret")
		})
	}
}

func TestNetworkErrorsRetryable(t *testing.T) {
	// A server that never answers: the per-request timeout applies.
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	defer hang.Close()
	defer close(block)
	c, err := newClient(Config{Endpoint: hang.URL, AccessKeyID: "a", AccessKeySecret: "s", Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if !errors.Is(err, context.DeadlineExceeded) || !bridge.Retryable(err) || !strings.Contains(err.Error(), "(Config.Timeout)") {
		t.Errorf("timeout: %v", err)
	}
	// Errors without a reply name the request's URL, as net/http's do: the
	// endpoint as the bridge used it (scheme, host, port), not only an
	// address or a bare "EOF".
	if want := `Post "` + hang.URL + `/queues/q1/messages": `; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("timeout: %v, want it naming %s", err, want)
	}
	// "No reply" is a type (the destination check tracks it as one state).
	if nr := (*NoReplyError)(nil); !errors.As(err, &nr) || !nr.Timeout {
		t.Errorf("timeout: %T %v, want a *NoReplyError with Timeout", err, err)
	}
	// The caller's cancel is reported as such.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.SendMessage(ctx, "q1", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// Nothing listening.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	c, _ = newClient(Config{Endpoint: url, AccessKeyID: "a", AccessKeySecret: "s"})
	if _, err := c.PublishMessage(context.Background(), "t1", []byte("x"), ""); err == nil || !bridge.Retryable(err) ||
		!strings.Contains(err.Error(), "check Config.Endpoint") || !strings.Contains(err.Error(), `Post "`+url+`/topics/t1/messages": `) {
		t.Errorf("connection refused: %v, want it retryable, naming Config.Endpoint and the request's URL", err)
	} else if nr := (*NoReplyError)(nil); !errors.As(err, &nr) || nr.Timeout {
		t.Errorf("connection refused: %T %v, want a *NoReplyError without Timeout", err, err)
	} else if want := "nothing accepts connections at " + strings.TrimPrefix(url, "http://") + " (connection refused"; !strings.Contains(err.Error(), want) {
		t.Errorf("connection refused: %v, want it to say %q", err, want)
	}
	// A non-MNS reply (a proxy's 502 page) is retryable and says so.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", 502)
	}))
	defer proxy.Close()
	c, _ = newClient(Config{Endpoint: proxy.URL, AccessKeyID: "a", AccessKeySecret: "s"})
	if _, err := c.SendMessage(context.Background(), "q1", []byte("x")); err == nil || !bridge.Retryable(err) || !strings.Contains(err.Error(), "bad gateway") {
		t.Errorf("proxy error: %v", err)
	}
}

func TestBodyMD5Mismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Message xmlns="http://mns.aliyuncs.com/doc/v1/"><MessageId>ID1</MessageId><MessageBodyMD5>00000000000000000000000000000000</MessageBodyMD5></Message>`))
	}))
	defer srv.Close()
	c, _ := newClient(Config{Endpoint: srv.URL, AccessKeyID: "a", AccessKeySecret: "s"})
	_, err := c.SendMessage(context.Background(), "q1", []byte("x"))
	if !errors.Is(err, ErrBodyMD5Mismatch) || !bridge.Retryable(err) {
		t.Errorf("err = %v, want retryable ErrBodyMD5Mismatch", err)
	}
}

// TestPublishRefusesTheTagsValidTagRefuses: the client publishes no tag
// that ValidTag, the rule the router applies to routes, refuses; it had
// its own check (length, and XML text only), so a tag with a tab or DEL
// went to MNS. Each is a permanent error and nothing is published.
func TestPublishRefusesTheTagsValidTagRefuses(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	for _, tag := range []string{strings.Repeat("t", 17), "pk\t1", "pk\x7f", "pk\uFFFE", "pk\xff"} {
		if ValidTag(tag) == nil {
			t.Fatalf("ValidTag(%q) = nil, want a reason", tag)
		}
		_, err := f.c.PublishMessage(context.Background(), "t1", []byte("x"), tag)
		if err == nil || bridge.Retryable(err) || !strings.Contains(err.Error(), "is not a valid MNS message tag") {
			t.Errorf("tag %q: err = %v, want a permanent error naming the tag rule", tag, err)
		}
	}
	if _, err := f.c.PublishMessage(context.Background(), "t1", []byte("x"), strings.Repeat("t", 17)); !errors.Is(err, ErrTagTooLong) {
		t.Errorf("a tag of 17 characters: %v, want ErrTagTooLong", err)
	}
	if p := f.emu.Published("t1"); len(p) != 0 {
		t.Errorf("published %d messages with invalid tags: %+v", len(p), p)
	}
}

func TestPublishMessage(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	res, err := f.c.PublishMessage(context.Background(), "t1", []byte("status"), "pk1<&>")
	if err != nil {
		t.Fatal(err)
	}
	p := f.emu.Published("t1")
	if len(p) != 1 || p[0].Tag != "pk1<&>" || p[0].ID != res.MessageID {
		t.Errorf("published %+v", p)
	}
	if b, _ := p[0].DecodedBody(); string(b) != "status" {
		t.Errorf("body %q", b)
	}
	_, err = f.c.PublishMessage(context.Background(), "t1", []byte("x"), strings.Repeat("t", 17))
	if !errors.Is(err, ErrTagTooLong) || bridge.Retryable(err) {
		t.Errorf("long tag: %v", err)
	}
	_, err = f.c.PublishMessage(context.Background(), "nope", []byte("x"), "")
	var me *Error
	if !errors.As(err, &me) || me.Code != "TopicNotExist" || bridge.Retryable(err) || !strings.Contains(err.Error(), "create topic nope") {
		t.Errorf("missing topic: %v", err)
	}
	_, err = f.c.PublishMessage(context.Background(), "bad_name", []byte("x"), "")
	if err == nil || bridge.Retryable(err) || f.emu.Stats().Requests != 2 {
		t.Errorf("invalid name: %v (requests %d)", err, f.emu.Stats().Requests)
	}
}

func TestGetAttributes(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	f.c.SendMessage(context.Background(), "q1", []byte("x"))
	qa, err := f.c.GetQueueAttributes(context.Background(), "q1")
	if err != nil || qa.QueueName != "q1" || qa.ActiveMessages != 1 || qa.MaximumMessageSize != 65536 || qa.VisibilityTimeout != 30 {
		t.Errorf("queue attributes %+v, %v", qa, err)
	}
	ta, err := f.c.GetTopicAttributes(context.Background(), "t1")
	if err != nil || ta.TopicName != "t1" || ta.MaximumMessageSize != 65536 {
		t.Errorf("topic attributes %+v, %v", ta, err)
	}
	_, err = f.c.GetQueueAttributes(context.Background(), "nope")
	var me *Error
	if !errors.As(err, &me) || me.Code != "QueueNotExist" || me.Status != 404 || me.HostID == "" {
		t.Errorf("missing queue: %v", err)
	}
}

// The security token travels in its header, unsigned; credentials from
// the func are read per request, so a rotation takes effect at once.
func TestCredentialsFuncAndToken(t *testing.T) {
	emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"ak1": "s1", "ak2": "s2"}, Queues: []string{"q1"}})
	var mu sync.Mutex
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tokens = append(tokens, r.Header.Get("security-token"))
		mu.Unlock()
		emu.ServeHTTP(w, r)
	}))
	defer srv.Close()
	id, secret, token := "ak1", "s1", "tok-1"
	c, err := newClient(Config{Endpoint: srv.URL, Credentials: func(context.Context) (string, string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		return id, secret, token, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(context.Background(), "q1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	id, secret, token = "ak2", "s2", "tok-2"
	mu.Unlock()
	if _, err := c.SendMessage(context.Background(), "q1", []byte("b")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) != 2 || tokens[0] != "tok-1" || tokens[1] != "tok-2" {
		t.Errorf("tokens %q", tokens)
	}
}

// Every request carries a fresh x-mns-user-request-id (signed under V2 and
// V4, so the emulator accepted it) and the bridge's User-Agent.
func TestUserRequestIDAndUserAgent(t *testing.T) {
	for _, sv := range []string{"v2", "v4"} {
		t.Run(sv, func(t *testing.T) {
			emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"ak": "sk"}, Queues: []string{"q1"}, Topics: []string{"t1"}, Region: "cn-hangzhou"})
			var mu sync.Mutex
			var ids, uas, auths []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				ids = append(ids, r.Header.Get("X-Mns-User-Request-Id"))
				uas = append(uas, r.Header.Get("User-Agent"))
				auths = append(auths, r.Header.Get("Authorization"))
				mu.Unlock()
				emu.ServeHTTP(w, r)
			}))
			defer srv.Close()
			c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk", Version: "v9.8.7",
				SignatureVersion: sv, Region: "cn-hangzhou"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := c.SendMessage(ctx, "q1", []byte("a")); err != nil {
				t.Fatal(err)
			}
			if _, errs := c.BatchSendMessage(ctx, "q1", [][]byte{[]byte("b"), []byte("c")}); errors.Join(errs...) != nil {
				t.Fatal(errors.Join(errs...))
			}
			if _, err := c.PublishMessage(ctx, "t1", []byte("d"), "tag"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.GetQueueAttributes(ctx, "q1"); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			gotIDs, uas, auths := append([]string(nil), ids...), append([]string(nil), uas...), append([]string(nil), auths...)
			mu.Unlock()
			seen := map[string]bool{}
			for i, id := range gotIDs {
				if len(id) != 32 || seen[id] {
					t.Errorf("request %d: user request id %q (empty, malformed or repeated)", i, id)
				}
				seen[id] = true
				if want := "iot-mns-bridge/v9.8.7 (go"; !strings.HasPrefix(uas[i], want) {
					t.Errorf("User-Agent %q, want prefix %q", uas[i], want)
				}
				if sv == "v4" && !strings.HasPrefix(auths[i], "MNS4-HMAC-SHA256 Credential=ak/") {
					t.Errorf("Authorization %q is not V4", auths[i])
				}
				if sv == "v2" && !strings.HasPrefix(auths[i], "MNS ak:") {
					t.Errorf("Authorization %q is not V2", auths[i])
				}
			}
			if len(gotIDs) != 4 || len(emu.Messages("q1")) != 3 {
				t.Errorf("%d requests, %d stored", len(gotIDs), len(emu.Messages("q1")))
			}
			// A refusal names both ids.
			_, err = c.SendMessage(ctx, "nope", []byte("x"))
			var me *Error
			mu.Lock()
			last := ids[len(ids)-1]
			mu.Unlock()
			if !errors.As(err, &me) || me.UserRequestID != last || !strings.Contains(err.Error(), me.UserRequestID) {
				t.Errorf("err %v: want the user request id %s", err, last)
			}
		})
	}
}

// V4 needs a region: from Config.Region, or from an endpoint of the
// documented form; a loopback endpoint without Region is refused naming it.
// A region the emulator does not serve is refused by it.
func TestV4Region(t *testing.T) {
	_, err := newClient(Config{Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", AccessKeySecret: "s", SignatureVersion: "v4"})
	if err == nil || !strings.Contains(err.Error(), "Config.Region: empty") {
		t.Errorf("loopback without region: %v", err)
	}
	c, err := newClient(Config{Endpoint: "https://123.mns.cn-shanghai-internal.aliyuncs.com", AccessKeyID: "a", AccessKeySecret: "s", SignatureVersion: "v4"})
	if err != nil || c.region != "cn-shanghai" {
		t.Errorf("derived region: %v %+v", err, c)
	}
	for _, bad := range []Config{
		{SignatureVersion: "v3"},
		{SignatureVersion: "v4", Region: "CN Hangzhou"},
	} {
		bad.Endpoint, bad.AccessKeyID, bad.AccessKeySecret = "http://127.0.0.1:1", "a", "s"
		if _, err := newClient(bad); err == nil || !strings.Contains(err.Error(), "Config.") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	f := newFixture(t, mnsemu.Config{Region: "cn-hangzhou"}, func(c *Config) { c.SignatureVersion, c.Region = "v4", "eu-west-1" })
	_, err = f.c.SendMessage(context.Background(), "q1", []byte("x"))
	var me *Error
	if !errors.As(err, &me) || me.Code != "SignatureDoesNotMatch" {
		t.Errorf("wrong region: %v", err)
	}
	f = newFixture(t, mnsemu.Config{Region: "cn-hangzhou"}, func(c *Config) { c.SignatureVersion, c.Region = "v4", "cn-hangzhou" })
	if _, err := f.c.SendMessage(context.Background(), "q1", []byte("x")); err != nil {
		t.Errorf("v4: %v", err)
	}
}

// Under V4 an STS token travels as today: security-token, unsigned (the
// emulator accepts the request; a changed token does not break the
// signature).
func TestV4WithSecurityToken(t *testing.T) {
	emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"STS.ak": "s1"}, Queues: []string{"q1"}, Region: "cn-hangzhou"})
	var mu sync.Mutex
	var tokens, auths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		tokens = append(tokens, r.Header.Get("security-token"))
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		emu.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, SignatureVersion: "v4", Region: "cn-hangzhou",
		Credentials: func(context.Context) (string, string, string, error) { return "STS.ak", "s1", "tok-1", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendMessage(context.Background(), "q1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) != 1 || tokens[0] != "tok-1" || !strings.HasPrefix(auths[0], "MNS4-HMAC-SHA256 Credential=STS.ak/") {
		t.Errorf("tokens %q, authorization %q", tokens, auths)
	}
}

// When the credentials cannot be had, the request is not sent and the error
// is retryable: the pipeline holds the messages.
func TestCredentialsFailureSendsNothingAndIsRetryable(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, Credentials: func(context.Context) (string, string, string, error) {
		return "", "", "", errors.New("credentials from uri expired at 2026-11-30T03:46:38Z and could not be refreshed")
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("a"))
	if err == nil || !strings.Contains(err.Error(), "could not be refreshed") || !bridge.Retryable(err) {
		t.Fatalf("got %v (retryable %v), want the credentials error, retryable", err, bridge.Retryable(err))
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent without credentials", n)
	}
}

// countingConn counts the socket writes of one connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestBatchRequestIsOneWrite: a batch of 16 messages of 256 bytes (about
// 6 KB of XML) leaves in one socket write, headers and body together.
func TestBatchRequestIsOneWrite(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	var writes atomic.Int64
	var d net.Dialer
	f.c.h1.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, writes: &writes}, nil
	}
	bodies := make([][]byte, 16)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{'a' + byte(i)}, 256)
	}
	for range 3 {
		_, errs := f.c.BatchSendMessage(context.Background(), "q1", bodies)
		for i, err := range errs {
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
	}
	if n := f.emu.Stats().Requests; n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	if n := writes.Load(); n != 3 {
		t.Fatalf("3 requests took %d socket writes, want one each", n)
	}
}

// newClient is NewClient for tests that do not care about every setting:
// given fills the rest.
func newClient(cfg Config) (*Client, error) { return NewClient(given(cfg)) }

// given fills the settings NewClient requires and cfg leaves zero with
// working values (those the client used to fill in itself, so that the
// tests run as they did): a 10 s request timeout, 64 connections, base64
// bodies and V2 signatures. It leaves every value cfg sets alone, so the
// tests of bad values still see theirs.
func given(cfg Config) Config {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 64
	}
	if cfg.BodyEncoding == "" {
		cfg.BodyEncoding = "base64"
	}
	if cfg.SignatureVersion == "" {
		cfg.SignatureVersion = "v2"
	}
	return cfg
}

// TestRefusedKeyIsReported: when MNS refuses the AccessKeyId or its security
// token (an STS triple expired by MNS's clock, or of another issue),
// Config.Refused hears the id the request was signed with, so the credentials
// cache can fetch a new triple; a permission refusal (AccessDenied) or a
// wrong secret is not such a refusal.
func TestRefusedKeyIsReported(t *testing.T) {
	var mu sync.Mutex
	var heard []string
	valid := map[string]bool{"STS.old": false, "STS.new": true}
	emu := mnsemu.New(mnsemu.Config{Queues: []string{"q1", "dlq"}, Deny: []string{"BatchSendMessage:dlq"},
		Authorize: func(id string) (string, string, bool) { return "s-" + id, "tok-" + id, valid[id] }})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	id, secret, token := "STS.old", "s-STS.old", "tok-STS.old"
	c, err := newClient(Config{Endpoint: srv.URL,
		Credentials: func(context.Context) (string, string, string, error) {
			mu.Lock()
			defer mu.Unlock()
			return id, secret, token, nil
		},
		Refused: func(id string) { mu.Lock(); heard = append(heard, id); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	send := func(queue string) error {
		_, errs := c.BatchSendMessage(context.Background(), queue, [][]byte{[]byte("x")})
		return errs[0]
	}
	for _, step := range []struct {
		name, id, secret, token, queue, code string
		heard                                []string
		says                                 string
	}{
		// Not 'is the key enabled, in this account?', which is said of a
		// permanent key (walk14: a box 10 minutes behind MNS, whose STS
		// triple had expired there 5 minutes before it did here).
		{"expired triple", "STS.old", "s-STS.old", "tok-STS.old", "q1", "InvalidAccessKeyId", []string{"STS.old"},
			"MNS does not know the temporary (STS) AccessKey ID: it expired by MNS's clock (is this machine's clock behind? sync it: NTP) or its issuer revoked it; the bridge fetches the credentials again"},
		{"token of another issue", "STS.new", "s-STS.new", "tok-STS.old", "q1", "InvalidSecurityToken", []string{"STS.old", "STS.new"}, "or it expired"},
		{"no permission", "STS.new", "s-STS.new", "tok-STS.new", "dlq", "AccessDenied", []string{"STS.old", "STS.new"}, "grant"},
		{"wrong secret", "STS.new", "wrong", "tok-STS.new", "q1", "SignatureDoesNotMatch", []string{"STS.old", "STS.new"}, "belongs to the access key id"},
	} {
		mu.Lock()
		id, secret, token = step.id, step.secret, step.token
		mu.Unlock()
		err := send(step.queue)
		var me *Error
		if !errors.As(err, &me) || me.Code != step.code {
			t.Fatalf("%s: %v, want %s", step.name, err, step.code)
		}
		if !strings.Contains(err.Error(), step.says) {
			t.Errorf("%s: %v\nwant it to say %q", step.name, err, step.says)
		}
		mu.Lock()
		if !slices.Equal(heard, step.heard) {
			t.Errorf("%s: Refused heard %v, want %v", step.name, heard, step.heard)
		}
		mu.Unlock()
	}
}

// TestAccessDeniedNamesThePermission: an AccessDenied error names the RAM
// action the refused request needs and the destination, so that an
// operator can fix the policy (it said "send/publish permission on this
// queue", for a lookup too).
func TestAccessDeniedNamesThePermission(t *testing.T) {
	emu := mnsemu.New(mnsemu.Config{Queues: []string{"q1"}, Topics: []string{"t1"},
		AccessKeys: map[string]string{"id": "secret"},
		Deny:       []string{"BatchSendMessage:q1", "PublishMessage:t1", "GetQueueAttributes:q1"}})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL,
		Credentials: func(context.Context) (string, string, string, error) { return "id", "secret", "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, errs := c.BatchSendMessage(ctx, "q1", [][]byte{[]byte("x")})
	_, perr := c.PublishMessage(ctx, "t1", []byte("x"), "")
	_, gerr := c.GetQueueAttributes(ctx, "q1")
	for _, c := range []struct {
		err  error
		want string
	}{
		{errs[0], "grant the AccessKey's RAM user mns:SendMessage and mns:BatchSendMessage on queue q1"},
		{perr, "grant the AccessKey's RAM user mns:PublishMessage on topic t1"},
		{gerr, "grant the AccessKey's RAM user mns:GetQueueAttributes on queue q1"},
	} {
		var me *Error
		if !errors.As(c.err, &me) || me.Code != "AccessDenied" || !me.Retryable() || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%v\nwant a retryable AccessDenied saying %q", c.err, c.want)
		}
	}
}

// TestTooLargeBodySaysWhatToDo: a body over the MNS limit is refused with
// what the operator can do. Base64 makes a body a third larger: a 50 KiB
// text body fits with body_encoding raw, and the reason says so; a 200 KiB
// one fits no way, and the reason says the device must send less (walked:
// both said only that the body was over the limit).
func TestTooLargeBodySaysWhatToDo(t *testing.T) {
	text := func(n int) []byte { return bytes.Repeat([]byte("t"), n) }
	for _, tc := range []struct {
		encoding string
		body     []byte
		want     string
	}{
		{"base64", text(50 << 10), "BodyEncoding raw sends a body of XML 1.0 text as it is"},
		{"base64", text(200 << 10), "the device must send less"},
		{"raw", text(200 << 10), "the device must send less"},
	} {
		f := newFixture(t, mnsemu.Config{}, func(c *Config) { c.BodyEncoding = tc.encoding })
		_, errs := f.c.BatchSendMessage(context.Background(), "q1", [][]byte{tc.body})
		wantOneRefused(t, errs, 0, ErrBodyTooLarge, "#0")
		if err := errs[0]; err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s, %d bytes: %v, want it to say %q", tc.encoding, len(tc.body), err, tc.want)
		}
		if err := errs[0]; tc.want != "the device must send less" && err != nil && strings.Contains(err.Error(), "the device must send less") {
			t.Errorf("%s, %d bytes: %v, which fits raw", tc.encoding, len(tc.body), err)
		}
	}
}

// deadlineOnly is a context whose deadline has passed while its Err is
// still nil: the instant between a socket deadline firing and the
// context's own timer.
type deadlineOnly struct {
	context.Context
	at time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.at, true }

// TestCallerDeadlineIsNotTheRequestTimeout: a request cut short by the
// caller's deadline (a destination check's 10 s for all its lookups) is
// reported as the caller's context error, not as "no reply within
// mns.request_timeout", also when the socket's deadline fired before the
// caller's context timer set its Err (seen under -race: a 50 ms check was
// said to have waited 10 s).
func TestCallerDeadlineIsNotTheRequestTimeout(t *testing.T) {
	c, err := newClient(Config{Endpoint: "http://127.0.0.1:1", AccessKeyID: "a", AccessKeySecret: "s", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tgt := target{op: "GetQueueAttributes", kind: "queue", name: "q1"}
	timedOut := fmt.Errorf("%w (read reply: i/o timeout)", errTimedOut)
	for _, tc := range []struct {
		name        string
		ctx         context.Context
		wantNoReply bool
	}{
		{"the request's own timeout", context.Background(), true},
		{"the caller's deadline, its timer not fired yet", deadlineOnly{context.Background(), time.Now().Add(-time.Millisecond)}, false},
		{"the caller's deadline to come", deadlineOnly{context.Background(), time.Now().Add(time.Hour)}, true},
	} {
		err := c.transportError(tc.ctx, tgt, reqIDs{user: "u1"}, timedOut)
		var nr *NoReplyError
		if got := errors.As(err, &nr); got != tc.wantNoReply || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v (a NoReplyError: %v), want NoReplyError %v and context.DeadlineExceeded", tc.name, err, got, tc.wantNoReply)
		}
		if !tc.wantNoReply && strings.Contains(err.Error(), "request_timeout") {
			t.Errorf("%s: %q blames the request's own timeout", tc.name, err)
		}
	}
}
