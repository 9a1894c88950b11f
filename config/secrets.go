package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// secretFile is the last read of a secret file, kept until the file's
// modification time or size changes.
type secretFile struct {
	modTime time.Time
	size    int64
	value   Secret
}

// SourceSecrets returns the source's AccessKey secret and security token
// ("" when none). A secret from a *_file key is read again when the file's
// modification time or size has changed since the last call, so a rotated
// STS token takes effect at the next signing without a restart.
//
// Safe for concurrent use; it does not block beyond a stat (and a read when
// the file changed). Errors name the key and never quote a secret.
func (c *Config) SourceSecrets() (secret, token string, err error) {
	return c.meta.secrets("source.credentials", c.Source.Credentials)
}

// MNSSecrets is SourceSecrets for mns.credentials, which are the source's
// when the file leaves them empty.
func (c *Config) MNSSecrets() (secret, token string, err error) {
	return c.meta.secrets("mns.credentials", c.mnsCredentials())
}

// mnsCredentials returns mns.credentials, or the source's when empty (Parse
// already copies them; this covers a Config built in code).
func (c *Config) mnsCredentials() Credentials {
	if c.MNS.Credentials == (Credentials{}) {
		return c.Source.Credentials
	}
	return c.MNS.Credentials
}

// IoTParams builds the signing parameters of the source, with the secrets
// read afresh (see SourceSecrets). Sources call it on every dial; with
// source.connections > 1 they append "-<i>" to ClientID themselves.
func (c *Config) IoTParams() (iotauth.Params, error) {
	secret, token, err := c.SourceSecrets()
	if err != nil {
		return iotauth.Params{}, err
	}
	return c.SourceParams(c.Source.Credentials.AccessKeyID, secret, token), nil
}

// secrets resolves one Credentials' secret and token. m may be nil (a
// Config built in code): files are then read on every call.
func (m *loadInfo) secrets(path string, cr Credentials) (secret, token string, err error) {
	secret, err = m.secret(path, "access_key_secret", cr.AccessKeySecret, cr.AccessKeySecretFile)
	if err != nil {
		return "", "", err
	}
	token, err = m.secret(path, "security_token", cr.SecurityToken, cr.SecurityTokenFile)
	if err != nil {
		return "", "", err
	}
	return secret, token, nil
}

func (m *loadInfo) secret(path, key string, value Secret, file string) (string, error) {
	switch {
	case file == "":
		return value.Reveal(), nil
	case value != "":
		return "", &FieldError{Path: path, Reason: fmt.Sprintf("%s and %s_file are both set: use one", key, key)}
	}
	v, err := m.readSecretFile(file)
	if err != nil {
		return "", &FieldError{Path: path + "." + key + "_file", Reason: err.Error()}
	}
	return v.Reveal(), nil
}

// readSecretFile returns the file's contents without trailing line breaks,
// from the cache when the file is unchanged.
func (m *loadInfo) readSecretFile(name string) (Secret, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", fileReadError(name, "the secret", err))
	}
	if m != nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		if f, ok := m.files[name]; ok && f.modTime.Equal(fi.ModTime()) && f.size == fi.Size() {
			return f.value, nil
		}
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", fileReadError(name, "the secret", err))
	}
	v := Secret(strings.TrimRight(string(data), "\r\n"))
	if v == "" {
		return "", fmt.Errorf("secret file %s is empty", name)
	}
	if m != nil {
		m.files[name] = secretFile{modTime: fi.ModTime(), size: fi.Size(), value: v}
	}
	return v, nil
}

// fileReadError says what to do about a credentials file that could not be
// read (what it should hold: "the secret"), naming it: one that does not
// exist is to be created, or its path fixed (where a relative one is read
// from); one this user may not read is to be made readable to it, naming
// its uid and gid (65532 in the image). Other errors are returned as they
// are.
func fileReadError(name, holds string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("file %s does not exist: create it with %s on one line (chmod 600), or fix the path (a relative one is read from "+
			"$CREDENTIALS_DIRECTORY when it is set, as under systemd and in the image, else from the config file's directory): %w", name, holds, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("file %s is not readable by this user (uid %d, gid %d): let that user read it (owned by it, chmod 600): %w", name, os.Getuid(), os.Getgid(), err)
	}
	return err
}
