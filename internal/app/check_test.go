package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials/credtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestCheckConnectExplainsEachFailure runs "check -connect" against the
// simulator and the emulator, healthy and with one thing broken at a time,
// and checks the output names the failing piece and the likely fix.
func TestCheckConnectExplainsEachFailure(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	good := p.writeConfig(t, p.config())
	variant := func(name string, change func(c *config.Config)) string {
		t.Helper()
		c := p.config()
		change(c)
		return configtest.Write(t, p.dir, name+".yaml", c)
	}
	other, err := certgen.New("localhost")
	if err != nil {
		t.Fatal(err)
	}
	otherCA := filepath.Join(p.dir, "other-ca.pem")
	os.WriteFile(otherCA, other.CAPEM, 0o600)

	code, out, errOut := runMain(t, context.Background(), "check", "-config", good, "-connect")
	if code != ExitOK || !strings.Contains(out, "ok   source") || !strings.Contains(out, "ok   MNS queue unrouted") {
		t.Fatalf("healthy check: exit %d\n%s%s", code, out, errOut)
	}
	// The STOMP check logs in without subscribing: its line must say so,
	// not claim a subscription.
	if want := "ok   source " + p.sim.Addr() + ": logged in without subscribing as e2e-bridge-check, taking no message"; !strings.Contains(out, want) || strings.Contains(out, "subscribed") {
		t.Errorf("healthy STOMP check: want %q, and no subscription claimed:\n%s", want, out)
	}

	cases := []struct {
		name   string
		change func(c *config.Config)
		want   []string
	}{
		{"wrong secret", func(c *config.Config) { c.Source.Credentials.AccessKeySecret = "Zq9-not-the-secret" },
			[]string{"FAIL source", "signature"}},
		{"wrong CA", func(c *config.Config) { c.Source.TLS.CAFile = otherCA },
			[]string{"FAIL source", "certificate"}},
		{"wrong server name", func(c *config.Config) { c.Source.TLS.ServerName = "iot.example.com" },
			[]string{"FAIL source", "iot.example.com"}},
		{"missing queue", func(c *config.Config) { c.DefaultRoute.Queue = "not-there" },
			[]string{"FAIL MNS queue not-there", "QueueNotExist", "create"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := variant(strings.ReplaceAll(tc.name, " ", "-"), tc.change)
			code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect", "-timeout", "20s")
			if code != ExitFailure {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errOut, testSecret) || strings.Contains(out+errOut, "Zq9-not-the-secret") {
				t.Errorf("a secret appears in the output:\n%s%s", out, errOut)
			}
		})
	}
}

// TestCheckPromisesNoRetry: "check" (and "sign") tries to get each
// credential once and stops; its error must not say "next attempt in ..." as
// the daemon's does (which retries), with or without -connect.
func TestCheckPromisesNoRetry(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	is.SetDown(true)
	t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Source.Credentials = config.Credentials{Provider: "uri"}
	path := p.writeConfig(t, c)
	for _, args := range [][]string{{"check", "-config", path}, {"check", "-config", path, "-connect", "-timeout", "20s"}} {
		code, out, errOut := runMain(t, context.Background(), args...)
		if code != ExitFailure || !strings.Contains(out, "FAIL source.credentials (provider uri)") || !strings.Contains(out, "HTTP 503") {
			t.Errorf("%s: exit %d, want 1 naming the provider and its failure\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		if strings.Contains(out+errOut, "next attempt") {
			t.Errorf("%s: a one-shot check promises another attempt:\n%s%s", strings.Join(args, " "), out, errOut)
		}
	}
	code, out, errOut := runMain(t, context.Background(), "sign", "-config", path)
	if code != ExitFailure || !strings.Contains(errOut, "source.credentials: no credentials from uri") || strings.Contains(out+errOut, "next attempt") {
		t.Errorf("sign: exit %d, want 1 naming the provider, promising no other attempt\n%s%s", code, out, errOut)
	}
}
