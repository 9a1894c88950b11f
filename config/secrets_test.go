package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// withSecrets is a valid config built in code, holding the test secrets.
func withSecrets() Config {
	c := validConfig()
	c.Source.Credentials.SecurityToken = testToken
	c.MNS.Credentials = Credentials{AccessKeyID: "LTAImns", AccessKeySecret: testSecret, SecurityToken: testToken}
	return c
}

func TestSecretsNeverPrinted(t *testing.T) {
	c := withSecrets()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		assertNoSecrets(t, format+" of Config", fmt.Sprintf(format, c))
		assertNoSecrets(t, format+" of *Config", fmt.Sprintf(format, &c))
		assertNoSecrets(t, format+" of Credentials", fmt.Sprintf(format, c.Source.Credentials))
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "YAML dump", string(out))
	if !strings.Contains(string(out), "access_key_secret: '***'") {
		t.Errorf("YAML dump should show the secret as ***:\n%s", out)
	}

	// A parsed config carries loader state; it must not print secrets either.
	parsed, err := Parse([]byte(minimal), "x.yaml", testEnv())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := parsed.SourceSecrets(); err != nil {
		t.Fatal(err)
	}
	assertNoSecrets(t, "%+v of parsed Config", fmt.Sprintf("%+v %#v", *parsed, parsed))
}

// An STS token is base64 and may end in '=' padding: the config accepts it.
func TestSecurityTokenWithPaddingIsValid(t *testing.T) {
	c := withSecrets()
	c.Source.Credentials.SecurityToken = "CAIS+Ab/cd12EF=="
	if err := c.Validate(); err != nil {
		t.Fatalf("a padded STS token is refused: %v", err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"token with separator", func(c *Config) { c.Source.Credentials.SecurityToken = testToken + "|x" }, "source.credentials.security_token: must not contain"},
		{"secret and file", func(c *Config) { c.Source.Credentials.AccessKeySecretFile = "f" }, "access_key_secret and access_key_secret_file are both set"},
		{"token and file", func(c *Config) { c.MNS.Credentials.SecurityTokenFile = "f" }, "mns.credentials: security_token and security_token_file are both set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := withSecrets()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			assertNoSecrets(t, "error", err.Error())
			assertNoSecrets(t, "%+v of error", fmt.Sprintf("%+v", err))
		})
	}
	// A secret expanded into a value of the wrong type is a user error we
	// cannot hide, but a secret in its own key never appears.
	data := strings.Replace(minimal, "  client_id: edge-gw-01\n", "  client_id: edge-gw-01\n  bogus: 1\n", 1)
	_, err := Parse([]byte(data), "x.yaml", testEnv())
	if err == nil {
		t.Fatal("want an error")
	}
	assertNoSecrets(t, "error", err.Error())
}

func writeFile(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func fileSecretsConfig(secretPath, tokenPath string) string {
	return strings.Replace(minimal, "    access_key_secret: ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}\n",
		"    access_key_secret_file: "+secretPath+"\n    security_token_file: "+tokenPath+"\n", 1)
}

// TestSecretFileRotation: a changed token file takes effect at the next
// call; an unchanged one (same size and mtime) is served from the cache.
func TestSecretFileRotation(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, filepath.Join(dir, "secret"), testSecret+"\n")
	writeFile(t, tokenFile, "token-1\n")
	cfg, err := Parse([]byte(fileSecretsConfig("secret", "token")), filepath.Join(dir, "config.yaml"), testEnv())
	if err != nil {
		t.Fatal(err)
	}
	check := func(wantToken string) {
		t.Helper()
		p, err := cfg.IoTParams()
		if err != nil {
			t.Fatal(err)
		}
		if p.AccessKeySecret != testSecret || p.SecurityToken != wantToken {
			t.Fatalf("IoTParams secret ok=%v, token = %q; want the file's secret and %q", p.AccessKeySecret == testSecret, p.SecurityToken, wantToken)
		}
	}
	check("token-1")

	writeFile(t, tokenFile, "token-2-longer\r\n")
	check("token-2-longer")

	// Same size, new mtime: read again.
	writeFile(t, tokenFile, "token-3-longer\n")
	t3 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := os.Chtimes(tokenFile, t3, t3); err != nil {
		t.Fatal(err)
	}
	check("token-3-longer")

	// Same size and mtime as the last read: the cache answers.
	writeFile(t, tokenFile, "token-4-longer\n")
	if err := os.Chtimes(tokenFile, t3, t3); err != nil {
		t.Fatal(err)
	}
	check("token-3-longer")

	// The MNS side inherits the files and sees the same rotation.
	if _, tok, err := cfg.MNSSecrets(); err != nil || tok != "token-3-longer" {
		t.Errorf("MNSSecrets token = %q, %v", tok, err)
	}

	if err := os.Remove(tokenFile); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.IoTParams()
	if err == nil || !strings.Contains(err.Error(), "source.credentials.security_token_file: read secret") {
		t.Errorf("IoTParams after the token file went away = %v, want a read error naming the key", err)
	}
}

// TestMissingSecretFileSaysWhatToDo: a secret file that is not there (a
// first install, a typo) is named with what to do: create it, or fix the
// path, and where a relative path is read from.
func TestMissingSecretFileSaysWhatToDo(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "access_key_secret")
	cfg := validConfig()
	cfg.Source.Credentials = Credentials{AccessKeyID: testKeyID, AccessKeySecretFile: missing}
	_, _, err := cfg.SourceSecrets()
	want := "source.credentials.access_key_secret_file: read secret: file " + missing + " does not exist: create it with the secret on one line (chmod 600), " +
		"or fix the path (a relative one is read from $CREDENTIALS_DIRECTORY when it is set, as under systemd and in the image, else from the config file's directory)"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("SourceSecrets with a missing file: %v, want %q", err, want)
	}
}

func TestCredentialsDirectory(t *testing.T) {
	confDir, credDir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(credDir, "ak-secret"), testSecret)
	writeFile(t, filepath.Join(credDir, "sts-token"), testToken+"\n\n")
	data := []byte(fileSecretsConfig("ak-secret", "sts-token"))
	path := filepath.Join(confDir, "config.yaml")

	cfg, err := Parse(data, path, testEnv("CREDENTIALS_DIRECTORY", credDir))
	if err != nil {
		t.Fatal(err)
	}
	secret, token, err := cfg.SourceSecrets()
	if err != nil || secret != testSecret || token != testToken {
		t.Errorf("SourceSecrets() ok=%v, %v; want the files in $CREDENTIALS_DIRECTORY", secret == testSecret && token == testToken, err)
	}

	// Without $CREDENTIALS_DIRECTORY the names are relative to the config.
	_, err = Parse(data, path, testEnv())
	want := filepath.Join(confDir, "ak-secret") + ": no such file or directory"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Parse without CREDENTIALS_DIRECTORY = %v, want %q", err, want)
	}

	writeFile(t, filepath.Join(confDir, "ak-secret"), "\n")
	writeFile(t, filepath.Join(confDir, "sts-token"), "t")
	_, err = Parse(data, path, testEnv())
	if err == nil || !strings.Contains(err.Error(), "source.credentials.access_key_secret_file: secret file") || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty secret file: %v", err)
	}
}

func TestIoTParams(t *testing.T) {
	c := validConfig()
	c.Source.IotInstanceID = "iot-06z00ax1o2vfzzz"
	c.Source.SignMethod = "hmacsha256"
	c.Source.STOMP.EncodeBase64 = true
	p, err := c.IoTParams()
	if err != nil {
		t.Fatal(err)
	}
	if p.ClientID != "edge-gw-01" || p.AccessKeyID != testKeyID || p.AccessKeySecret != testSecret ||
		p.SecurityToken != "" || p.ConsumerGroupID != "DEFAULT_GROUP" || p.IotInstanceID != "iot-06z00ax1o2vfzzz" ||
		p.SignMethod != "hmacsha256" || !p.EncodeBase64 {
		t.Errorf("IoTParams() = %#v", p)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("params of a valid config do not validate: %v", err)
	}
	c.Source.Protocol = "amqp"
	if p, _ := c.IoTParams(); p.EncodeBase64 {
		t.Error("encode=base64 is STOMP only, want it off for amqp")
	}
}

func TestStateDirectoryHoldsSpoolAndDeadLetters(t *testing.T) {
	data, err := os.ReadFile("testdata/good/minimal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, []byte("spool:\n  dir: spool\n")...)
	env := func(k string) (string, bool) {
		switch k {
		case "STATE_DIRECTORY":
			return "/var/lib/iot-mns-bridge", true
		case "ALIBABA_CLOUD_ACCESS_KEY_ID":
			return "LTAIkey", true
		case "ALIBABA_CLOUD_ACCESS_KEY_SECRET":
			return "secret", true
		}
		return "", false
	}
	cfg, err := Parse(data, "/etc/iot-mns-bridge/config.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Spool.Dir != "/var/lib/iot-mns-bridge/spool" || cfg.Delivery.DeadLetter.File != "/var/lib/iot-mns-bridge/dead-letter.jsonl" {
		t.Errorf("spool.dir %q, dead_letter.file %q: want them under $STATE_DIRECTORY", cfg.Spool.Dir, cfg.Delivery.DeadLetter.File)
	}
}

// TestUnreadableFileNamesTheUser: a credentials file the process may not
// read says which user it runs as (uid and gid), whom the file must let
// read it: "not readable by this user" left the operator of the image,
// which runs as 65532, with a root 0600 secret mounted, to find that out
// (walk7).
func TestUnreadableFileNamesTheUser(t *testing.T) {
	err := fileReadError("/run/secrets/access_key_secret", "the secret",
		&fs.PathError{Op: "open", Path: "/run/secrets/access_key_secret", Err: syscall.EACCES})
	want := fmt.Sprintf("file /run/secrets/access_key_secret is not readable by this user (uid %d, gid %d): let that user read it", os.Getuid(), os.Getgid())
	if !strings.Contains(err.Error(), want) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("fileReadError = %v, want it to say %q and wrap fs.ErrPermission", err, want)
	}
}
