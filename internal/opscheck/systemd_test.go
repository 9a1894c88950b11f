package opscheck

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/faultproxy"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// nspawnMachine is a systemd booted with systemd-nspawn over the host's own
// root (--volatile=yes: /usr from the host, read-only; the rest a tmpfs),
// sharing the host's network, so that a unit in it reaches test peers on
// the host's loopback.
type nspawnMachine struct {
	t      *testing.T
	cmd    *exec.Cmd
	leader int // the machine's PID 1, as seen from the host
	done   chan struct{}
}

// bootNspawn boots the machine with binds ("host:container", read-only)
// and waits until its systemd finished starting up.
func bootNspawn(t *testing.T, name string, binds ...string) *nspawnMachine {
	t.Helper()
	args := []string{"-D", "/", "--volatile=yes", "--register=no", "--keep-unit", "-b", "--console=pipe",
		"--machine=" + name}
	for _, b := range binds {
		args = append(args, "--bind-ro="+b)
	}
	cmd := exec.Command("systemd-nspawn", args...)
	cmd.Stdin = nil
	out, err := os.CreateTemp("", "nspawn-console")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close(); os.Remove(out.Name()) })
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	m := &nspawnMachine{t: t, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(m.done) }()
	console := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	t.Cleanup(func() {
		// SIGTERM asks nspawn to shut the machine down (poweroff).
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(60 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-m.done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for m.leader == 0 {
		select {
		case <-m.done:
			t.Fatalf("systemd-nspawn exited while booting:\n%s", console())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd-nspawn started no machine within 60s:\n%s", console())
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			pid, _ := strconv.Atoi(f[0])
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
				m.leader = pid
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// is-system-running --wait returns once start-up finished (running, or
	// degraded when some unrelated host unit fails in the container).
	// Until PID 1 has its private bus socket, systemctl cannot connect.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		state, _ := m.run(ctx, "systemctl", "is-system-running", "--wait")
		if state == "running" || state == "degraded" {
			return m
		}
		if ctx.Err() != nil {
			t.Fatalf("the machine's systemd is %q after boot:\n%s", state, console())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run runs a command inside the machine and returns its trimmed output.
func (m *nspawnMachine) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(m.leader), "-a"}, args...)...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// show returns the unit's properties.
func (m *nspawnMachine) show(unit string, props ...string) map[string]string {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := m.run(ctx, "systemctl", "show", unit, "-p", strings.Join(props, ","))
	if err != nil {
		m.t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			got[k] = v
		}
	}
	return got
}

func (m *nspawnMachine) journal(unit string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := m.run(ctx, "journalctl", "-u", unit, "--no-pager", "-o", "cat")
	return out
}

// TestSystemdUnit boots a real systemd with systemd-nspawn and runs
// configs/iot-mns-bridge.service in it, unchanged but for a shorter
// WatchdogSec (a drop-in), with the binary at /usr/local/bin and the config,
// secret and CA under /etc/iot-mns-bridge, against the simulator and
// emulator on the host's loopback. It shows: READY=1 once started, while
// the platform is unreachable (systemctl start returns, the unit is active
// and its status line says that it waits for the platform), then connected
// with the same PID; the hardening does not block the CA file in /etc, the watchdog fed,
// reload on SIGHUP, a stop within TimeoutStopSec with messages in flight
// and none lost (the spool in StateDirectory sends them on the next start),
// and no restart loop on a config error.
func TestSystemdUnit(t *testing.T) {
	needNspawn(t)
	const unit = unitName

	emu, emuAddr := testpeers.StartMNS(t, mnsemu.Config{AccessKeys: map[string]string{imageAK: imageSecret}})
	emu.CreateQueue("telemetry-pk1")
	emu.CreateQueue("unrouted")
	// The simulator runs from the start, behind a proxy that refuses
	// connections until the test lets them through.
	sim, err := iotsim.Start(iotsim.Config{Secrets: map[string]string{imageAK: imageSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	proxy, err := faultproxy.Start(sim.Addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	proxy.SetRefuse(true)
	simAddr := proxy.Addr()
	httpPort := testpeers.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)

	goodConfig := layout{Comment: "The unit's documented layout (configs/iot-mns-bridge.service), pointed at loopback peers.",
		ClientID: "nspawn-check", SimAddr: simAddr, CAFile: "/etc/iot-mns-bridge/ca.pem", SourceExtra: []string{"reconnect_max_backoff: 2s"},
		EmuAddr: emuAddr, Port: httpPort}.yaml()
	rig := newUnitRig(t, "iotmns", sim.CACertPEM(), goodConfig)
	m, cfgFile, sysctl, waitState := rig.m, rig.cfgFile, rig.sysctl, rig.waitState

	// READY=1 once started, with the platform unreachable: systemctl start
	// returns, the unit is active, and its status line says what it waits
	// for; the same process connects once the platform answers.
	if out, err := sysctl("start", unit); err != nil {
		t.Fatalf("systemctl start with the platform unreachable: %v: %s\n%s", err, out, m.journal(unit))
	}
	p := waitState("the bridge to try the unreachable source twice and say so", 60*time.Second, func(p map[string]string) bool {
		return proxy.Stats().Refused >= 2 && strings.HasPrefix(p["StatusText"], "waiting for the platform since ")
	}, "ActiveState", "SubState", "StatusText", "MainPID")
	if p["ActiveState"] != "active" || !strings.Contains(p["StatusText"], "(connected 0/1)") {
		t.Fatalf("the unit is %v while the source is unreachable, want active (READY=1) with a status line saying connected 0/1\n%s", p, m.journal(unit))
	}
	mainPID := p["MainPID"]
	proxy.SetRefuse(false)
	p = waitState("the status line to say connected", 90*time.Second, func(p map[string]string) bool {
		return p["StatusText"] == "connected 1/1; forwarding"
	}, "ActiveState", "StatusText", "MainPID", "NRestarts")
	if p["ActiveState"] != "active" || p["MainPID"] != mainPID || p["NRestarts"] != "0" {
		t.Errorf("after the source connected: %v, want active, the same MainPID %s, no restart", p, mainPID)
	}
	// journald takes the bridge's log lines from its output stream, which
	// may lag the status line.
	waitState("the start (ready: started) and the connect in the journal", 30*time.Second, func(map[string]string) bool {
		j := m.journal(unit)
		return strings.Contains(j, "ready: started") && strings.Contains(j, "source connected")
	}, "ActiveState")

	// The watchdog is fed: its timestamp moves, three times, and the bridge
	// is neither killed nor restarted.
	last := m.show(unit, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
	for i := 0; i < 3; i++ {
		waitState("a watchdog ping", 30*time.Second, func(p map[string]string) bool {
			if v := p["WatchdogTimestampMonotonic"]; v != last && v != "0" {
				last = v
				return true
			}
			return false
		}, "WatchdogTimestampMonotonic")
	}
	if p := m.show(unit, "MainPID", "NRestarts", "ActiveState"); p["MainPID"] != mainPID || p["NRestarts"] != "0" || p["ActiveState"] != "active" {
		t.Errorf("after the watchdog pings: %v, want the same MainPID %s, no restart, active", p, mainPID)
	}

	delivered := func() map[string]int { return testpeers.Bodies(t, emu, "telemetry-pk1") }
	const n1 = 200
	publishBurst(sim, "a", n1)
	waitState("the first messages at MNS", 60*time.Second, func(map[string]string) bool { return len(delivered()) >= n1 }, "ActiveState")

	// Reload: SIGHUP, same process, logged.
	if out, err := sysctl("reload", unit); err != nil {
		t.Fatalf("systemctl reload: %v: %s", err, out)
	}
	waitState("the reload to be logged", 30*time.Second, func(map[string]string) bool {
		return strings.Contains(m.journal(unit), "config reloaded")
	}, "ActiveState")
	if p := m.show(unit, "MainPID", "ActiveState"); p["MainPID"] != mainPID || p["ActiveState"] != "active" {
		t.Errorf("after reload: %v, want the same MainPID %s, active", p, mainPID)
	}

	// Stop with messages in flight: within TimeoutStopSec, exit 0.
	emu.SetFaults(mnsemu.Faults{Latency: 20 * time.Second})
	const n2 = 1000
	publishBurst(sim, "b", n2)
	waitState("the burst taken from the source", 60*time.Second, func(map[string]string) bool {
		var st struct {
			Pipeline struct{ Received int64 } `json:"pipeline"`
		}
		return getJSON(base+"/status", &st) == nil && st.Pipeline.Received >= n1+n2
	}, "ActiveState")
	timeoutStop := m.show(unit, "TimeoutStopUSec")["TimeoutStopUSec"]
	t0 := time.Now()
	if out, err := sysctl("stop", unit); err != nil {
		t.Fatalf("systemctl stop: %v: %s", err, out)
	}
	took := time.Since(t0)
	p = m.show(unit, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
	t.Logf("systemctl stop took %v (TimeoutStopUSec=%s): %v", took.Round(time.Millisecond), timeoutStop, p)
	if p["Result"] != "success" || p["ExecMainStatus"] != "0" || p["ActiveState"] != "inactive" {
		t.Errorf("after stop: %v, want inactive, Result=success, exit status 0 (not killed)\n%s", p, m.journal(unit))
	}
	if took >= 45*time.Second {
		t.Errorf("systemctl stop took %v, not within TimeoutStopSec=45s", took)
	}
	emu.SetFaults(mnsemu.Faults{})
	if out, err := sysctl("start", unit); err != nil {
		t.Fatalf("systemctl start again: %v: %s\n%s", err, out, m.journal(unit))
	}
	waitState("every message at MNS after the restart", 120*time.Second, func(map[string]string) bool {
		return len(delivered()) >= n1+n2
	}, "ActiveState")
	for _, body := range lost(delivered(), "b", n2) {
		t.Errorf("message %s was lost", body)
	}
	if j := m.journal(unit); strings.Contains(j, imageSecret) {
		t.Errorf("the AccessKey secret appears in the journal")
	}

	// A config error: the unit fails once, exit status 2, and is not
	// restarted (RestartPreventExitStatus=2).
	writeFile(t, cfgFile, goodConfig+"no_such_key: 1\n", 0o644)
	sysctl("restart", unit) // fails: the config is refused
	p = waitState("the unit to fail on the config error", 60*time.Second, func(p map[string]string) bool {
		return p["ActiveState"] == "failed" || p["NRestarts"] != "0"
	}, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
	if p["ActiveState"] != "failed" || p["ExecMainStatus"] != "2" || p["NRestarts"] != "0" {
		t.Errorf("after a config error: %v, want failed with exit status 2 and no restart\n%s", p, m.journal(unit))
	}
	// The unit fails when the process exits; journald may take the last
	// lines of its output stream later.
	waitState("the journal to name the bad key", 30*time.Second, func(map[string]string) bool {
		return strings.Contains(m.journal(unit), "no_such_key")
	}, "ActiveState")

	// A crash is restarted: SIGABRT (what the watchdog sends; a panic ends
	// the same way) kills the bridge by the signal (GOTRACEBACK=crash), not
	// by Go's exit status 2, which RestartPreventExitStatus keeps for config
	// errors.
	writeFile(t, cfgFile, goodConfig, 0o644)
	sysctl("reset-failed", unit)
	if out, err := sysctl("start", unit); err != nil {
		t.Fatalf("systemctl start after the config error: %v: %s\n%s", err, out, m.journal(unit))
	}
	before := m.show(unit, "MainPID", "NRestarts")
	// The main process only, as the watchdog signals it: without
	// --kill-whom=main, systemctl also signals the unit's other processes,
	// and on this cgroup v1 host that once failed ("Failed to send signal
	// SIGABRT to auxiliary processes: Input/output error", CI run13).
	if out, err := sysctl("kill", "--kill-whom=main", "-s", "ABRT", unit); err != nil {
		t.Fatalf("systemctl kill --kill-whom=main -s ABRT: %v: %s", err, out)
	}
	p = waitState("the unit to be restarted or to fail after SIGABRT", 60*time.Second, func(p map[string]string) bool {
		return p["ActiveState"] == "failed" || (p["ActiveState"] == "active" && p["NRestarts"] != before["NRestarts"])
	}, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus", "NRestarts", "MainPID")
	if p["ActiveState"] != "active" || p["MainPID"] == before["MainPID"] {
		t.Errorf("after SIGABRT: %v (before: %v), want a restarted bridge\n%s", p, before, m.journal(unit))
	}
}

// unitName is the shipped unit's name.
const unitName = "iot-mns-bridge.service"

// needNspawn skips the test outside CI when systemd-nspawn cannot run here
// (the ops-check step nspawn), or with -short or OPS_CHECK_QUICK; under
// CI=true it fails instead. The test runs beside TestImage and TestOpsCheck.
func needNspawn(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots systemd with systemd-nspawn; skipped with -short")
	}
	t.Parallel() // beside TestImage and TestOpsCheck: own ports, own machine
	if os.Getenv("OPS_CHECK_QUICK") != "" && os.Getenv("CI") != "true" {
		t.Skip("OPS_CHECK_QUICK is set (under CI=true this runs)")
	}
	if r := runOpsStep(t, "nspawn"); r != "ok" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the nspawn step was skipped under CI=true: %s", r)
		}
		t.Skip(r)
	}
}

// unitRig is configs/iot-mns-bridge.service installed as its header says
// in a machine booted with systemd-nspawn: the binary built the way the
// release builds it at /usr/local/bin, the config (config), the
// simulator's CA (ca), the secret and the env file under
// /etc/iot-mns-bridge, the unit unchanged but for a drop-in with a shorter
// WatchdogSec, and not started. The machine is named name-<pid>.
type unitRig struct {
	t       *testing.T
	m       *nspawnMachine
	ctx     context.Context
	cfgFile string // on the host; bound read-only at /etc/iot-mns-bridge/config.yaml
}

func newUnitRig(t *testing.T, name string, ca []byte, config string) *unitRig {
	t.Helper()
	unit := unitName
	dir := t.TempDir()
	os.Chmod(dir, 0o755)

	// The binary, built the way the release builds it.
	binDir := filepath.Join(dir, "bin")
	os.MkdirAll(binDir, 0o755)
	build := exec.Command("bash", filepath.Join(repoRoot, "scripts/build.sh"), filepath.Join(binDir, "iot-mns-bridge"))
	build.Env = append(os.Environ(), "VERSION=v0.0.0-nspawn")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build.sh: %v: %s", err, out)
	}

	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	writeFile(t, filepath.Join(etc, "ca.pem"), string(ca), 0o644)
	writeFile(t, filepath.Join(etc, "access_key_secret"), imageSecret+"\n", 0o600)
	writeFile(t, filepath.Join(etc, "iot-mns-bridge.env"), "ALIBABA_CLOUD_ACCESS_KEY_ID="+imageAK+"\n", 0o600)
	cfgFile := filepath.Join(etc, "config.yaml")
	writeFile(t, cfgFile, config, 0o644)

	// The unit as shipped, plus a drop-in with a short watchdog so that the
	// test sees it fed within seconds.
	sysd := filepath.Join(dir, "systemd")
	os.MkdirAll(filepath.Join(sysd, unit+".d"), 0o755)
	writeFile(t, filepath.Join(sysd, unit), readRepoFile(t, "configs/iot-mns-bridge.service"), 0o644)
	writeFile(t, filepath.Join(sysd, unit+".d", "opscheck.conf"), "[Service]\nWatchdogSec=4s\n", 0o644)
	// On a first boot (an empty /etc) systemd applies the presets, which
	// would enable and start the unit at boot: the test starts it itself.
	preset := filepath.Join(sysd, "00-opscheck.preset")
	writeFile(t, preset, "disable "+unit+"\n", 0o644)

	m := bootNspawn(t, fmt.Sprintf("%s-%d", name, os.Getpid()),
		binDir+":/usr/local/bin",
		etc+":/etc/iot-mns-bridge",
		filepath.Join(sysd, unit)+":/etc/systemd/system/"+unit,
		filepath.Join(sysd, unit+".d")+":/etc/systemd/system/"+unit+".d",
		preset+":/etc/systemd/system-preset/00-opscheck.preset")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return &unitRig{t: t, m: m, ctx: ctx, cfgFile: cfgFile}
}

// sysctl runs systemctl in the machine.
func (r *unitRig) sysctl(args ...string) (string, error) {
	return r.m.run(r.ctx, append([]string{"systemctl"}, args...)...)
}

// waitState polls the unit's properties props until cond holds, or fails
// the test after d with the journal.
func (r *unitRig) waitState(what string, d time.Duration, cond func(map[string]string) bool, props ...string) map[string]string {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := r.m.show(unitName, props...)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s: %v\njournal:\n%s", d, what, p, r.m.journal(unitName))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSystemdStopDuringAnMNSOutage walks a stop of the shipped unit (under
// systemd-nspawn, as TestSystemdUnit) while MNS is down, with messages
// held, for the STOMP default (ack auto, the spool in StateDirectory) and
// for AMQP without the spool (the platform redelivers):
//
//   - MNS answering nothing (every request hangs: a blackhole), then
//     `systemctl stop`: while the drain runs the unit is deactivating and
//     its Status: line says what the drain waits for (STOPPING=1 with
//     STATUS= at the SIGTERM); the stop ends with exit 0, Result=success;
//   - MNS refusing every request (503), then `systemctl restart`: the
//     drain ends once MNS failed twice in a row (a request and its probe),
//     not at shutdown_timeout, and the journal says so;
//   - MNS back: every message arrives exactly once.
//
// The times the stops took are logged (the load is the machine's).
func TestSystemdStopDuringAnMNSOutage(t *testing.T) {
	needNspawn(t)
	for _, protocol := range []string{"stomp", "amqp"} {
		t.Run(protocol, func(t *testing.T) { stopDuringOutage(t, protocol) })
	}
}

func stopDuringOutage(t *testing.T, protocol string) {
	emu, emuAddr := testpeers.StartMNS(t, mnsemu.Config{AccessKeys: map[string]string{imageAK: imageSecret}})
	emu.CreateQueue("telemetry-pk1")
	emu.CreateQueue("unrouted")
	sim, err := iotsim.Start(iotsim.Config{Secrets: map[string]string{imageAK: imageSecret}, AMQPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	httpPort := testpeers.FreePort(t)
	l := layout{Comment: "The unit's documented layout, stopped during an MNS outage.", ClientID: "nspawn-stop-" + protocol,
		SimAddr: sim.Addr(), CAFile: "/etc/iot-mns-bridge/ca.pem", EmuAddr: emuAddr, Port: httpPort, Protocol: protocol}
	// Where the messages held at the stop go: the spool (STOMP ack auto)
	// or back to the platform (AMQP).
	wantStay := "stay in the spool and are forwarded at the next start"
	if protocol == "amqp" {
		l.SimAddr, l.NoSpool, wantStay = sim.AMQPAddr(), true, "(the platform redelivers them)"
	}
	rig := newUnitRig(t, "iotstop-"+protocol, sim.CACertPEM(), l.yaml())
	m := rig.m
	if out, err := rig.sysctl("start", unitName); err != nil {
		t.Fatalf("systemctl start: %v: %s\n%s", err, out, m.journal(unitName))
	}
	rig.waitState("the status line to say connected", 90*time.Second, func(p map[string]string) bool {
		return p["StatusText"] == "connected 1/1; forwarding"
	}, "StatusText")
	delivered := func() map[string]int { return testpeers.Bodies(t, emu, "telemetry-pk1") }

	// A blackhole: every request hangs, then `systemctl stop`.
	emu.SetFaults(mnsemu.Faults{Latency: time.Hour})
	const n = 50
	publishBurst(sim, "a", n)
	rig.waitState("the burst taken from the platform", 60*time.Second, func(map[string]string) bool {
		return sim.Stats().Delivered >= n
	}, "ActiveState")
	t0 := time.Now()
	if out, err := rig.sysctl("stop", "--no-block", unitName); err != nil {
		t.Fatalf("systemctl stop --no-block: %v: %s", err, out)
	}
	p := rig.waitState("the unit deactivating with the drain's status line", 60*time.Second, func(p map[string]string) bool {
		return p["ActiveState"] != "active"
	}, "ActiveState", "SubState", "StatusText")
	t.Logf("during the stop (MNS a blackhole): %v", p)
	if p["ActiveState"] == "deactivating" && !strings.HasPrefix(p["StatusText"], "stopping: intake stopped, draining ") {
		t.Errorf("while the drain runs the status line is %q, want it to say what the drain waits for", p["StatusText"])
	}
	p = rig.waitState("the unit inactive", 2*time.Minute, func(p map[string]string) bool {
		return p["ActiveState"] == "inactive" || p["ActiveState"] == "failed"
	}, "ActiveState", "Result", "ExecMainStatus")
	t.Logf("systemctl stop (MNS a blackhole) took %v: %v", time.Since(t0).Round(time.Millisecond), p)
	if p["Result"] != "success" || p["ExecMainStatus"] != "0" {
		t.Errorf("after the stop: %v, want inactive, Result=success, exit 0\n%s", p, m.journal(unitName))
	}

	// MNS refuses every request (503); start, then `systemctl restart`.
	emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	if out, err := rig.sysctl("start", unitName); err != nil {
		t.Fatalf("systemctl start: %v: %s\n%s", err, out, m.journal(unitName))
	}
	publishBurst(sim, "b", n)
	rig.waitState("the status line to say MNS fails", 60*time.Second, func(p map[string]string) bool {
		return sim.Stats().Delivered >= 2*n && strings.Contains(p["StatusText"], "MNS sends failing")
	}, "StatusText")
	before := m.show(unitName, "MainPID")["MainPID"]
	t0 = time.Now()
	if out, err := rig.sysctl("restart", unitName); err != nil {
		t.Fatalf("systemctl restart: %v: %s\n%s", err, out, m.journal(unitName))
	}
	took := time.Since(t0)
	p = m.show(unitName, "ActiveState", "MainPID", "NRestarts")
	t.Logf("systemctl restart (MNS 503) took %v: %v", took.Round(time.Millisecond), p)
	if p["ActiveState"] != "active" || p["MainPID"] == before {
		t.Errorf("after the restart: %v (MainPID before %s), want active with a new process", p, before)
	}
	// journald may take the last lines of the old process's output later.
	rig.waitState("the restart's drain in the journal", 30*time.Second, func(map[string]string) bool {
		return strings.Contains(m.journal(unitName), "drain ended before shutdown_timeout")
	}, "ActiveState")
	for _, line := range strings.Split(m.journal(unitName), "\n") {
		if strings.Contains(line, "drain ended before shutdown_timeout") || strings.Contains(line, "msg=stopped") {
			t.Logf("journal: %s", line)
		}
	}
	if j := m.journal(unitName); !strings.Contains(j, wantStay) {
		t.Errorf("the journal does not say %q:\n%s", wantStay, j)
	}

	// MNS back: every message once.
	emu.SetFaults(mnsemu.Faults{})
	rig.waitState("every message at MNS", 2*time.Minute, func(map[string]string) bool {
		return len(delivered()) >= 2*n
	}, "ActiveState")
	got := delivered()
	for _, prefix := range []string{"a", "b"} {
		for _, body := range lost(got, prefix, n) {
			t.Errorf("message %s was lost", body)
		}
	}
	for body, c := range got {
		if c != 1 {
			t.Errorf("message %s arrived %d times", body, c)
		}
	}
	t.Logf("%d distinct messages at MNS, %s", len(got), fmt.Sprint(sim.Stats()))
	if out, err := rig.sysctl("stop", unitName); err != nil {
		t.Errorf("systemctl stop: %v: %s", err, out)
	}
}
