package aksignauth

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

const (
	akID     = "LTAItestid"
	akSecret = "test-secret-value"
)

var now = time.UnixMilli(1700000000000)

func signed(t *testing.T, mutate func(*iotauth.Params), at time.Time) iotauth.Credentials {
	t.Helper()
	p := iotauth.Params{
		ClientID:        "client-1",
		AccessKeyID:     akID,
		AccessKeySecret: akSecret,
		ConsumerGroupID: "DEFAULT_GROUP",
		SignMethod:      iotauth.HMACSHA1,
	}
	if mutate != nil {
		mutate(&p)
	}
	c, err := iotauth.Sign(p, at)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return c
}

func newHandler(t *testing.T, logs io.Writer, maxSkew time.Duration) *Handler {
	t.Helper()
	h, err := New(Config{
		Keys:    Keys{akID: akSecret},
		Logger:  slog.New(slog.NewTextHandler(logs, nil)),
		MaxSkew: maxSkew,
		Now:     func() time.Time { return now },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

// post sends form to path the way rabbitmq_auth_backend_http does with
// http_method = post, and returns the body.
func post(t *testing.T, h http.Handler, path string, form url.Values) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: status %d, want 200", path, rec.Code)
	}
	return rec.Body.String()
}

func TestUserDecisions(t *testing.T) {
	good := signed(t, nil, now)
	otherKey := signed(t, func(p *iotauth.Params) { p.AccessKeyID = "LTAIother" }, now)
	old := signed(t, nil, now.Add(-time.Hour))
	tests := []struct {
		name    string
		form    url.Values
		maxSkew time.Duration
		want    string
	}{
		{"aksign hmacsha1", url.Values{"username": {good.Username}, "password": {good.Password}}, 0, "allow"},
		{"aksign hmacmd5", creds(signed(t, func(p *iotauth.Params) { p.SignMethod = "HmacMD5" }, now)), 0, "allow"},
		{"aksign hmacsha256", creds(signed(t, func(p *iotauth.Params) { p.SignMethod = iotauth.HMACSHA256 }, now)), 0, "allow"},
		{"ststoken", creds(signed(t, func(p *iotauth.Params) { p.SecurityToken = "tok-123" }, now)), 0, "allow"},
		{"ststoken with the token changed", url.Values{
			"username": {strings.Replace(signed(t, func(p *iotauth.Params) { p.SecurityToken = "tok-123" }, now).Username, "tok-123", "tok-999", 1)},
			"password": {signed(t, func(p *iotauth.Params) { p.SecurityToken = "tok-123" }, now).Password},
		}, 0, "deny"},
		{"with iotInstanceId and encode", creds(signed(t, func(p *iotauth.Params) { p.IotInstanceID = "iot-1"; p.EncodeBase64 = true }, now)), 0, "allow"},
		{"wrong password", url.Values{"username": {good.Username}, "password": {"AAAA"}}, 0, "deny"},
		{"empty password", url.Values{"username": {good.Username}, "password": {""}}, 0, "deny"},
		{"unknown AccessKey", creds(otherKey), 0, "deny"},
		{"not a platform username", url.Values{"username": {"guest"}, "password": {"guest"}}, 0, "deny"},
		{"no password field, known user (amqp1_0 re-check)", url.Values{"username": {good.Username}}, 0, "allow"},
		{"no password field, unknown AccessKey", url.Values{"username": {otherKey.Username}}, 0, "deny"},
		{"no password field, not a platform username", url.Values{"username": {"guest"}}, 0, "deny"},
		{"old timestamp, skew check off", creds(old), 0, "allow"},
		{"old timestamp, skew check on", creds(old), time.Minute, "deny"},
		{"fresh timestamp, skew check on", creds(good), time.Minute, "allow"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(t, io.Discard, tc.maxSkew)
			if got := post(t, h, "/auth/user", tc.form); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func creds(c iotauth.Credentials) url.Values {
	return url.Values{"username": {c.Username}, "password": {c.Password}}
}

func TestPermissionDecisions(t *testing.T) {
	good := signed(t, nil, now)
	other := signed(t, func(p *iotauth.Params) { p.AccessKeyID = "LTAIother" }, now)
	h := newHandler(t, io.Discard, 0)
	tests := []struct {
		path     string
		username string
		extra    url.Values
		want     string
	}{
		{"/auth/vhost", good.Username, url.Values{"vhost": {"/"}, "ip": {"127.0.0.1"}}, "allow"},
		{"/auth/resource", good.Username, url.Values{"vhost": {"/"}, "resource": {"queue"}, "name": {"q"}, "permission": {"configure"}}, "allow"},
		{"/auth/topic", good.Username, url.Values{"vhost": {"/"}, "resource": {"topic"}, "name": {"amq.topic"}, "permission": {"read"}, "routing_key": {"#"}}, "allow"},
		{"/auth/vhost", other.Username, url.Values{"vhost": {"/"}}, "deny"},
		{"/auth/resource", "guest", url.Values{"vhost": {"/"}, "resource": {"queue"}}, "deny"},
		{"/auth/topic", "", nil, "deny"},
	}
	for _, tc := range tests {
		t.Run(tc.path+" "+tc.want, func(t *testing.T) {
			form := url.Values{"username": {tc.username}}
			for k, v := range tc.extra {
				form[k] = v
			}
			if got := post(t, h, tc.path, form); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGETIsAnsweredToo(t *testing.T) {
	c := signed(t, nil, now)
	h := newHandler(t, io.Discard, 0)
	req := httptest.NewRequest(http.MethodGet, "/auth/user?"+creds(c).Encode(), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Body.String(); got != "allow" {
		t.Errorf("GET /auth/user = %q, want allow", got)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	var logs bytes.Buffer
	h := newHandler(t, &logs, 0)
	sts := signed(t, func(p *iotauth.Params) { p.SecurityToken = "very-secret-token" }, now)
	post(t, h, "/auth/user", creds(sts))
	post(t, h, "/auth/user", url.Values{"username": {sts.Username}, "password": {"wrong-password-value"}})
	post(t, h, "/auth/vhost", url.Values{"username": {sts.Username}, "vhost": {"/"}})
	out := logs.String()
	if n := strings.Count(out, "auth decision"); n != 3 {
		t.Errorf("%d decision lines, want 3:\n%s", n, out)
	}
	for _, secret := range []string{akSecret, sts.Password, "very-secret-token", "wrong-password-value"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains a secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "decision=deny") || !strings.Contains(out, "decision=allow") {
		t.Errorf("log lacks the decisions:\n%s", out)
	}
}

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Keys
		wantErr string
	}{
		{"one", "id1:s1", Keys{"id1": "s1"}, ""},
		{"commas and lines", "id1:s1,id2:s2\n# comment\n\nid3:s:3\n", Keys{"id1": "s1", "id2": "s2", "id3": "s:3"}, ""},
		{"missing secret", "id1:", nil, "entry 1"},
		{"no colon", "id1:s1,bogus", nil, "entry 2"},
		{"duplicate", "id1:a,id1:b", nil, "twice"},
		{"empty", "\n# nothing\n", nil, "no id:secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeys(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "s1") || strings.Contains(err.Error(), "secret:") {
					t.Errorf("error quotes a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeys: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("key %s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestNewNeedsKeys(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with no keys succeeded, want an error")
	}
}
