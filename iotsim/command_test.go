package iotsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/go-stomp/stomp/v3"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/keyring"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/syncbuf"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

func TestRunCommand(t *testing.T) {
	secretPath := testfile.Write(t, t.TempDir(), "secret", "cmd-secret\n")
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "127.0.0.1:0",
		"-access-key-id", "LTAIcmd", "-access-key-secret-file", secretPath,
		"-groups", "G1, G2", "-devices", "2", "-count", "12", "-rate", "0",
		"-types", strings.Join(Kinds, ","), "-heartbeat", "0")
	for _, group := range []string{"G1", "G2"} {
		c, err := cmd.login(t, iotauth.Params{ClientID: "c-" + group, AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
			ConsumerGroupID: group, SignMethod: iotauth.HMACSHA256, EncodeBase64: true})
		if err != nil {
			t.Fatalf("login to group %s: %v", group, err)
		}
		sub := subscribe(t, c, stomp.AckClientIndividual)
		for range 12 {
			if err := c.Ack(recv(t, sub)); err != nil {
				t.Fatal(err)
			}
		}
		c.Disconnect()
	}
	// A group not in -groups does not exist: its login is refused.
	_, err := cmd.login(t, iotauth.Params{ClientID: "c-typo", AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
		ConsumerGroupID: "G3", SignMethod: iotauth.HMACSHA256})
	if err == nil || !strings.Contains(err.Error(), `consumer group does not exist: "G3"`) {
		t.Errorf("login to a group not in -groups: %v, want it refused", err)
	}
	// Without -instance-id the instance has no ID (a public one): a login
	// naming an instance is refused.
	_, err = cmd.login(t, iotauth.Params{ClientID: "c-instance", AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
		ConsumerGroupID: "G1", IotInstanceID: "iot-06z00typo", SignMethod: iotauth.HMACSHA256})
	if err == nil || !strings.Contains(err.Error(), `iotInstanceId "iot-06z00typo" is not this instance's (this instance has no ID`) {
		t.Errorf("login naming an instance the simulator does not have: %v, want it refused", err)
	}
	// The AMQP listener takes the same credentials.
	m := regexp.MustCompile(`listening for AMQP on (\S+)`).FindStringSubmatch(cmd.stdout.String())
	if m == nil {
		t.Fatalf("no AMQP listening line:\n%s", cmd.stdout.String())
	}
	cred, err := iotauth.Sign(iotauth.Params{ClientID: "amqp", AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
		ConsumerGroupID: "G1", SignMethod: iotauth.HMACMD5}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := amqp.Dial(context.Background(), "amqps://"+m[1], &amqp.ConnOptions{SASLType: amqp.SASLTypePlain(cred.Username, cred.Password),
		IdleTimeout: 2 * time.Minute, TLSConfig: &tls.Config{RootCAs: cmd.roots, ServerName: "localhost"}})
	if err != nil {
		t.Fatalf("AMQP login: %v", err)
	}
	ac.Close()
	if err := cmd.stop(); err != nil {
		t.Fatalf("RunCommand: %v\n%s", err, cmd.stderr.String())
	}
	if out := cmd.stdout.String(); !strings.Contains(out, "published=24 delivered=24 acked=24 redelivered=0 pending=0 logins_ok=3") {
		t.Fatalf("summary missing or wrong:\n%s", out)
	}
	if strings.Contains(cmd.stderr.String(), "cmd-secret") || strings.Contains(cmd.stdout.String(), "cmd-secret") {
		t.Fatal("the secret appears in the output")
	}
}

func TestRunCommandRefusesBadFlags(t *testing.T) {
	t.Setenv(SecretEnv, "")
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no secret", nil, "AccessKey secret is required"},
		{"two secrets", []string{"-access-key-secret", "a", "-access-key-secret-file", "f"}, "not both"},
		{"missing secret file", []string{"-access-key-secret-file", filepath.Join(dir, "nope")}, "-access-key-secret-file"},
		{"cert without key", []string{"-access-key-secret", "s", "-cert", "c.pem"}, "-cert and -key go together"},
		{"ca-out with cert", []string{"-access-key-secret", "s", "-cert", "c", "-key", "k", "-ca-out", "x"}, "cannot be combined"},
		{"unreadable cert", []string{"-access-key-secret", "s", "-cert", filepath.Join(dir, "c"), "-key", filepath.Join(dir, "k")}, "-cert/-key"},
		{"unknown kind", []string{"-access-key-secret", "s", "-types", "telemetry,gossip"}, `types: "gossip"`},
		{"no group", []string{"-access-key-secret", "s", "-groups", " , "}, "-groups"},
		{"bad log level", []string{"-log-level", "loud"}, "-log-level"},
		{"stray argument", []string{"extra"}, `unexpected argument "extra"`},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
		{"bad listen address", []string{"-access-key-secret", "s", "-listen", "256.0.0.1:1"}, "listen on 256.0.0.1:1"},
		{"credentials file and key", []string{"-credentials-file", "f", "-access-key-id", "LTAIx", "-access-key-secret", "s"},
			"-credentials-file gives the key: drop -access-key-id, -access-key-secret"},
		{"missing credentials file", []string{"-credentials-file", filepath.Join(dir, "nope.json")}, "-credentials-file: file " + filepath.Join(dir, "nope.json") + " does not exist"},
		{"negative grace", []string{"-credentials-file", "f", "-credentials-grace", "-1s"}, "-credentials-grace must be 0 or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := RunCommand(context.Background(), tt.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRunCommandSecretFromEnv(t *testing.T) {
	t.Setenv(SecretEnv, "env-secret")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if err := RunCommand(ctx, []string{"-listen", "127.0.0.1:0", "-amqp-listen", "127.0.0.1:0", "-devices", "0"}, &stdout, &stderr); err != nil {
		t.Fatalf("RunCommand: %v", err)
	}
	if !strings.Contains(stdout.String(), "iot-simulator stopped") {
		t.Fatalf("stdout %q", stdout.String())
	}
}

// TestRunCommandInstanceID: with -instance-id, a login must name that
// instance in iotInstanceId; one that leaves it empty is refused.
func TestRunCommandInstanceID(t *testing.T) {
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "",
		"-access-key-id", "LTAIcmd", "-access-key-secret", "cmd-secret", "-instance-id", "iot-06z00cmd", "-devices", "0")
	login := func(instance string) error {
		c, err := cmd.login(t, iotauth.Params{ClientID: "c-" + instance, AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
			ConsumerGroupID: "DEFAULT_GROUP", IotInstanceID: instance, SignMethod: iotauth.HMACSHA256})
		if err == nil {
			c.Disconnect()
		}
		return err
	}
	if err := login("iot-06z00cmd"); err != nil {
		t.Errorf("login naming the instance: %v", err)
	}
	if err := login(""); err == nil || !strings.Contains(err.Error(), `iotInstanceId "" is not this instance's (this instance is "iot-06z00cmd")`) {
		t.Errorf("login without the instance's ID: %v, want it refused", err)
	}
}

// TestRunCommandClockOffset: with -clock-offset the server's clock runs
// ahead of the machine's, so -max-skew refuses a login signed by this
// machine's clock (a client whose clock is behind) and takes one signed by
// the server's.
func TestRunCommandClockOffset(t *testing.T) {
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "",
		"-access-key-id", "LTAIcmd", "-access-key-secret", "cmd-secret", "-devices", "0", "-max-skew", "5m", "-clock-offset", "20m")
	p := iotauth.Params{ClientID: "c-skew", AccessKeyID: "LTAIcmd", AccessKeySecret: "cmd-secret",
		ConsumerGroupID: "DEFAULT_GROUP", SignMethod: iotauth.HMACSHA256}
	if _, err := cmd.login(t, p); err == nil || !strings.Contains(err.Error(), "is 20m0s away from the server clock (limit 5m0s)") {
		t.Errorf("login by this machine's clock: %v, want it refused as 20 minutes off", err)
	}
	c, err := cmd.loginAt(t, p, time.Now().Add(20*time.Minute))
	if err != nil {
		t.Fatalf("login by the server's clock: %v", err)
	}
	c.Disconnect()
}

// command is RunCommand run by a test until stop or the end of the test.
type command struct {
	stdout, stderr syncbuf.Buffer
	addr           string         // its STOMP listener
	roots          *x509.CertPool // the CA it wrote (-ca-out)

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startCommand runs RunCommand with args and -ca-out in a temporary
// directory, and waits until it listens.
func startCommand(t *testing.T, args ...string) *command {
	t.Helper()
	caPath := filepath.Join(t.TempDir(), "ca.pem")
	ctx, cancel := context.WithCancel(context.Background())
	c := &command{cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- RunCommand(ctx, append(args, "-ca-out", caPath), &c.stdout, &c.stderr) }()
	t.Cleanup(func() { c.stop() })
	c.addr, c.roots = listening(t, &c.stdout, caPath)
	return c
}

// stop cancels the command and returns what RunCommand returned.
func (c *command) stop() error {
	c.cancel()
	c.once.Do(func() { c.err = <-c.done })
	return c.err
}

// login signs p and logs in over STOMP on the command's TLS listener; a
// refused login's connection is closed.
func (c *command) login(t *testing.T, p iotauth.Params) (*stomp.Conn, error) {
	t.Helper()
	return c.loginAt(t, p, time.Now())
}

// loginAt is login signed with the timestamp at.
func (c *command) loginAt(t *testing.T, p iotauth.Params, at time.Time) (*stomp.Conn, error) {
	t.Helper()
	tc, err := tls.Dial("tcp", c.addr, &tls.Config{RootCAs: c.roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := iotauth.Sign(p, at)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := stomp.Connect(tc, stomp.ConnOpt.Login(cred.Username, cred.Password), stomp.ConnOpt.Host("localhost"), stomp.ConnOpt.Logger(quietLogger{}))
	if err != nil {
		tc.Close()
		return nil, err
	}
	return conn, nil
}

// listening waits for the command's "listening on ADDR" line and returns
// ADDR with the CA the command wrote to caPath (-ca-out).
func listening(t *testing.T, stdout *syncbuf.Buffer, caPath string) (string, *x509.CertPool) {
	t.Helper()
	addrRE := regexp.MustCompile(`listening on (\S+)`)
	var addr string
	waitFor(t, "the listening line", func() bool {
		if m := addrRE.FindStringSubmatch(stdout.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("-ca-out file holds no certificate")
	}
	return addr, roots
}

// TestRunCommandCredentialsFile: with -credentials-file a login must carry
// the file's triple; after a rotation the new triple logs in, the old one
// still does for -credentials-grace, and a token of another issue is
// refused as the platform refuses it.
func TestRunCommandCredentialsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.json")
	one := credentials.Credentials{AccessKeyID: "STS.one", AccessKeySecret: "secret-one", SecurityToken: "token-one", Expiration: time.Now().Add(time.Hour)}
	two := credentials.Credentials{AccessKeyID: "STS.two", AccessKeySecret: "secret-two", SecurityToken: "token-two", Expiration: time.Now().Add(time.Hour)}
	if err := keyring.Write(path, one); err != nil {
		t.Fatal(err)
	}
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "", "-devices", "0", "-credentials-file", path)
	login := func(c credentials.Credentials) error {
		conn, err := cmd.login(t, iotauth.Params{ClientID: "c-" + c.AccessKeyID, AccessKeyID: c.AccessKeyID, AccessKeySecret: c.AccessKeySecret,
			SecurityToken: c.SecurityToken, ConsumerGroupID: "DEFAULT_GROUP", SignMethod: iotauth.HMACSHA256})
		if err == nil {
			conn.Disconnect()
		}
		return err
	}
	if err := login(one); err != nil {
		t.Fatalf("login with the file's triple: %v", err)
	}
	if err := login(two); err == nil || !strings.Contains(err.Error(), `authentication failed: unknown authId "STS.two"`) {
		t.Errorf("login with a triple not yet in the file: %v, want it refused", err)
	}
	if err := keyring.Write(path, two); err != nil {
		t.Fatal(err)
	}
	if err := login(two); err != nil {
		t.Errorf("login with the rotated triple: %v", err)
	}
	if err := login(one); err != nil {
		t.Errorf("login with the replaced triple, within -credentials-grace: %v", err)
	}
	other := two
	other.SecurityToken = "token-of-another-issue"
	if err := login(other); err == nil || !strings.Contains(err.Error(), "authentication failed: "+tokenMismatch) {
		t.Errorf("login with a token of another issue: %v, want it refused", err)
	}
	if !strings.Contains(cmd.stderr.String(), "credentials file rotated") {
		t.Errorf("stderr does not log the rotation:\n%s", cmd.stderr.String())
	}
}

// TestRunCommandCredentialsGraceZero: with -credentials-grace 0 a replaced
// triple is refused at once.
func TestRunCommandCredentialsGraceZero(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.json")
	one := credentials.Credentials{AccessKeyID: "STS.one", AccessKeySecret: "secret-one", SecurityToken: "token-one"}
	if err := keyring.Write(path, one); err != nil {
		t.Fatal(err)
	}
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "", "-devices", "0", "-credentials-file", path, "-credentials-grace", "0")
	if err := keyring.Write(path, credentials.Credentials{AccessKeyID: "STS.two", AccessKeySecret: "secret-two", SecurityToken: "token-two"}); err != nil {
		t.Fatal(err)
	}
	_, err := cmd.login(t, iotauth.Params{ClientID: "c-one", AccessKeyID: one.AccessKeyID, AccessKeySecret: one.AccessKeySecret,
		SecurityToken: one.SecurityToken, ConsumerGroupID: "DEFAULT_GROUP", SignMethod: iotauth.HMACSHA256})
	if err == nil || !strings.Contains(err.Error(), `authentication failed: unknown authId "STS.one"`) {
		t.Errorf("login with the replaced triple: %v, want it refused", err)
	}
}

// TestRunCommandNoSubscribe: an authId in -no-subscribe signs right but is
// refused for lack of the iot:sub permission; another key still logs in.
func TestRunCommandNoSubscribe(t *testing.T) {
	cmd := startCommand(t, "-listen", "127.0.0.1:0", "-amqp-listen", "", "-devices", "0",
		"-access-key-id", "LTAInosub", "-access-key-secret", "cmd-secret", "-no-subscribe", "LTAInosub")
	_, err := cmd.login(t, iotauth.Params{ClientID: "c-nosub", AccessKeyID: "LTAInosub", AccessKeySecret: "cmd-secret",
		ConsumerGroupID: "DEFAULT_GROUP", SignMethod: iotauth.HMACSHA256})
	if err == nil || !strings.Contains(err.Error(), `authentication failed: not authorized: the RAM user of this authId may not subscribe (it lacks the action iot:sub); authId "LTAInosub"`) {
		t.Errorf("login of a key without iot:sub: %v, want it refused for the permission", err)
	}
}
