package webconfig

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

func hash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// TestTLSAndBasicAuth serves a handler with a web config (TLS with relative
// file names, one user) and checks what a scraper sees.
func TestTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	b := testpeers.TLSFiles(t, dir)
	path := testfile.Write(t, dir, "web.yml", "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: "+hash(t, "s3cret")+"\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.TLSConfig()
	if err != nil || tc == nil {
		t.Fatalf("TLSConfig = %v, %v", tc, err)
	}
	// Served the way the bridge serves it: a TLS listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c.RequireAuth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") })),
		ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, tc))
	defer srv.Close()
	url := "https://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: b.ClientTLSConfig("127.0.0.1")}}
	get := func(user, pw string) (int, string) { return testpeers.Get(t, client, url+"/metrics", user, pw) }
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d, want 401", code)
	}
	if code, _ := get("prometheus", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, _ := get("nobody", "s3cret"); code != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", code)
	}
	if code, body := get("prometheus", "s3cret"); code != http.StatusOK || body != "metrics" {
		t.Errorf("valid credentials: %d %q, want 200 metrics", code, body)
	}
	// Plain HTTP to the TLS listener gets nothing.
	if resp, err := http.Get(strings.Replace(url, "https://", "http://", 1) + "/metrics"); err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP to the TLS listener answered 200")
		}
		resp.Body.Close()
	}
	// An old TLS version is refused (min_version TLS12).
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.CertPool(), MaxVersion: tls.VersionTLS11}}}
	if resp, err := old.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("a TLS 1.1 client was served")
	}
}

func TestNoUsersNoTLS(t *testing.T) {
	c, err := Load(testfile.Write(t, t.TempDir(), "web.yml", "# nothing\n"))
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := c.TLSConfig(); tc != nil || err != nil {
		t.Errorf("TLSConfig of an empty file = %v, %v; want nil, nil", tc, err)
	}
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	rec := httptest.NewRecorder()
	c.RequireAuth(h).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("without basic_auth_users: %d, want 200", rec.Code)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct{ name, content, want string }{
		{"unknown key", "basic_auth:\n  a: b\n", "field basic_auth not found"},
		{"not bcrypt", "basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"},
		{"no key file", "tls_server_config:\n  cert_file: tls.crt\n", "cert_file and key_file are both required"},
		{"missing cert", "tls_server_config:\n  cert_file: none.crt\n  key_file: none.key\n", "tls_server_config.cert_file"},
		{"bad version", "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS99\n", `min_version: "TLS99": use one of TLS10, TLS11, TLS12, TLS13`},
		{"bad client auth", "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n", "client_auth_type"},
		{"verify without CA", "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file: required"},
		{"cipher suites", "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "not supported by iot-mns-bridge"},
		{"headers", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n", "http_server_config.headers: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(testfile.Write(t, t.TempDir(), "web.yml", tt.content))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}
