package app

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestWebConfigProtectsMetrics runs a bridge with http.web_config_file
// (TLS and one basic-auth user, the exporter-toolkit format): a scrape of
// /metrics is refused without credentials or with wrong ones and accepted
// with them, over TLS only; the probes stay open; status needs the
// credentials too.
func TestWebConfigProtectsMetrics(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	dir := t.TempDir()
	bundle := testpeers.TLSFiles(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := testfile.Write(t, dir, "web.yml", "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: "+string(hash)+"\n")
	pwFile := testfile.Write(t, dir, "password", "scrape-pass\n")
	wrongPw := testfile.Write(t, dir, "wrong", "nope\n")

	ln, addr := listenHTTP(t)
	c := p.config()
	c.HTTP.Listen = addr // for healthcheck and status -config
	c.HTTP.WebConfigFile = web
	cfgPath := p.writeConfig(t, c)
	base := "https://" + addr
	runBridge(t, mustLoad(t, cfgPath), Options{Logger: slog.New(slog.DiscardHandler), HTTPListener: ln})

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: bundle.ClientTLSConfig("127.0.0.1")}}
	get := func(path, user, pw string) (int, string) { return testpeers.Get(t, client, base+path, user, pw) }
	waitFor(t, "/readyz over TLS without credentials", 30*time.Second, func() bool { code, _ := get("/readyz", "", ""); return code == http.StatusOK })
	if code, _ := get("/healthz", "", ""); code != http.StatusOK {
		t.Errorf("/healthz without credentials: %d, want 200 (probes stay open)", code)
	}
	for _, tc := range []struct{ user, pw string }{{"", ""}, {"prometheus", "nope"}, {"other", "scrape-pass"}} {
		for _, path := range []string{"/metrics", "/status"} {
			if code, _ := get(path, tc.user, tc.pw); code != http.StatusUnauthorized {
				t.Errorf("%s as %q/%q: %d, want 401", path, tc.user, tc.pw, code)
			}
		}
	}
	if code, body := get("/metrics", "prometheus", "scrape-pass"); code != http.StatusOK || !strings.Contains(body, "iot_mns_bridge_received_total") {
		t.Errorf("/metrics with the credentials: %d, want 200 with the metrics", code)
	}
	// Plain HTTP gets no metrics.
	if resp, err := http.Get("http://" + ln.Addr().String() + "/metrics"); err == nil {
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP /metrics answered 200")
		}
		resp.Body.Close()
	}

	// The status command: refused without credentials, naming the flags;
	// works with them, over TLS trusting the web config's certificate.
	code, _, errOut := runMain(t, context.Background(), "status", "-url", base, "-ca-file", filepath.Join(dir, "ca.pem"), "-interval", "0")
	if code != ExitFailure || !strings.Contains(errOut, "pass -user and -password-file") {
		t.Errorf("status without credentials: exit %d, %q; want 1 naming -user and -password-file", code, errOut)
	}
	code, _, errOut = runMain(t, context.Background(), "status", "-url", base, "-ca-file", filepath.Join(dir, "ca.pem"), "-interval", "0",
		"-user", "prometheus", "-password-file", wrongPw)
	if code != ExitFailure {
		t.Errorf("status with a wrong password: exit %d, %q; want 1", code, errOut)
	}
	code, out, errOut := runMain(t, context.Background(), "status", "-url", base, "-ca-file", filepath.Join(dir, "ca.pem"), "-interval", "0",
		"-user", "prometheus", "-password-file", pwFile)
	if code != ExitOK || !strings.Contains(out, "source e2e-bridge") {
		t.Errorf("status with the credentials: exit %d, %q %q; want 0 and the table", code, out, errOut)
	}
	// With -config both speak HTTPS by themselves, trusting cert_file (a
	// container's HEALTHCHECK keeps working when TLS is turned on).
	if code, out, errOut := runMain(t, context.Background(), "healthcheck", "-config", cfgPath); code != ExitOK || !strings.Contains(out, "ok") {
		t.Errorf("healthcheck -config with TLS on: exit %d, %q %q; want 0 ok", code, out, errOut)
	}
	if code, out, errOut := runMain(t, context.Background(), "status", "-config", cfgPath, "-interval", "0",
		"-user", "prometheus", "-password-file", pwFile); code != ExitOK || !strings.Contains(out, "source e2e-bridge") {
		t.Errorf("status -config with TLS on: exit %d, %q %q; want 0 and the table", code, out, errOut)
	}
}

// TestBadWebConfigIsAConfigError: check (and run) refuse a web config that
// does not load, naming http.web_config_file, with exit code 2.
func TestBadWebConfigIsAConfigError(t *testing.T) {
	p := startPeers(t, mnsemu.Config{}, iotsim.Config{})
	web := testfile.Write(t, t.TempDir(), "web.yml", "basic_auth_users:\n  alice: not-a-hash\n")
	c := p.config()
	c.HTTP.WebConfigFile = web
	path := p.writeConfig(t, c)
	code, _, errOut := runMain(t, context.Background(), "check", "-config", path)
	if code != ExitUsage || !strings.Contains(errOut, "http.web_config_file") || !strings.Contains(errOut, "basic_auth_users.alice: not a bcrypt hash") {
		t.Errorf("check with a bad web config: exit %d, %q; want 2 naming http.web_config_file and the user", code, errOut)
	}
}

// TestHTTPServerErrorsGoToTheLog: what the HTTP server itself reports (here
// a client that speaks plain HTTP to the TLS listener) is a record of the
// bridge's log, in log.format, not a bare line on stderr that breaks JSON
// log parsing.
func TestHTTPServerErrorsGoToTheLog(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	dir := t.TempDir()
	testpeers.TLSFiles(t, dir)
	web := testfile.Write(t, dir, "web.yml", "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
	c := p.config()
	c.HTTP.WebConfigFile = web
	logs := &testpeers.SyncBuffer{}
	ln, addr := listenHTTP(t)
	b := runBridge(t, mustLoad(t, p.writeConfig(t, c)), Options{Logger: slog.New(slog.NewJSONHandler(logs, nil)), HTTPListener: ln})
	b.stopCleanly(t)
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
	}
	waitFor(t, "the TLS handshake error in the bridge's log", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), `"msg":"http: TLS handshake error from 127.0.0.1:`)
	})
}
