package app

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// staticKey is an MNS credentials func that always gives id and secret.
func staticKey(id, secret string) func(context.Context) (string, string, string, error) {
	return func(context.Context) (string, string, string, error) { return id, secret, "", nil }
}

// mnsTestConfig is config.Default() with the MNS endpoint at ep.
func mnsTestConfig(ep string) config.Config {
	c := config.Default()
	c.MNS.Endpoint = ep
	return c
}

// wantTexts fails t unless err's text holds every one of want.
func wantTexts(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one naming %q", what, want)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q lacks %q", what, err, w)
		}
	}
}

// TestMNSClientRefusalsNameConfigKeys: the MNS client speaks of its own
// fields; the client the wiring builds (mnsConfig, with config.MNSNames)
// names the config keys in every refusal. config.Validate refuses these
// values first; the client checks again, with the same keys.
func TestMNSClientRefusalsNameConfigKeys(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*config.Config)
		creds func(context.Context) (string, string, string, error)
		want  []string
	}{
		{"endpoint", func(c *config.Config) { c.MNS.Endpoint = "ftp://h" }, staticKey("a", "s"), []string{"mns.endpoint: \"ftp://h\" must be http(s)://host[:port]"}},
		{"no endpoint", func(c *config.Config) { c.MNS.Endpoint = "" }, staticKey("a", "s"), []string{"mns.endpoint: required"}},
		{"body encoding", func(c *config.Config) { c.MNS.BodyEncoding = "hex" }, staticKey("a", "s"), []string{`mns.body_encoding: "hex" is neither base64 nor raw`}},
		{"no timeout", func(c *config.Config) { c.MNS.RequestTimeout = 0 }, staticKey("a", "s"), []string{"mns.request_timeout: must be positive, got 0s"}},
		{"negative timeout", func(c *config.Config) { c.MNS.RequestTimeout = -1 }, staticKey("a", "s"), []string{"mns.request_timeout: -1ns is negative"}},
		{"no requests", func(c *config.Config) { c.Delivery.MaxRequests = 0 }, staticKey("a", "s"), []string{"delivery.max_requests: must be at least 1, got 0"}},
		{"signature version", func(c *config.Config) { c.MNS.SignatureVersion = "v3" }, staticKey("a", "s"), []string{`mns.signature_version: "v3" is neither v2 nor v4`}},
		{"region", func(c *config.Config) { c.MNS.Region = "CN Hangzhou" }, staticKey("a", "s"), []string{`mns.region: "CN Hangzhou" is not a region id`}},
		{"v4 without a region", func(c *config.Config) { c.MNS.SignatureVersion = "v4" }, staticKey("a", "s"),
			[]string{`mns.region: empty, and mns.signature_version v4 cannot derive it from mns.endpoint "http://127.0.0.1:1"`, "set mns.region, e.g. cn-hangzhou"}},
		{"no credentials", func(*config.Config) {}, nil, []string{"mns.credentials.access_key_id", "mns.credentials.access_key_secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mnsTestConfig("http://127.0.0.1:1")
			tc.mod(&cfg)
			_, err := mns.NewClient(mnsConfig(&cfg, tc.creds))
			wantTexts(t, tc.name, err, tc.want...)
		})
	}
	// The config's defaults are what the client needs: nothing is refused.
	cfg := mnsTestConfig("http://127.0.0.1:1")
	if _, err := mns.NewClient(mnsConfig(&cfg, staticKey("a", "s"))); err != nil {
		t.Errorf("the default config: %v", err)
	}
}

// TestMNSRequestErrorsNameConfigKeys: the errors of requests (MNS's
// refusals with their hints, no reply, a reply not from MNS) name the
// config keys to check when the wiring built the client.
func TestMNSRequestErrorsNameConfigKeys(t *testing.T) {
	emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"ak": "sk"}, Queues: []string{"q1"}, Region: "cn-hangzhou"})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	send := func(t *testing.T, cfg config.Config, creds func(context.Context) (string, string, string, error)) error {
		t.Helper()
		c, err := mns.NewClient(mnsConfig(&cfg, creds))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
		return err
	}
	cfg := mnsTestConfig(srv.URL)
	wantTexts(t, "wrong secret", send(t, cfg, staticKey("ak", "wrong")),
		"check that mns.credentials.access_key_secret (source.credentials when mns.credentials is empty) belongs to the access key id")
	wantTexts(t, "unknown key", send(t, cfg, staticKey("other", "sk")),
		"check mns.credentials.access_key_id, or source.credentials when mns.credentials is empty (is the key enabled, in this account?)")
	v4 := cfg
	v4.MNS.SignatureVersion, v4.MNS.Region = "v4", "cn-shanghai"
	wantTexts(t, "v4 for another region", send(t, v4, staticKey("ak", "sk")),
		"and that mns.region (cn-shanghai) is the region of mns.endpoint: mns.signature_version v4 signs for it")
	raw := cfg
	raw.MNS.BodyEncoding = "raw"
	c, err := mns.NewClient(mnsConfig(&raw, staticKey("ak", "sk")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("bell\a"))
	wantTexts(t, "raw body not XML text", err, "message body is not text that XML 1.0 can carry; use mns.body_encoding base64")

	// No reply within the request timeout.
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(block) })
	slow := mnsTestConfig(hang.URL)
	slow.MNS.RequestTimeout = 20 * time.Millisecond
	wantTexts(t, "timeout", send(t, slow, staticKey("ak", "sk")), "no reply within 20ms (mns.request_timeout)")

	// Nothing listening.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	wantTexts(t, "connection refused", send(t, mnsTestConfig("http://"+addr), staticKey("ak", "sk")),
		"no reply from MNS; check mns.endpoint (scheme, host and port) and the network")

	// A reply that is not MNS's, and a proxy's demand for credentials.
	for _, tc := range []struct {
		status int
		want   string
	}{
		{http.StatusFound, "the reply was not from MNS; check mns.endpoint and any proxy"},
		{http.StatusProxyAuthRequired, "or list mns.endpoint's host in NO_PROXY"},
	} {
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
		}))
		wantTexts(t, http.StatusText(tc.status), send(t, mnsTestConfig(other.URL), staticKey("ak", "sk")), tc.want)
		other.Close()
	}
}
