package reliability

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/app"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// scrape GETs every HTTP endpoint of the bridge and returns the bodies.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	var all strings.Builder
	for _, path := range []string{"/metrics", "/healthz", "/readyz", "/", "/debug/vars"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all.WriteString(path + " " + resp.Status + "\n")
		for k, v := range resp.Header {
			all.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		all.Write(body)
		all.WriteString("\n")
	}
	return all.String()
}

// TestSecretsNeverLeak runs full sessions with a known AccessKey secret and
// STS token: connect, forward, MNS errors, a refused login, shutdown. Every
// log line, error, metric and HTTP response is scanned for the secrets.
func TestSecretsNeverLeak(t *testing.T) {
	var seen strings.Builder // everything the bridge showed anyone
	session := func(t *testing.T, name string, simCfg iotsim.Config, during func(e *env, r *running)) {
		e := newEnv(t, mnsemu.Config{}, simCfg)
		path := e.config(t, spec{ack: "client-individual", token: testToken, logLevel: "debug"})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r := runBridge(t, path, app.Options{HTTPListener: ln})
		during(e, r)
		seen.WriteString(scrape(t, ln.Addr().String()))
		seen.WriteString(strings.Join(r.b.NotReady(), "\n"))
		if err := r.stop(t); err != nil {
			seen.WriteString(err.Error())
		}
		seen.WriteString(r.logs.String())
		t.Logf("%s: %d bytes of logs, errors, metrics and HTTP replies scanned", name, seen.Len())
	}

	t.Run("forward with MNS errors", func(t *testing.T) {
		session(t, "forward", iotsim.Config{}, func(e *env, r *running) {
			pub := &publisher{sim: e.sim, prefix: "sec"}
			pub.publish(100)
			waitAllArrived(t, e.emu, pub.sent(), time.Minute)
			e.emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
			pub.publish(20)
			waitFor(t, "a warning about MNS", time.Minute, func() bool { return firstWarning(r.logs.String()) != "" })
			e.emu.SetFaults(mnsemu.Faults{})
			waitAllArrived(t, e.emu, pub.sent(), time.Minute)
		})
	})
	t.Run("refused login", func(t *testing.T) {
		session(t, "refused", iotsim.Config{Secrets: map[string]string{testAK: "not-the-secret"}}, func(e *env, r *running) {
			waitFor(t, "the refused login logged", time.Minute, func() bool { return firstWarning(r.logs.String()) != "" })
		})
	})
	noSecrets(t, "logs, errors, metrics or HTTP replies", seen.String())
	// The scan is only worth something if it saw the places a secret could
	// leak to: the signed username (it holds the token's neighbours) and the
	// login failure.
	for _, want := range []string{testAK, "iot_mns_bridge_", "login refused"} {
		if !strings.Contains(seen.String(), want) {
			t.Errorf("the scanned output does not contain %q: the scan did not cover what it should", want)
		}
	}
}

// TestReadableConfigWithSecretsIsWarned: "run" warns when the config file
// holds a secret and others can read it.
func TestReadableConfigWithSecretsIsWarned(t *testing.T) {
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	path := e.config(t, spec{})
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- app.Main(ctx, []string{"run", "-config", path}, app.Stdio{Out: io.Discard, Err: logs}) }()
	waitFor(t, "the bridge to start", time.Minute, func() bool { return strings.Contains(logs.String(), "starting") })
	if !strings.Contains(logs.String(), "chmod") {
		t.Errorf("no warning about the readable config; log:\n%s", tail(logs.String(), 10))
	}
	cancel()
	if code := <-done; code != app.ExitOK {
		t.Errorf("run exited %d", code)
	}
	t.Logf("warning: %s", lineWith(logs.String(), "chmod"))
	noSecrets(t, "the run log", logs.String())
}

// TestHTTPListenerOnLoopbackByDefault: with no http.listen in the file, the
// bridge serves on loopback only.
func TestHTTPListenerOnLoopbackByDefault(t *testing.T) {
	e := newEnv(t, mnsemu.Config{}, iotsim.Config{})
	path := e.config(t, spec{httpDefault: true})
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "\nhttp:") {
		t.Fatalf("the config sets http:\n%s", data)
	}
	cfg := loadConfig(t, path)
	host, _, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil {
		t.Fatalf("default http.listen %q: %v", cfg.HTTP.Listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Errorf("default http.listen is %q, want a loopback address", cfg.HTTP.Listen)
	}
}
