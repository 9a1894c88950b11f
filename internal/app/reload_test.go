package app

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
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

// TestRefusedReloadIsInTheStatusLine: a SIGHUP with an invalid file is
// refused and the running config kept; the status line (systemd STATUS=,
// the Status: of `systemctl status`), /status and the status command say
// so until a reload succeeds. They say too which sections an applied
// reload read changes of that wait for a restart (walk7: only a log line).
// `systemctl reload` returns 0 and systemd logs "Reloaded" whatever the
// bridge made of the file, and the line still said "connected 1/1;
// forwarding" (walk7 under systemd-nspawn): only the journal's ERROR line
// told that the edit was not applied.
func TestRefusedReloadIsInTheStatusLine(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "second", "unrouted"}}, iotsim.Config{})
	c := p.config()
	path := p.writeConfig(t, c)
	loaded, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lines []string
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(lines) == 0 {
			return ""
		}
		return lines[len(lines)-1]
	}
	b := runBridge(t, mustLoad(t, path), Options{Logger: slog.New(slog.DiscardHandler),
		OnStatus: func(l string) { mu.Lock(); lines = append(lines, l); mu.Unlock() }})
	b.stopCleanly(t)
	waitFor(t, "the status line to say connected", time.Minute, func() bool { return last() == "connected 1/1; forwarding" })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	go reloadOnHUP(ctx, hup, path, loaded, b.Bridge, slog.New(slog.DiscardHandler))

	// Two problems: the error has two lines, the status line one.
	c.Routes[0].Queue = "bad_name"
	c.DefaultRoute.Queue = "bad_too"
	p.writeConfig(t, c)
	hup <- syscall.SIGHUP
	waitFor(t, "the status line to say that the reload was refused", time.Minute, func() bool {
		return strings.HasPrefix(last(), "connected 1/1; forwarding; config reload refused, running config kept: ") && strings.Contains(last(), "bad_name")
	})
	// /status and the status command's table say it too (a container
	// has no status line: docker kill -s HUP).
	st := b.Status()
	if !strings.Contains(st.ConfigReloadRefused, "bad_too") || strings.Contains(st.ConfigReloadRefused, "\n") {
		t.Errorf("/status's config_reload_refused is %q, want both problems on one line", st.ConfigReloadRefused)
	}
	var table strings.Builder
	printStatus(&table, st, nil)
	if !strings.Contains(table.String(), "\n  config reload refused, running config kept: ") {
		t.Errorf("the status table does not say that the reload was refused:\n%s", table.String())
	}
	c.DefaultRoute.Queue = "unrouted"

	c.Routes[0].Queue = "second"
	p.writeConfig(t, c)
	hup <- syscall.SIGHUP
	waitFor(t, "the status line to drop the refusal once a reload succeeds", time.Minute, func() bool { return last() == "connected 1/1; forwarding" })
	if st := b.Status(); st.ConfigReloadRefused != "" {
		t.Errorf("/status's config_reload_refused is %q after a reload succeeded, want none", st.ConfigReloadRefused)
	}

	// A change a reload cannot apply (the log level: a restart) is applied
	// nowhere until the bridge restarts: the status line, /status and the
	// table say which sections wait, until a reload brings them back.
	level := c.Log.Level
	c.Log.Level = "debug"
	p.writeConfig(t, c)
	hup <- syscall.SIGHUP
	waitFor(t, "the status line to say that a change waits for a restart", time.Minute, func() bool {
		return last() == "connected 1/1; forwarding; config changes waiting for a restart: log"
	})
	st = b.Status()
	if !slices.Equal(st.ConfigRestartPending, []string{"log"}) {
		t.Errorf("/status's config_restart_pending is %q, want [log]", st.ConfigRestartPending)
	}
	table.Reset()
	printStatus(&table, st, nil)
	if !strings.Contains(table.String(), "\n  config changes waiting for a restart: log\n") {
		t.Errorf("the status table does not say which changes wait for a restart:\n%s", table.String())
	}
	c.Log.Level = level
	p.writeConfig(t, c)
	hup <- syscall.SIGHUP
	waitFor(t, "the status line to drop the pending restart once the file matches the running config", time.Minute, func() bool {
		return last() == "connected 1/1; forwarding"
	})
	if st := b.Status(); st.ConfigRestartPending != nil {
		t.Errorf("/status's config_restart_pending is %q once the file matches the running config, want none", st.ConfigRestartPending)
	}
}
