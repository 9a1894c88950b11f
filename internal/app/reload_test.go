package app

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// TestReloadReportsAChangedLiteralSecret: a Secret prints as "***", so
// comparing printed configs missed a changed literal secret; Reload must
// name the section that needs a restart.
func TestReloadReportsAChangedLiteralSecret(t *testing.T) {
	dir := t.TempDir()
	load := func(secret string) *config.Config {
		t.Helper()
		c := configtest.New()
		c.Source.Endpoint, c.Source.ClientID, c.Source.ConsumerGroupID = "127.0.0.1:61614", "reload-test", "g1"
		c.Source.Credentials = config.Credentials{AccessKeyID: testAK, AccessKeySecret: config.Secret(secret)}
		c.MNS.Endpoint = "http://127.0.0.1:1"
		c.Routes = []config.Route{{Match: "/#", Queue: "q"}}
		c.HTTP.Listen = ""
		cfg, err := config.Load(configtest.Write(t, dir, "bridge.yaml", c))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	b, err := New(load("first-secret-0123"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	restart, err := b.Reload(load("second-secret-456"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(restart, "source") || !slices.Contains(restart, "mns") {
		t.Errorf("Reload with a changed secret names %v, want source and mns (mns uses the source's credentials)", restart)
	}
	// The running bridge still uses the first secret (it needs a restart):
	// a file back at it needs none.
	restart, err = b.Reload(load("first-secret-0123"))
	if err != nil || len(restart) != 0 {
		t.Errorf("Reload back to the running secret: %v, %v; want nothing to restart", restart, err)
	}
}

// TestVersionFlagsAndConfigWithoutFlag: --version and -version print the
// version like "version"; "check FILE" without -config says what to type.
func TestVersionFlagsAndConfigWithoutFlag(t *testing.T) {
	for _, arg := range []string{"--version", "-version"} {
		code, out, errOut := runMain(t, context.Background(), arg)
		if code != ExitOK || !strings.HasPrefix(out, "iot-mns-bridge ") {
			t.Errorf("%s: exit %d, out %q, err %q", arg, code, out, errOut)
		}
	}
	path := testfile.Write(t, t.TempDir(), "bridge.yaml", "source: {}\n")
	for _, cmd := range []string{"check", "run", "sign"} {
		code, _, errOut := runMain(t, context.Background(), cmd, path)
		if want := "type: iot-mns-bridge " + cmd + " -config " + path; code != ExitUsage || !strings.Contains(errOut, want) {
			t.Errorf("%s FILE: exit %d, %q; want 2 and %q", cmd, code, errOut, want)
		}
	}
}
