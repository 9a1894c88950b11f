package opscheck

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// repoRoot is the repository root relative to this package's directory,
// where go test runs.
const repoRoot = "../.."

func readRepoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

// parseRepoFile parses the repository's file name with parse; the test
// stops when the file cannot be read or parsed.
func parseRepoFile[T any](t *testing.T, name string, parse func(string) (T, error)) T {
	t.Helper()
	v, err := parse(readRepoFile(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// refusesEach checks that parse (called name in the error) refuses each of
// bad.
func refusesEach[T any](t *testing.T, name string, parse func(string) (T, error), bad ...string) {
	t.Helper()
	for _, text := range bad {
		if _, err := parse(text); err == nil {
			t.Errorf("%s(%q) succeeded, want an error", name, text)
		}
	}
}

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

// parseUnit parses the subset of the systemd unit syntax the project's unit
// uses: [Section] headers, Key=Value lines, # and ; comments, no line
// continuations (which it rejects).
func parseUnit(text string) (unitFile, error) {
	u := unitFile{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case strings.HasSuffix(line, "\\"):
			return nil, errors.New("line " + strconv.Itoa(i+1) + ": continuation lines are not supported by this check")
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, errors.New("line " + strconv.Itoa(i+1) + ": not Key=Value inside a section: " + line)
			}
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	return u, nil
}

// last is the effective value of a single-valued key ("" when unset).
func (u unitFile) last(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// parseTimeSpan parses the systemd time spans the unit uses: a number with
// an optional unit (ms, s, sec, m, min, h; seconds when none), e.g. "45s", "2min".
func parseTimeSpan(s string) (time.Duration, error) {
	m := regexp.MustCompile(`^([0-9]+)\s*(ms|s|sec|m|min|h|)$`).FindStringSubmatch(s)
	if m == nil {
		return 0, errors.New("time span " + strconv.Quote(s) + " not understood by this check")
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, err
	}
	unit := map[string]time.Duration{"ms": time.Millisecond, "": time.Second, "s": time.Second, "sec": time.Second,
		"m": time.Minute, "min": time.Minute, "h": time.Hour}[m[2]]
	return time.Duration(n) * unit, nil
}

func TestParseTimeSpan(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "45s", want: 45 * time.Second},
		{in: "60", want: time.Minute},
		{in: "2min", want: 2 * time.Minute},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "1h", want: time.Hour},
		{in: "1min 30s", bad: true},
		{in: "infinity", bad: true},
	}
	for _, tt := range tests {
		got, err := parseTimeSpan(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseTimeSpan(%q) = %v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[Unit]\nDescription=x = y\n\n[Service]\n; c\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged\nType=notify\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.last("Unit", "Description"); got != "x = y" {
		t.Errorf("Description = %q, want %q", got, "x = y")
	}
	if got := u["Service"]["SystemCallFilter"]; !slices.Equal(got, []string{"@system-service", "~@privileged"}) {
		t.Errorf("SystemCallFilter = %q, want both lines in order", got)
	}
	refusesEach(t, "parseUnit", parseUnit, "Type=notify\n", "[Service]\nType notify\n", "[Service]\nExecStart=/bin/x \\\n  -y\n")
}

// TestUnitFile checks the directives the bridge's lifecycle and hardening
// rely on; systemd-analyze (in TestOpsCheck) checks the syntax.
func TestUnitFile(t *testing.T) {
	u := parseRepoFile(t, "configs/iot-mns-bridge.service", parseUnit)
	want := []struct{ section, key, value, why string }{
		{"Service", "Type", "notify", "the bridge sends READY=1 once started, and STATUS= lines"},
		{"Service", "NotifyAccess", "main", "only the bridge itself notifies"},
		{"Service", "ExecStart", "/usr/local/bin/iot-mns-bridge run -config /etc/iot-mns-bridge/config.yaml", "the documented paths"},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID", "SIGHUP reloads routes and delivery settings"},
		{"Service", "LoadCredential", "access_key_secret:/etc/iot-mns-bridge/access_key_secret", "the config reads access_key_secret_file: access_key_secret"},
		{"Service", "Restart", "on-failure", "a crash or a watchdog timeout restarts the bridge"},
		{"Service", "RestartPreventExitStatus", "2", "exit 2 is a config error: restarting cannot fix it"},
		{"Service", "Environment", "GOTRACEBACK=crash", "a panic and the watchdog's SIGABRT end the bridge by the signal, not by Go's exit status 2, which RestartPreventExitStatus keeps for config errors: they are restarted"},
		{"Service", "LimitCORE", "0", "a crash writes no core file (the process holds the AccessKey secret)"},
		{"Unit", "StartLimitIntervalSec", "600", "a restart loop stops at a limit a person can see (start-limit-hit)"},
		{"Unit", "StartLimitBurst", "10", "a restart loop stops at a limit a person can see (start-limit-hit)"},
		{"Service", "DynamicUser", "yes", "no fixed account needed"},
		{"Service", "StateDirectory", "iot-mns-bridge", "spool and dead-letter file live under /var/lib/iot-mns-bridge"},
		{"Service", "UMask", "0077", "spool and dead letters hold message bodies"},
		{"Service", "NoNewPrivileges", "yes", "hardening"},
		{"Service", "CapabilityBoundingSet", "", "hardening: no capabilities"},
		{"Service", "ProtectSystem", "strict", "hardening"},
		{"Service", "ProtectHome", "yes", "hardening"},
		{"Service", "PrivateTmp", "yes", "hardening"},
		{"Service", "PrivateDevices", "yes", "hardening"},
		{"Service", "ProtectKernelTunables", "yes", "hardening"},
		{"Service", "ProtectKernelModules", "yes", "hardening"},
		{"Service", "ProtectKernelLogs", "yes", "hardening"},
		{"Service", "ProtectControlGroups", "yes", "hardening"},
		{"Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX", "TCP to the platform and MNS, AF_UNIX for sd_notify and the journal"},
		{"Service", "RestrictNamespaces", "yes", "hardening"},
		{"Service", "LockPersonality", "yes", "hardening"},
		{"Service", "MemoryDenyWriteExecute", "yes", "hardening"},
		{"Service", "SystemCallArchitectures", "native", "hardening"},
		{"Unit", "After", "network-online.target time-sync.target", "the first dial needs the network; and, where a service holds time-sync.target until NTP set the clock (systemd-time-wait-sync on a box without a real-time clock), a clock that TLS and MNS's signatures accept"},
		{"Install", "WantedBy", "multi-user.target", "systemctl enable"},
	}
	for _, w := range want {
		vs, ok := u[w.section][w.key]
		if !ok || u.last(w.section, w.key) != w.value {
			t.Errorf("[%s] %s = %q, want %q (%s)", w.section, w.key, vs, w.value, w.why)
		}
	}
	if got := u["Service"]["SystemCallFilter"]; !slices.Contains(got, "@system-service") {
		t.Errorf("[Service] SystemCallFilter = %q, want @system-service among them", got)
	}
	if got := u.last("Service", "LimitNOFILE"); got == "" {
		t.Errorf("[Service] LimitNOFILE unset, want an explicit limit for the connections and spool")
	}

	spans := map[string]time.Duration{}
	for _, key := range []string{"TimeoutStopSec", "WatchdogSec", "RestartSec"} {
		d, err := parseTimeSpan(u.last("Service", key))
		if err != nil || d <= 0 {
			t.Errorf("[Service] %s = %q: want a positive time span (%v)", key, u.last("Service", key), err)
		}
		spans[key] = d
	}
	if st := config.Default().ShutdownTimeout; spans["TimeoutStopSec"] <= st {
		t.Errorf("TimeoutStopSec %v is not longer than the default shutdown_timeout %v: systemd would SIGKILL a draining bridge", spans["TimeoutStopSec"], st)
	}
}

// dockerfile is a parsed Dockerfile: its stages, each a FROM line and the
// instructions after it.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from  string // the FROM arguments
	instr []instruction
}

type instruction struct {
	cmd  string // upper case
	args string // with continuations joined
}

// parseDockerfile splits text into instructions, joining lines that end in
// a backslash and dropping comments, and groups them into stages.
func parseDockerfile(text string) (dockerfile, error) {
	var df dockerfile
	var pending string
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") { // Docker skips both inside continuations too
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, "\\"); ok {
			pending += cont + " "
			continue
		}
		full := pending + trimmed
		pending = ""
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.Join(strings.Fields(args), " ")}
		if in.cmd == "FROM" {
			df.stages = append(df.stages, stage{from: in.args})
			continue
		}
		if len(df.stages) == 0 {
			if in.cmd == "ARG" {
				continue
			}
			return df, errors.New(in.cmd + " before the first FROM")
		}
		s := &df.stages[len(df.stages)-1]
		s.instr = append(s.instr, in)
	}
	if pending != "" {
		return df, errors.New("the last instruction ends in a backslash")
	}
	if len(df.stages) == 0 {
		return df, errors.New("no FROM")
	}
	return df, nil
}

// all returns the arguments of every cmd instruction in the stage.
func (s stage) all(cmd string) []string {
	var out []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in.args)
		}
	}
	return out
}

func TestParseDockerfile(t *testing.T) {
	df, err := parseDockerfile("# c\nARG X=1\nFROM a AS b\nRUN one \\\n  two\n\nFROM c\nUSER 1:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) != 2 || df.stages[0].from != "a AS b" || df.stages[1].from != "c" {
		t.Fatalf("stages = %+v, want FROM a AS b and FROM c", df.stages)
	}
	if got := df.stages[0].all("RUN"); !slices.Equal(got, []string{"one two"}) {
		t.Errorf("RUN = %q, want the continuation joined", got)
	}
	refusesEach(t, "parseDockerfile", parseDockerfile, "RUN x\n", "FROM a\nRUN x \\\n", "# only a comment\n")
}

func TestDockerfile(t *testing.T) {
	df := parseRepoFile(t, "Dockerfile", parseDockerfile)
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a runtime stage", len(df.stages))
	}
	build, final := df.stages[0], df.stages[len(df.stages)-1]

	// Multi-arch by cross-compiling: the build stage runs on the builder's
	// platform and builds for the target's.
	if !strings.HasPrefix(build.from, "--platform=$BUILDPLATFORM golang:1.26") {
		t.Errorf("build stage FROM %q, want --platform=$BUILDPLATFORM golang:1.26 (go.mod's Go version, on the builder's platform)", build.from)
	}
	runs := strings.Join(build.all("RUN"), "\n")
	if !strings.Contains(runs, "scripts/build.sh") || !strings.Contains(runs, `VERSION="$VERSION"`) {
		t.Errorf("build stage RUN %q: want scripts/build.sh with VERSION passed, the flags CI tests (scripts/ops-check.sh)", runs)
	}
	for _, env := range []string{`GOOS="$TARGETOS"`, `GOARCH="$TARGETARCH"`, `GOARM="${TARGETVARIANT#v}"`} {
		if !strings.Contains(runs, env) {
			t.Errorf("build stage RUN %q: want %s passed to scripts/build.sh (cross-compiling for the target platform)", runs, env)
		}
	}
	for _, arg := range []string{"VERSION", "TARGETOS", "TARGETARCH", "TARGETVARIANT"} {
		if args := build.all("ARG"); !slices.ContainsFunc(args, func(a string) bool { return a == arg || strings.HasPrefix(a, arg+"=") }) {
			t.Errorf("build stage ARG %q, want ARG %s", args, arg)
		}
	}

	if final.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %q, want gcr.io/distroless/static-debian12:nonroot", final.from)
	}
	users := final.all("USER")
	if len(users) != 1 || !regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`).MatchString(users[0]) {
		t.Errorf("final stage USER %q, want one numeric non-root uid:gid (Kubernetes runAsNonRoot checks it)", users)
	}
	exact := []struct{ cmd, want string }{
		{"ENTRYPOINT", `["/iot-mns-bridge"]`},
		{"CMD", `["run", "-config", "/etc/iot-mns-bridge/config.yaml"]`},
		// The health check follows the config the container runs with
		// (its http.listen), not a fixed port.
		{"HEALTHCHECK", `CMD ["/iot-mns-bridge", "healthcheck", "-config", "/etc/iot-mns-bridge/config.yaml"]`},
		{"VOLUME", `["/var/lib/iot-mns-bridge"]`},
	}
	for _, e := range exact {
		got := final.all(e.cmd)
		if len(got) != 1 || !strings.HasSuffix(got[0], e.want) {
			t.Errorf("final stage %s %q, want %s", e.cmd, got, e.want)
		}
	}
	if copies := final.all("COPY"); !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " /iot-mns-bridge") }) {
		t.Errorf("final stage COPY %q: nothing copied to /iot-mns-bridge, which ENTRYPOINT runs", copies)
	}

	// healthcheck without flags asks http://127.0.0.1:<port of the default
	// http.listen>/healthz, so the image must expose that port.
	ap, err := netip.ParseAddrPort(config.Default().HTTP.Listen)
	if err != nil {
		t.Fatalf("default http.listen: %v", err)
	}
	if got, want := final.all("EXPOSE"), strconv.Itoa(int(ap.Port())); !slices.Equal(got, []string{want}) {
		t.Errorf("final stage EXPOSE %q, want %s, the port of the default http.listen that healthcheck asks", got, want)
	}
	env := strings.Join(final.all("ENV"), " ")
	for _, kv := range []string{"STATE_DIRECTORY=/var/lib/iot-mns-bridge", "CREDENTIALS_DIRECTORY=/run/secrets"} {
		if !strings.Contains(env, kv) {
			t.Errorf("final stage ENV %q lacks %s, which the documented config relies on as under systemd", env, kv)
		}
	}
}

// TestDockerignore checks that .dockerignore keeps .git out of the build
// context and nothing the build needs.
func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(readRepoFile(t, ".dockerignore"), "\n") {
		if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
			patterns = append(patterns, strings.TrimPrefix(line, "/"))
		}
	}
	ignored := func(name string) bool {
		for _, p := range patterns {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				if ok, _ := path.Match(rest, path.Base(name)); ok {
					return true
				}
			}
		}
		return false
	}
	for _, name := range []string{"go.mod", "go.sum", "scripts", "scripts/build.sh", "cmd", "internal", "bridge", "config", "iotauth", "sinks", "mnsemu", "iotsim"} {
		if ignored(name) {
			t.Errorf(".dockerignore excludes %s, which the image build needs", name)
		}
	}
	if !ignored(".git") {
		t.Errorf(".dockerignore does not exclude .git")
	}
}

// opsSteps are the steps of scripts/ops-check.sh, in order; TestOpsCheck
// reports each as a subtest.
var opsSteps = []string{"build", "version", "run", "unit", "release", "deb", "qemu", "rules", "kube"}

// TestOpsCheck runs scripts/ops-check.sh (build with the Dockerfile's flags,
// version, a run with healthcheck, SIGHUP and SIGTERM, systemd-analyze
// verify, the release artifacts, the .deb installed and purged, the arm
// binaries under qemu, promtool on the alerting rules and the dashboard) with a notify socket, and reports each of its steps
// as a subtest. OPS_CHECK_QUICK=1 skips the heavy steps outside CI.
func TestOpsCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs it against the simulator and emulator; skipped with -short")
	}
	t.Parallel() // beside TestImage and TestSystemdUnit: own work directory and ports
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("scripts/ops-check.sh needs bash: %v", err)
	}
	notify := testpeers.ListenNotify(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts/ops-check.sh"))
	// The script and everything it starts share a process group, so that a
	// timeout stops all of them (the script's trap stops its children too).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	// WATCHDOG_USEC=20000: the bridge pings every 10ms while healthy, so any
	// run that gets to /readyz has pinged. OPS_CHECK_NOTIFY_LOG: the run step
	// waits there for the status line saying connected before it reloads
	// (the line is sent within statusEvery of the change: a run of the step
	// shorter than that ended before it came).
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.Addr(), "WATCHDOG_USEC=20000", "OPS_CHECK_NOTIFY_LOG="+notify.Log(t))
	out, err := cmd.CombinedOutput()
	msgs := notify.Stop()
	t.Logf("scripts/ops-check.sh:\n%s", out)
	if err != nil {
		t.Fatalf("scripts/ops-check.sh: %v (ctx: %v)", err, ctx.Err())
	}

	results := map[string]string{} // step -> "ok" or the skip reason
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if step, ok := strings.CutPrefix(line, "ops-check: ok "); ok {
			results[step] = "ok"
		} else if rest, ok := strings.CutPrefix(line, "ops-check: SKIP "); ok {
			step, reason, _ := strings.Cut(rest, ": ")
			results[step] = "SKIP " + reason
		}
	}
	for _, step := range opsSteps {
		t.Run(step, func(t *testing.T) {
			switch r := results[step]; {
			case r == "ok":
			case strings.HasPrefix(r, "SKIP "):
				if os.Getenv("CI") == "true" {
					t.Fatalf("skipped under CI=true: %s", r)
				}
				t.Skip(r)
			default:
				t.Fatalf("the script reported no result for step %s", step)
			}
		})
	}

	t.Run("sd_notify", func(t *testing.T) {
		// The bridge announces READY once started, says in STATUS= that it
		// is connected, pings the watchdog, reloads on SIGHUP (RELOADING,
		// then READY) and says STOPPING (with the STATUS= of the drain, in
		// one datagram).
		msgs := firstLines(msgs)
		want := []string{"READY=1", "WATCHDOG=1", "RELOADING=1", "STOPPING=1"}
		for _, w := range want {
			if !slices.Contains(msgs, w) {
				t.Errorf("no %s among the sd_notify messages %q", w, compact(msgs))
			}
		}
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, "STATUS=connected ") }) {
			t.Errorf("no STATUS=connected ... among the sd_notify messages %q", compact(msgs))
		}
		ready, reloading, stopping := slices.Index(msgs, "READY=1"), slices.Index(msgs, "RELOADING=1"), slices.Index(msgs, "STOPPING=1")
		if ready >= 0 && reloading >= 0 && stopping >= 0 && !(ready < reloading && reloading < stopping) {
			t.Errorf("sd_notify order %q: want READY=1, then RELOADING=1, then STOPPING=1", compact(msgs))
		}
	})
}

// firstLines is each datagram's first assignment ("STOPPING=1" of
// "STOPPING=1\nSTATUS=...").
func firstLines(msgs []string) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i], _, _ = strings.Cut(m, "\n")
	}
	return out
}

// compact collapses runs of equal messages ("WATCHDOG=1 x12") for readable
// failure messages.
func compact(msgs []string) []string {
	var out []string
	for i := 0; i < len(msgs); {
		j := i
		for j < len(msgs) && msgs[j] == msgs[i] {
			j++
		}
		if j-i > 1 {
			out = append(out, msgs[i]+" x"+strconv.Itoa(j-i))
		} else {
			out = append(out, msgs[i])
		}
		i = j
	}
	return out
}
