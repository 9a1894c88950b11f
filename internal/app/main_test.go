package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// runMain runs the CLI in-process and returns its exit code, stdout, stderr.
func runMain(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, args, Stdio{In: strings.NewReader(""), Out: &out, Err: &errb})
	return code, out.String(), errb.String()
}

// The example config's AccessKey pair and the password openssl computes for
// it (iotauth/testdata/vectors.tsv, hmacsha1, timestamp 1700000000000):
//
//	printf 'authId=LTAI5tExampleKeyId1&timestamp=1700000000000' | openssl dgst -sha1 -hmac 3c5cmT0xExampleSecretValue0 -binary | base64
const (
	exampleKeyID    = "LTAI5tExampleKeyId1"
	exampleSecret   = "3c5cmT0xExampleSecretValue0"
	examplePassword = "1+V/Y4jO3Ak0Mt+KHcHk/hMA13Y="
)

// withExampleKey puts the example config's AccessKey pair in the
// environment, where configs/example.yaml and the tests' own configs read it
// (${ALIBABA_CLOUD_ACCESS_KEY_ID}, ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}).
func withExampleKey(t *testing.T) {
	t.Helper()
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", exampleKeyID)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", exampleSecret)
}

func TestSignExampleConfigMatchesOpenSSL(t *testing.T) {
	withExampleKey(t)
	t.Setenv("HOSTNAME", "edge-gw-01")
	code, out, errOut := runMain(t, context.Background(), "sign", "-config", "../../configs/example.yaml", "-timestamp", "1700000000000")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "username: edge-gw-01|authMode=aksign,signMethod=hmacsha1,timestamp=1700000000000,authId=" + exampleKeyID +
		",iotInstanceId=,consumerGroupId=DEFAULT_GROUP|\npassword: " + examplePassword + "\n"
	if out != want {
		t.Errorf("stdout =\n%s\nwant\n%s", out, want)
	}
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); len(lines) != 1 || !strings.Contains(errOut, "credential") {
		t.Errorf("stderr should be one warning line, got %q", errOut)
	}
	if strings.Contains(errOut, examplePassword) || strings.Contains(out+errOut, exampleSecret) {
		t.Error("secret or password leaked outside the password line")
	}
}

func TestExampleConfigChecks(t *testing.T) {
	withExampleKey(t)
	dir := t.TempDir()
	// The dead-letter file is relative to the config's directory: copy the
	// example so the test writes nothing into the source tree.
	data, err := os.ReadFile("../../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := testfile.Write(t, dir, "example.yaml", string(data))
	code, out, errOut := runMain(t, context.Background(), "check", "-config", path)
	if code != ExitOK || !strings.Contains(out, "is valid") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

func TestBadConfigsExitTwoWithTheirMessage(t *testing.T) {
	withExampleKey(t)
	bad, err := filepath.Glob("../../config/testdata/bad/*.yaml")
	if err != nil || len(bad) < 10 {
		t.Fatalf("bad configs: %v (%d)", err, len(bad))
	}
	for _, path := range bad {
		want, err := os.ReadFile(strings.TrimSuffix(path, ".yaml") + ".err")
		if err != nil {
			t.Fatal(err)
		}
		t.Run(filepath.Base(path), func(t *testing.T) {
			for _, cmd := range []string{"check", "sign", "run"} {
				code, _, errOut := runMain(t, context.Background(), cmd, "-config", path)
				if code != ExitUsage {
					t.Fatalf("%s: exit %d, want 2; stderr %s", cmd, code, errOut)
				}
				for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
					if !strings.Contains(errOut, line) {
						t.Errorf("%s: stderr %q lacks %q", cmd, errOut, line)
					}
				}
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"run"}, {"check", "-bogus"}, {"sign", "-config"}, {"run", "-config", "/does/not/exist.yaml"},
		{"version", "stray"}, {"mns-emulator", "-bogus"}, {"mns-emulator", "stray"}, {"iot-simulator", "-bogus"}, {"iot-simulator", "stray"}} {
		code, _, errOut := runMain(t, context.Background(), args...)
		if code != ExitUsage || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a reason", args, code, errOut)
		}
	}
	code, out, _ := runMain(t, context.Background(), "help")
	if code != ExitOK || !strings.Contains(out, "iot-mns-bridge run") {
		t.Errorf("help: %d %q", code, out)
	}
	// check's -probe sends a message: the help names it, as README does.
	if !strings.Contains(out, "check         -config FILE [-connect [-probe]]") {
		t.Errorf("help does not name check -probe: %q", out)
	}
	code, out, _ = runMain(t, context.Background(), "version")
	if code != ExitOK || !strings.HasPrefix(out, "iot-mns-bridge ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// exampleConfig returns configs/example.yaml, with its AccessKey pair in
// the environment.
func exampleConfig(t *testing.T) string {
	t.Helper()
	withExampleKey(t)
	data, err := os.ReadFile("../../configs/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// check reports the problems of every phase of loading at once, in the
// order of the file: an unset ${VAR} (expansion), a duration without a unit
// (decoding) and an unsupported log level (validation).
func TestCheckReportsEveryPhaseAtOnce(t *testing.T) {
	text := exampleConfig(t)
	for _, r := range [][2]string{
		{"client_id: edge-gw-01", "client_id: ${IOT_MNS_BRIDGE_TEST_UNSET}"},
		{"heartbeat: 30s ", "heartbeat: 30 "},
		{"level: info ", "level: verbose "},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("example lacks %q", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	path := testfile.Write(t, t.TempDir(), "example.yaml", text)
	code, _, errOut := runMain(t, context.Background(), "check", "-config", path)
	want := []string{
		"source.client_id: environment variable IOT_MNS_BRIDGE_TEST_UNSET is not set",
		`source.stomp.heartbeat: "30" is not a duration`,
		`log.level: "verbose" is not supported`,
	}
	at := 0
	for _, w := range want {
		i := strings.Index(errOut[at:], w)
		if i < 0 {
			t.Fatalf("exit %d; stderr lacks %q (in this order):\n%s", code, w, errOut)
		}
		at += i + len(w)
	}
	if code != ExitUsage || strings.Contains(errOut, "client_id: required") {
		t.Errorf("exit %d, want %d, and no follow-on error:\n%s", code, ExitUsage, errOut)
	}
}

// An https internal endpoint is not refused, but check warns naming the
// documented http form; the http form gets no warning.
func TestCheckWarnsOfHTTPSInternalEndpoint(t *testing.T) {
	// The example with its placeholders filled in (check warns of them),
	// and the instance's ID with its endpoint (check warns of an instance
	// endpoint without it).
	data := []byte(strings.NewReplacer("1234567890123456", "5678901234567890", "iot-06z00xxxx", "iot-06z00ax1o2",
		`iot_instance_id: ""`, "iot_instance_id: iot-06z00ax1o2").Replace(string(exampleConfig(t))))
	const public = "endpoint: https://5678901234567890.mns.cn-hangzhou.aliyuncs.com"
	if !strings.Contains(string(data), public) {
		t.Fatalf("example lacks %q", public)
	}
	for _, tc := range []struct {
		endpoint string
		warn     bool
	}{
		{"https://5678901234567890.mns.cn-hangzhou-internal.aliyuncs.com", true},
		{"http://5678901234567890.mns.cn-hangzhou-internal.aliyuncs.com", false},
		{"https://5678901234567890.mns.cn-hangzhou.aliyuncs.com", false},
	} {
		path := testfile.Write(t, t.TempDir(), "example.yaml", strings.Replace(string(data), public, "endpoint: "+tc.endpoint, 1))
		code, out, errOut := runMain(t, context.Background(), "check", "-config", path)
		if code != ExitOK {
			t.Fatalf("%s: exit %d\n%s%s", tc.endpoint, code, out, errOut)
		}
		warned := strings.Contains(out, "warning: mns.endpoint: "+tc.endpoint) &&
			strings.Contains(out, "http://5678901234567890.mns.cn-hangzhou-internal.aliyuncs.com")
		if warned != tc.warn || (!tc.warn && strings.Contains(out, "warning")) {
			t.Errorf("%s: warned %v, want %v:\n%s", tc.endpoint, warned, tc.warn, out)
		}
	}
}

// The README's example configs use the documented endpoint forms: no
// internal endpoint with https.
func TestREADMEEndpointsFollowTheRegionsTable(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "endpoint: https://") && strings.Contains(line, "-internal") {
			t.Errorf("README example with an https internal endpoint: %s", line)
		}
	}
}

// TestJSONLogWritesDurationsAsText: log.format json writes a duration as
// the text format does ("20s"), not as nanoseconds: the stop's line
// read "timeout":20000000000 in the Kubernetes config's json logs (walk7),
// and "after" or "backoff" likewise.
func TestJSONLogWritesDurationsAsText(t *testing.T) {
	var buf strings.Builder
	NewLogger(config.Log{Level: "info", Format: "json"}, &buf).Info("shutting down", "timeout", 20*time.Second,
		slog.Group("g", "after", 1500*time.Millisecond), "n", 3)
	if want := `"timeout":"20s","g":{"after":"1.5s"},"n":3}`; !strings.Contains(buf.String(), want) {
		t.Errorf("json line %s, want it to end with %s", buf.String(), want)
	}
}

// TestPermissionErrorNamesTheUser: an error that comes of a permission
// denied (a secret or CA file the process cannot read, a state directory
// it cannot write) is followed by a line naming the process's uid and gid:
// the errors spoke of "this user" and "the bridge's user", and in the
// image, run with a host directory as its state volume (root's, 0755),
// the operator had to find out that the user is 65532 (walk7).
func TestPermissionErrorNamesTheUser(t *testing.T) {
	denied := fmt.Errorf("deadletter: open /var/lib/iot-mns-bridge/dead-letter.jsonl: %w; the file and its directory must be writable by the bridge's user",
		&fs.PathError{Op: "open", Path: "/var/lib/iot-mns-bridge/dead-letter.jsonl", Err: syscall.EACCES})
	for _, err := range []error{denied, errors.Join(errors.New("config.yaml:3: routes[0].queue: bad"), denied)} {
		if got, want := permissionHint(err, 65532, 65532), "this process runs as uid 65532, gid 65532"; !strings.Contains(got, want) {
			t.Errorf("permissionHint(%q) = %q, want it to say %q", err, got, want)
		}
	}
	if got := permissionHint(errors.New("config.yaml:3: routes[0].queue: bad"), 0, 0); got != "" {
		t.Errorf("permissionHint of another error = %q, want none", got)
	}
}

// TestReadOnlyFilesystemSaysSo: an error that comes of a read-only
// filesystem (EROFS: a state directory on a container's read-only root or
// a read-only volume) is followed by a line that says so and what helps (a
// writable filesystem there): the errors' own 'must be writable by the
// bridge's user' sends the operator to the owner or mode, which cannot
// help, as check's warnings did.
func TestReadOnlyFilesystemSaysSo(t *testing.T) {
	err := fmt.Errorf("spool: create directory: %w; create it or make its parent writable by the bridge's user",
		&fs.PathError{Op: "mkdir", Path: "/var/lib/iot-mns-bridge/spool", Err: syscall.EROFS})
	got := permissionHint(err, 65532, 65532)
	for _, want := range []string{"read-only filesystem", "owner or mode cannot help", "StateDirectory=", "ReadWritePaths=", "Kubernetes"} {
		if !strings.Contains(got, want) {
			t.Errorf("permissionHint(%q) = %q, want it to say %q", err, got, want)
		}
	}
}
