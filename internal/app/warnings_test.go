package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// TestCheckWarnsOfMissingStateDirectories: a dead-letter file or de-dup
// journal in a directory that does not exist passes validation, but run
// refuses to start on it; check says so beforehand.
func TestCheckWarnsOfMissingStateDirectories(t *testing.T) {
	asFromAShell(t)
	dir := t.TempDir()
	file := writeConfigFile(t, dir, unreachablePeersYAML+`delivery:
  dead_letter:
    file: nodir/dead-letter.jsonl
  dedup:
    file: other/dedup-window.log
`)
	code, out, errOut := runMain(t, context.Background(), "check", "-config", file)
	if code != ExitOK {
		t.Fatalf("check: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"warning: delivery.dead_letter.file: directory " + filepath.Join(dir, "nodir") + " does not exist here: run refuses to start",
		"warning: delivery.dedup.file: directory " + filepath.Join(dir, "other") + " does not exist here",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	os.Mkdir(filepath.Join(dir, "nodir"), 0o700)
	os.Mkdir(filepath.Join(dir, "other"), 0o700)
	if _, out, _ = runMain(t, context.Background(), "check", "-config", file); strings.Contains(out, "does not exist") {
		t.Errorf("check warns with the directories there:\n%s", out)
	}

	// A state file's path that is a directory: run refuses it too.
	os.Mkdir(filepath.Join(dir, "nodir", "dead-letter.jsonl"), 0o700)
	_, out, _ = runMain(t, context.Background(), "check", "-config", file)
	want := "warning: delivery.dead_letter.file: " + filepath.Join(dir, "nodir", "dead-letter.jsonl") + " is a directory: run refuses to start; name a file in it, like " +
		filepath.Join(dir, "nodir", "dead-letter.jsonl", "dead-letter.jsonl")
	if !strings.Contains(out, want) {
		t.Errorf("check output lacks %q:\n%s", want, out)
	}
}

// TestCheckNamesWhereStateGoes: check names the state files' paths as
// resolved here; from a shell (no $STATE_DIRECTORY) relative ones resolve
// against the config's directory, not where the systemd unit and the image
// write, and check says so, so that an operator who runs it next to the
// unit is not misled.
func TestCheckNamesWhereStateGoes(t *testing.T) {
	asFromAShell(t)
	dir := t.TempDir()
	file := writeStateConfig(t, dir, "spool")
	paths := func(base string) string {
		return "state: spool " + filepath.Join(base, "spool") + ", dead letters " + filepath.Join(base, "dead-letter.jsonl") +
			", de-dup window " + filepath.Join(base, "dedup-window.log")
	}
	code, out, errOut := runMain(t, context.Background(), "check", "-config", file)
	if code != ExitOK {
		t.Fatalf("check: exit %d: %s", code, errOut)
	}
	for _, want := range []string{paths(dir), "resolved against the config's directory", "$STATE_DIRECTORY, /var/lib/iot-mns-bridge"} {
		if !strings.Contains(out, want) {
			t.Errorf("check from a shell lacks %q:\n%s", want, out)
		}
	}
	state := t.TempDir()
	t.Setenv("STATE_DIRECTORY", state)
	if _, out, _ = runMain(t, context.Background(), "check", "-config", file); !strings.Contains(out, paths(state)) ||
		strings.Contains(out, "resolved against the config's directory") {
		t.Errorf("check with $STATE_DIRECTORY: want %q and no word of the config's directory:\n%s", paths(state), out)
	}
}

// unreachablePeersYAML is the head of a config whose source and MNS are
// closed loopback ports, its credentials from the environment: enough for
// check and for run to stop at the state files these tests are about.
const unreachablePeersYAML = `source:
  endpoint: 127.0.0.1:9
  client_id: gw
  credentials:
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret: ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}
mns:
  endpoint: http://127.0.0.1:9
routes:
  - match: /{productKey}/#
    queue: telemetry-{productKey}
`

// writeStateConfig writes dir/config.yaml: unreachablePeersYAML, the
// dead-letter file and the de-dup journal relative, and spool.dir spoolDir.
func writeStateConfig(t *testing.T, dir, spoolDir string) string {
	t.Helper()
	return writeConfigFile(t, dir, unreachablePeersYAML+`delivery:
  dead_letter:
    file: dead-letter.jsonl
  dedup:
    file: dedup-window.log
spool:
  dir: `+spoolDir+"\n")
}

// otherStateIn is the rest of a config for run whose spool is what fails:
// no HTTP listener, the dead-letter file and the de-dup journal in dir.
func otherStateIn(dir string) string {
	return "http:\n  listen: \"\"\ndelivery:\n  dead_letter:\n    file: " + dir + "/dl.jsonl\n  dedup:\n    file: " + dir + "/dedup.log\n"
}

// writeConfigFile writes yaml as dir/config.yaml and returns its path.
func writeConfigFile(t *testing.T, dir, yaml string) string {
	t.Helper()
	return testfile.Write(t, dir, "config.yaml", yaml)
}

// regularFileIn creates an empty regular file in dir and returns its path:
// where a directory is needed, it stops every open, also for root.
func regularFileIn(t *testing.T, dir string) string {
	t.Helper()
	return testfile.Write(t, dir, "afile", "")
}

// TestCheckWarnsOfASpoolDirRunCannotCreate: the spool creates its directory
// and parents, so a missing spool.dir is fine, but one under a regular file
// stops "run"; check says so beforehand.
func TestCheckWarnsOfASpoolDirRunCannotCreate(t *testing.T) {
	asFromAShell(t)
	dir := t.TempDir()
	afile := regularFileIn(t, dir)
	write := func(spoolDir string) string { return writeStateConfig(t, dir, spoolDir) }

	file := write("afile/spool")
	code, out, errOut := runMain(t, context.Background(), "check", "-config", file)
	if code != ExitOK {
		t.Fatalf("check: exit %d: %s", code, errOut)
	}
	want := "warning: spool.dir: " + afile + " is not a directory: run refuses to start"
	if !strings.Contains(out, want) {
		t.Errorf("check output lacks %q:\n%s", want, out)
	}
	// What check warns of, run refuses.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if code, _, errOut := runMain(t, ctx, "run", "-config", file); code == ExitOK || !strings.Contains(errOut, "spool") {
		t.Errorf("run with spool.dir under a file: exit %d, want a spool error: %s", code, errOut)
	}

	// A spool directory that does not exist yet is created by the spool:
	// no warning.
	file = write("new/deeper/spool")
	if _, out, _ = runMain(t, context.Background(), "check", "-config", file); strings.Contains(out, "spool.dir") {
		t.Errorf("check warns of a spool directory the spool can create:\n%s", out)
	}
}

// TestStateFileOutsideStateDirectoryIsNamed: under the systemd unit
// (ProtectSystem=strict, DynamicUser) and in the image only $STATE_DIRECTORY
// is writable, so a spool.dir, dead-letter file or de-dup journal outside it
// cannot work whatever the operator creates or chowns. The sentinel's walk
// under a real systemd: spool.dir /var/spool/iot-mns-bridge failed with
// "read-only file system; create it or make its parent writable by the
// bridge's user", and a dead-letter file in /var/log/iot-mns-bridge with
// "create it, writable by the bridge's user": advice that cannot help there.
// run's error now says where such a path must go, and exits 2, a config
// error, which the unit does not restart (RestartPreventExitStatus=2): it
// exited 1, and the unit restarted it every 5 s until its start limit
// (walk7: NRestarts=8 within 30 s), though only a change of the config
// can help.
func TestStateFileOutsideStateDirectoryIsNamed(t *testing.T) {
	withExampleKey(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	blocker := regularFileIn(t, dir)
	for _, tc := range []struct{ key, yaml, path string }{
		{"spool.dir", "spool:\n  dir: " + blocker + "/spool\n", blocker + "/spool"},
		{"delivery.dead_letter.file", "delivery:\n  dead_letter:\n    file: " + dir + "/nodir/dl.jsonl\n", dir + "/nodir/dl.jsonl"},
		{"delivery.dedup.file", "delivery:\n  dedup:\n    file: " + dir + "/nodir/dedup.log\n", dir + "/nodir/dedup.log"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			file := writeConfigFile(t, dir, unreachablePeersYAML+"http:\n  listen: \"\"\n"+tc.yaml)
			want := tc.key + " " + tc.path + " is outside $STATE_DIRECTORY (" + state + ")"
			t.Setenv("STATE_DIRECTORY", state)
			code, _, errOut := runMain(t, context.Background(), "run", "-config", file)
			if code != ExitUsage || !strings.Contains(errOut, want) || !strings.Contains(errOut, "make "+tc.key+" relative (it then goes under $STATE_DIRECTORY)") {
				t.Errorf("run: exit %d, want %d (a config error) and an error saying %q and how to fix it:\n%s", code, ExitUsage, want, errOut)
			}
			// Without $STATE_DIRECTORY (a shell, a plain service) the error
			// stays what it was.
			t.Setenv("STATE_DIRECTORY", "")
			if code, _, errOut := runMain(t, context.Background(), "run", "-config", file); code != ExitFailure || strings.Contains(errOut, "STATE_DIRECTORY (") {
				t.Errorf("run without $STATE_DIRECTORY: exit %d, want %d without the hint:\n%s", code, ExitFailure, errOut)
			}
		})
	}
}

// TestSpoolOpenErrorHintsAtTheDefaultOnlyWhenItIsOne: when the spool
// cannot be opened, run's error says the spool is on by default (and how to
// move it or turn it off) only when spool.dir is that default; a spool.dir
// the file sets is the operator's own choice, and the error just names it.
func TestSpoolOpenErrorHintsAtTheDefaultOnlyWhenItIsOne(t *testing.T) {
	withExampleKey(t)
	dir := t.TempDir()
	blocker := regularFileIn(t, dir)
	// The default spool.dir is "spool" under $STATE_DIRECTORY.
	t.Setenv("STATE_DIRECTORY", blocker)
	const hint = "the spool is on by default"
	for _, tc := range []struct {
		name, yaml, dir string
		hint            bool
	}{
		{"default", "", blocker + "/spool", true},
		{"set by the file", "spool:\n  dir: " + blocker + "/mine\n", blocker + "/mine", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfigFile(t, dir, unreachablePeersYAML+otherStateIn(dir)+tc.yaml)
			code, _, errOut := runMain(t, context.Background(), "run", "-config", file)
			if code != ExitFailure || !strings.Contains(errOut, "spool.dir "+tc.dir+": ") || strings.Contains(errOut, hint) != tc.hint {
				t.Errorf("run: exit %d, want %d and an error naming spool.dir %s, with the hint %q: %v:\n%s", code, ExitFailure, tc.dir, hint, tc.hint, errOut)
			}
		})
	}
}

// TestOutsideStateDirKeepsErrorsOfPathsInside: a path under
// $STATE_DIRECTORY (or the first of several, a:b), the directory itself
// included, keeps its error as it is; one outside, "..", or a sibling
// whose name only starts like it, gets the hint. The variable is read as
// run reads it: by config.Parse, into Config.StateDir.
func TestOutsideStateDirKeepsErrorsOfPathsInside(t *testing.T) {
	base := errors.New("open failed")
	stateDir := func(state string) string {
		t.Helper()
		env := map[string]string{"STATE_DIRECTORY": state,
			"ALIBABA_CLOUD_ACCESS_KEY_ID": exampleKeyID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": exampleSecret}
		cfg, err := config.Parse([]byte(unreachablePeersYAML), "", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		return cfg.StateDir
	}
	for _, tc := range []struct {
		path, state string
		hint        bool
	}{
		{"/var/lib/b/spool", "/var/lib/b", false},
		{"/var/lib/b", "/var/lib/b", false},
		{"/var/lib/b/x/../spool", "/var/lib/b:/var/lib/c", false},
		{"/var/lib/c/spool", "/var/lib/b:/var/lib/c", true},
		{"/var/lib/bb/spool", "/var/lib/b", true},
		{"/var/lib/b/../spool", "/var/lib/b", true},
		{"/var/lib", "/var/lib/b", true},
	} {
		err := outsideStateDir(base, "spool.dir", tc.path, stateDir(tc.state))
		if !errors.Is(err, base) || (err != base) != tc.hint {
			t.Errorf("%s with $STATE_DIRECTORY %s: %v, want the hint %v", tc.path, tc.state, err, tc.hint)
		}
	}
	if err := outsideStateDir(nil, "spool.dir", "/elsewhere", "/var/lib/b"); err != nil {
		t.Errorf("no error: %v", err)
	}
}

// TestLockedSpoolNamesSpoolDir: the spool speaks of its directory; when
// another process holds it, run's error names spool.dir and the directory.
func TestLockedSpoolNamesSpoolDir(t *testing.T) {
	withExampleKey(t)
	dir := t.TempDir()
	sp := filepath.Join(dir, "spool")
	held, err := spool.Open(spool.Options{Dir: sp, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	file := writeConfigFile(t, dir, unreachablePeersYAML+otherStateIn(dir)+"spool:\n  dir: "+sp+"\n")
	code, _, errOut := runMain(t, context.Background(), "run", "-config", file)
	if code != ExitFailure || !strings.Contains(errOut, "spool.dir "+sp+": ") ||
		!strings.Contains(errOut, "locked by another process; is another bridge running with the same directory?") {
		t.Errorf("run with a locked spool: exit %d, want %d and an error naming spool.dir %s, locked:\n%s", code, ExitFailure, sp, errOut)
	}
}

// TestLockedDefaultSpoolTellsEachBridgeItsOwn: a second bridge on the
// default spool (STOMP ack auto, no spool.dir) that another holds is told
// to give each bridge a spool.dir of its own, not to turn the spool off
// (which would lose, at a crash, what ack auto settled).
func TestLockedDefaultSpoolTellsEachBridgeItsOwn(t *testing.T) {
	asFromAShell(t)
	dir := t.TempDir()
	held, err := spool.Open(spool.Options{Dir: filepath.Join(dir, "spool"), MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	file := writeConfigFile(t, dir, unreachablePeersYAML+otherStateIn(dir))
	code, _, errOut := runMain(t, context.Background(), "run", "-config", file)
	if code != ExitFailure || !strings.Contains(errOut, "locked by another process; is another bridge running with the same directory?"+
		" (each bridge needs a spool.dir of its own: set another one for this bridge, or stop the other)") || strings.Contains(errOut, `dir: ""`) {
		t.Errorf("run on a default spool another bridge holds: exit %d, want %d and the advice of a spool.dir of its own, none of turning it off:\n%s",
			code, ExitFailure, errOut)
	}
}

// asFromAShell sets the environment of a command an operator runs from a
// shell: the AccessKey in the environment, no $STATE_DIRECTORY.
func asFromAShell(t *testing.T) {
	t.Helper()
	withExampleKey(t)
	t.Setenv("STATE_DIRECTORY", "")
}

// TestCheckNamesTheMNSProxy: with HTTPS_PROXY in the environment (the unit's
// env file, a shell behind a corporate proxy) check says that the MNS
// requests go through it, its password redacted; with the endpoint's host
// in NO_PROXY, or without a proxy, it says nothing of one. check runs as a
// child process: net/http reads the proxy variables once per process.
func TestCheckNamesTheMNSProxy(t *testing.T) {
	asFromAShell(t)
	// check without -connect sends nothing: the endpoint is only parsed.
	file := writeConfigFile(t, t.TempDir(), strings.Replace(unreachablePeersYAML, "endpoint: http://127.0.0.1:9",
		"endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com", 1))
	check := func(proxy, noProxy string) string {
		t.Helper()
		for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
			t.Setenv(k, "")
		}
		t.Setenv("HTTPS_PROXY", proxy)
		t.Setenv("NO_PROXY", noProxy)
		c := startChild(t, "check", "-config", file)
		if err := c.Cmd.Wait(); err != nil {
			t.Fatalf("check with HTTPS_PROXY=%q NO_PROXY=%q: %v\n%s", proxy, noProxy, err, c.Out)
		}
		return c.Out.String()
	}
	out := check("http://op:proxy-pw@127.0.0.1:3128", "")
	if want := "MNS requests go through the proxy http://op:xxxxx@127.0.0.1:3128"; !strings.Contains(out, want) || strings.Contains(out, "proxy-pw") {
		t.Errorf("check behind a proxy: want %q, and no password:\n%s", want, out)
	}
	for _, tc := range [][2]string{{"http://op:proxy-pw@127.0.0.1:3128", ".aliyuncs.com"}, {"", ""}} {
		if out := check(tc[0], tc[1]); strings.Contains(out, "proxy") {
			t.Errorf("check with HTTPS_PROXY=%q NO_PROXY=%q speaks of a proxy:\n%s", tc[0], tc[1], out)
		}
	}
}

// TestCheckWarnsOfASpoolLargerThanItsDisk: spool.max_bytes beyond what the
// spool's filesystem holds passes (a config that ran keeps running), and
// check says so, with the directory and the sizes; run logs the same
// warning at start (cfg.Warnings).
func TestCheckWarnsOfASpoolLargerThanItsDisk(t *testing.T) {
	asFromAShell(t)
	dir := t.TempDir()
	file := writeStateConfig(t, dir, "spool")
	for _, tc := range []struct {
		max  string
		warn bool
	}{{"1048576TiB", true}, {"1MiB", false}} {
		data, _ := os.ReadFile(file)
		os.WriteFile(file, append(data, "  max_bytes: "+tc.max+"\n"...), 0o600)
		code, out, errOut := runMain(t, context.Background(), "check", "-config", file)
		if code != ExitOK {
			t.Fatalf("check with spool.max_bytes %s: exit %d: %s", tc.max, code, errOut)
		}
		// The dead-letter file and the journal are on the spool's
		// filesystem: the warning counts them too.
		want := "warning: spool.max_bytes with delivery.dead_letter.max_bytes and the de-dup journal (delivery.dedup.file, bounded by delivery.dedup.size) on the same filesystem is larger than the whole filesystem of spool.dir; if MNS is down long enough the disk fills first"
		attrs := "spool.dir=" + filepath.Join(dir, "spool") + " spool.max_bytes=" + tc.max + " delivery.dead_letter.max_bytes=1GiB dedup_journal=about 10.3MiB together="
		if tc.warn && (!strings.Contains(out, want) || !strings.Contains(out, attrs)) {
			t.Errorf("spool.max_bytes %s: check output lacks %q ... %q:\n%s", tc.max, want, attrs, out)
		}
		if !tc.warn && strings.Contains(out, "warning: spool.max_bytes") {
			t.Errorf("spool.max_bytes %s: warned:\n%s", tc.max, out)
		}
		os.WriteFile(file, data, 0o600)
	}
}
