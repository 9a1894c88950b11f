package opscheck

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

const (
	imageAK     = "LTAIimageCheckKey"
	imageSecret = "image-check-secret-0123456789"
)

// podman runs podman with the project's containers.conf and returns its
// combined output.
func podman(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", args...)
	conf, _ := filepath.Abs(filepath.Join(repoRoot, "scripts/podman/containers.conf"))
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// runOpsStep runs scripts/ops-check.sh with one step and env, and returns
// "ok", or the skip reason, failing the test on a failure.
func runOpsStep(t *testing.T, step string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts/ops-check.sh"), step)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("scripts/ops-check.sh %s:\n%s", step, out)
	if err != nil {
		t.Fatalf("scripts/ops-check.sh %s: %v", step, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "ops-check: ok "+step {
			return "ok"
		}
		if rest, ok := strings.CutPrefix(line, "ops-check: SKIP "+step+": "); ok {
			return rest
		}
	}
	t.Fatalf("scripts/ops-check.sh %s reported no result", step)
	return ""
}

// TestImage builds the image's final stage offline with podman from the
// release binary (scripts/ops-check.sh image) and runs it as documented,
// with --network=host against the simulator and the emulator on loopback:
// version, non-root, the secret from /run/secrets, the spool on the state
// volume, HEALTHCHECK healthy, a graceful stop within the stop timeout
// with messages in flight and none lost (the next container drains the
// spool), and HEALTHCHECK still healthy while MNS fails (an outage is not a
// stuck bridge).
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a container image; skipped with -short")
	}
	// Mostly waiting (builds, stops, an MNS outage): runs beside TestOpsCheck
	// and TestSystemdUnit, which share nothing with it.
	t.Parallel()
	if os.Getenv("OPS_CHECK_QUICK") != "" && os.Getenv("CI") != "true" {
		t.Skip("OPS_CHECK_QUICK is set (under CI=true this runs)")
	}
	img := fmt.Sprintf("localhost/iot-mns-bridge:opscheck-%d", os.Getpid())
	name := fmt.Sprintf("iot-mns-bridge-opscheck-%d", os.Getpid())
	vol := name + "-state"
	ctx := context.Background()
	t.Cleanup(func() {
		podman(ctx, "rm", "-f", "-t", "0", name)
		podman(ctx, "volume", "rm", "-f", vol)
		podman(ctx, "rmi", "-f", img)
	})
	if r := runOpsStep(t, "image", "OPS_CHECK_IMAGE="+img, "OPS_CHECK_KEEP_IMAGE=1"); r != "ok" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the image step was skipped under CI=true: %s", r)
		}
		t.Skip(r)
	}

	df := parseRepoFile(t, "Dockerfile", parseDockerfile)
	final := df.stages[len(df.stages)-1]
	// The HEALTHCHECK asks the port of the config it is given, or the
	// default port 9477 without one.
	port := 9477
	if hc := strings.Join(final.all("HEALTHCHECK"), " "); strings.Contains(hc, "-config") {
		port = testpeers.FreePort(t)
	} else if c, err := net.DialTimeout("tcp", "127.0.0.1:9477", time.Second); err == nil {
		c.Close()
		t.Fatalf("127.0.0.1:9477 is taken on this host; the image's HEALTHCHECK (%s) asks that port, so the container (network=host) needs it", hc)
	}
	stopTimeout := 45 // the README's --stop-timeout

	emu, emuAddr := testpeers.StartMNS(t, mnsemu.Config{AccessKeys: map[string]string{imageAK: imageSecret}, Faults: mnsemu.Faults{Latency: 50 * time.Millisecond}})
	emu.CreateQueue("telemetry-pk1")
	emu.CreateQueue("unrouted")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	sim, err := iotsim.Start(iotsim.Config{Secrets: map[string]string{imageAK: imageSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })

	// /etc/iot-mns-bridge: the config and the CA, readable by the image's user.
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	writeFile(t, filepath.Join(etc, "ca.pem"), string(sim.CACertPEM()), 0o644)
	writeFile(t, filepath.Join(etc, "config.yaml"), layout{Comment: "The documented container layout (Dockerfile header), pointed at loopback peers.",
		ClientID: "image-check", SimAddr: sim.Addr(), CAFile: "ca.pem", EmuAddr: emuAddr, Port: port}.yaml(), 0o644)
	// The secret as a file only the image's user (65532) can read.
	secrets := filepath.Join(dir, "secrets")
	os.MkdirAll(secrets, 0o755)
	secretFile := filepath.Join(secrets, "access_key_secret")
	writeFile(t, secretFile, imageSecret+"\n", 0o400)
	if err := os.Chown(secretFile, 65532, 65532); err != nil {
		os.Chmod(secretFile, 0o444) // not root: world-readable instead
	}
	if out, err := podman(ctx, "volume", "create", vol); err != nil {
		t.Fatalf("podman volume create: %v: %s", err, out)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	start := func() {
		t.Helper()
		out, err := podman(ctx, "run", "-d", "--name", name, "--pull=never", "--network=host",
			"--stop-timeout", strconv.Itoa(stopTimeout),
			"-v", filepath.Join(etc, "config.yaml")+":/etc/iot-mns-bridge/config.yaml:ro",
			"-v", filepath.Join(etc, "ca.pem")+":/etc/iot-mns-bridge/ca.pem:ro",
			"-v", secretFile+":/run/secrets/access_key_secret:ro",
			"-v", vol+":/var/lib/iot-mns-bridge",
			"-e", "ALIBABA_CLOUD_ACCESS_KEY_ID="+imageAK, img)
		if err != nil {
			t.Fatalf("podman run: %v: %s", err, out)
		}
	}
	logs := func() string { out, _ := podman(ctx, "logs", name); return out }
	health := func() (bool, string) {
		out, err := podman(ctx, "healthcheck", "run", name)
		return err == nil, out
	}
	waitUntil := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out after %v waiting for %s; container log:\n%s", d, what, logs())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	delivered := func() map[string]int { return testpeers.Bodies(t, emu, "telemetry-pk1") }

	start()
	waitUntil("/readyz", 60*time.Second, func() bool { return httpStatus(base+"/readyz") == http.StatusOK })
	if ok, out := health(); !ok {
		t.Fatalf("HEALTHCHECK of a ready bridge failed: %s\n%s", out, logs())
	}
	if st, _ := podman(ctx, "inspect", "-f", "{{.State.Health.Status}}", name); st != "healthy" {
		t.Errorf("health status %q after a passing HEALTHCHECK, want healthy", st)
	}

	// Non-root: the bridge process runs as 65532.
	pid, _ := podman(ctx, "inspect", "-f", "{{.State.Pid}}", name)
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatalf("the container's process %q: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && (f[0] == "Uid:" || f[0] == "Gid:") && (f[1] != "65532" || f[2] != "65532") {
			t.Errorf("the bridge in the container runs with %s, want 65532 (non-root)", line)
		}
	}

	// Messages flow through the container.
	const n1 = 300
	publishBurst(sim, "a", n1)
	waitUntil("the first messages at MNS", 60*time.Second, func() bool { return len(delivered()) >= n1 })

	// The spool is on the state volume, owned by the image's user.
	mount, err := podman(ctx, "volume", "inspect", "-f", "{{.Mountpoint}}", vol)
	if err != nil {
		t.Fatalf("podman volume inspect: %v: %s", err, mount)
	}
	if fi, err := os.Stat(filepath.Join(mount, "spool")); err != nil {
		t.Errorf("no spool on the state volume: %v", err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65532 {
		t.Errorf("the spool on the state volume is owned by uid %d, want 65532", st.Uid)
	}

	// Graceful stop with messages in flight: MNS slows down, a burst comes
	// in, and podman stop (SIGTERM) ends the bridge within the stop timeout,
	// exit 0. What was not sent stays in the spool on the volume.
	emu.SetFaults(mnsemu.Faults{Latency: 20 * time.Second}) // beyond shutdown_timeout: the drain cannot finish
	const n2 = 2000
	publishBurst(sim, "b", n2)
	waitUntil("messages in flight", 60*time.Second, func() bool {
		var st struct {
			Pipeline struct{ Received int64 } `json:"pipeline"`
		}
		return getJSON(base+"/status", &st) == nil && st.Pipeline.Received >= n1+n2
	})
	t0 := time.Now()
	if out, err := podman(ctx, "stop", "-t", strconv.Itoa(stopTimeout), name); err != nil {
		t.Fatalf("podman stop: %v: %s", err, out)
	}
	took := time.Since(t0)
	code, _ := podman(ctx, "inspect", "-f", "{{.State.ExitCode}}", name)
	t.Logf("podman stop took %v, exit code %s", took.Round(time.Millisecond), code)
	if code != "0" {
		t.Errorf("the bridge exited %s on podman stop, want 0 (a drain within shutdown_timeout); log:\n%s", code, logs())
	}
	if took >= time.Duration(stopTimeout)*time.Second {
		t.Errorf("podman stop took %v: not within the stop timeout %ds (SIGKILL)", took, stopTimeout)
	}
	stopLog := logs()
	if strings.Contains(stopLog, imageSecret) {
		t.Errorf("the AccessKey secret appears in the container log")
	}
	if out, err := podman(ctx, "rm", name); err != nil {
		t.Fatalf("podman rm: %v: %s", err, out)
	}

	// A new container on the same volume sends what the spool kept: every
	// message arrives.
	emu.SetFaults(mnsemu.Faults{})
	start()
	waitUntil("every message at MNS after the restart", 120*time.Second, func() bool { return len(delivered()) >= n1+n2 })
	got := delivered()
	for _, body := range append(lost(got, "a", n1), lost(got, "b", n2)...) {
		t.Errorf("message %s was lost", body)
	}

	// An MNS outage is not a stuck bridge: while MNS fails every request
	// the bridge holds the messages and keeps asking (one probe at a time),
	// /status shows MNS's error and /readyz fails, and the HEALTHCHECK stays
	// healthy: a restart cannot fix MNS. (That this holds beyond the image's
	// 2-minute stall limit is internal/app's
	// TestHealthzTellsAnMNSOutageFromAStuckBridge, with a short limit.)
	waitUntil("/readyz after the restart", 60*time.Second, func() bool { return httpStatus(base+"/readyz") == http.StatusOK })
	emu.SetFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503})
	failedBefore := emu.Stats().InjectedErrors
	publishBurst(sim, "c", 10)
	waitUntil("10 messages held, /status showing MNS's 503, and 10 failed MNS requests", 2*time.Minute, func() bool {
		var st struct {
			Pipeline struct {
				InFlight int64 `json:"in_flight"`
			} `json:"pipeline"`
			MNS struct {
				LastError string `json:"last_error"`
			} `json:"mns"`
		}
		return getJSON(base+"/status", &st) == nil && st.Pipeline.InFlight == 10 && strings.Contains(st.MNS.LastError, "HTTP 503") &&
			emu.Stats().InjectedErrors >= failedBefore+10
	})
	if code := httpStatus(base + "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while MNS fails every request: %d, want 503", code)
	}
	if ok, out := health(); !ok {
		t.Errorf("HEALTHCHECK failed while MNS fails (an outage is not a stuck bridge): %s", out)
	}
	if st, _ := podman(ctx, "inspect", "-f", "{{.State.Health.Status}}", name); st != "healthy" {
		t.Errorf("health status %q while MNS fails, want healthy", st)
	}
	emu.SetFaults(mnsemu.Faults{})
	waitUntil("the messages held during the outage at MNS", 2*time.Minute, func() bool { return len(lost(delivered(), "c", 10)) == 0 })
	if ok, out := health(); !ok {
		t.Errorf("HEALTHCHECK after MNS recovered: %s", out)
	}
	if out, err := podman(ctx, "stop", "-t", strconv.Itoa(stopTimeout), name); err != nil {
		t.Fatalf("podman stop: %v: %s", err, out)
	}
	if code, _ := podman(ctx, "inspect", "-f", "{{.State.ExitCode}}", name); code != "0" {
		t.Errorf("the second container exited %s on podman stop, want 0", code)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}

func httpStatus(url string) int {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
