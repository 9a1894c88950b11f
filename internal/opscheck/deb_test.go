package opscheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDebMaintainerScripts runs the .deb's maintainer scripts (scripts/deb.sh)
// the way dpkg does, with a systemctl that only records its arguments:
// removing the package stops the bridge (else it runs on from a deleted
// binary with no unit file, taking the platform's messages), an upgrade
// leaves it running, and a purge removes what the install steps had the
// operator add (the secret file, the unit's enablement) but keeps the state
// directory, whose spool and dead letters may hold messages MNS has not
// accepted. Paths honour $DPKG_ROOT, so the purge runs in a scratch root;
// "systemd is running" (/run/systemd/system) is faked in a private mount
// namespace, so the stop needs root and unshare.
func TestDebMaintainerScripts(t *testing.T) {
	missing := func(why string) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (scripts/test.sh runs CI as root on Debian, where dpkg-deb and unshare are present)", why)
		}
		t.Skip(why)
	}
	for _, tool := range []string{"dpkg-deb", "unshare", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " not found")
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "iot-mns-bridge")
	writeFile(t, bin, "#!/bin/sh\n", 0o755)
	build := exec.Command("bash", filepath.Join(repoRoot, "scripts/deb.sh"), bin, "amd64", dir)
	build.Env = append(os.Environ(), "VERSION=v0.0.0-maint")
	out, err := build.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v", err)
	}
	ctl := filepath.Join(dir, "DEBIAN")
	if out, err := exec.Command("dpkg-deb", "-e", strings.TrimSpace(string(out)), ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v: %s", err, out)
	}
	// A systemctl that appends its arguments to a log.
	fake := filepath.Join(dir, "fakebin")
	os.Mkdir(fake, 0o755)
	calls := filepath.Join(dir, "systemctl.log")
	writeFile(t, filepath.Join(fake, "systemctl"), "#!/bin/sh\necho \"$*\" >>"+calls+"\n", 0o755)
	// script runs a maintainer script with the fake systemctl first in PATH;
	// withSystemd fakes a running systemd in a private mount namespace.
	script := func(env []string, withSystemd bool, name string, args ...string) string {
		t.Helper()
		os.Remove(calls)
		path := filepath.Join(ctl, name)
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("the .deb has no %s: %v", name, err)
		}
		cmd := exec.Command("sh", append([]string{path}, args...)...)
		if withSystemd {
			cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
				`mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh "$0" "$@"`, path}, args...)...)
		}
		cmd.Env = append(os.Environ(), append([]string{"PATH=" + fake + ":" + os.Getenv("PATH")}, env...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		b, _ := os.ReadFile(calls)
		return string(b)
	}

	if os.Geteuid() != 0 {
		missing("faking a running systemd needs root (a private mount namespace with /run/systemd/system)")
	}
	if got := script(nil, true, "prerm", "remove"); !strings.Contains(got, "stop iot-mns-bridge.service") {
		t.Errorf("prerm remove with systemd running called systemctl %q, want it to stop iot-mns-bridge.service", got)
	}
	if got := script(nil, true, "prerm", "upgrade", "0.0.1"); strings.Contains(got, "stop") {
		t.Errorf("prerm upgrade called systemctl %q: an upgrade leaves the running bridge to the operator", got)
	}
	if got := script(nil, true, "postinst", "configure"); strings.TrimSpace(got) != "--system daemon-reload" {
		t.Errorf("postinst configure called systemctl %q, want only a daemon-reload (installing neither enables nor starts)", got)
	}

	// Purge, in a scratch root: what the README's install steps add goes,
	// the state stays.
	root := filepath.Join(dir, "root")
	etc := filepath.Join(root, "etc/iot-mns-bridge")
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	state := filepath.Join(root, "var/lib/private/iot-mns-bridge/spool")
	for _, d := range []string{etc, wants, state} {
		os.MkdirAll(d, 0o755)
	}
	writeFile(t, filepath.Join(etc, "access_key_secret"), "secret\n", 0o600)
	writeFile(t, filepath.Join(state, "spool.db"), "messages", 0o600)
	if err := os.Symlink("/lib/systemd/system/iot-mns-bridge.service", filepath.Join(wants, "iot-mns-bridge.service")); err != nil {
		t.Fatal(err)
	}
	if got := script([]string{"DPKG_ROOT=" + root}, true, "postrm", "purge"); got != "" {
		t.Errorf("postrm purge into DPKG_ROOT called the host's systemctl %q", got)
	}
	for _, gone := range []string{etc, filepath.Join(wants, "iot-mns-bridge.service")} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("after purge %s is still there", strings.TrimPrefix(gone, root))
		}
	}
	if _, err := os.Stat(filepath.Join(state, "spool.db")); err != nil {
		t.Errorf("purge removed the spool (messages MNS may not have accepted): %v", err)
	}
	if got := script(nil, true, "postrm", "remove"); strings.TrimSpace(got) != "--system daemon-reload" {
		t.Errorf("postrm remove called systemctl %q, want a daemon-reload", got)
	}
}
