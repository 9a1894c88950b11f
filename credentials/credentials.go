// Package credentials yields the Alibaba Cloud key triple (AccessKeyId,
// AccessKeySecret, SecurityToken) with its expiry, from the providers users
// are told to run services with: static keys, the environment, files that
// rotate atomically, the ~/.alibabacloud/credentials and aliyun CLI
// profiles, the ECS RAM role (instance metadata), OIDC/RRSA
// (AssumeRoleWithOIDC) and a credentials URI, alone or as the documented
// default chain.
//
// A Cache in front of a Provider is what signers use: concurrent callers
// share one value, a refresh happens once, ahead of expiry, a failed refresh
// keeps the old triple until it expires, and retries back off.
//
// The package knows nothing of IoT or MNS. No error it returns carries a
// secret, a file's contents or a response body.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Credentials is one issue of a key: the three values always come from the
// same issue, so a signer never pairs a new token with an old secret.
type Credentials struct {
	AccessKeyID     string
	AccessKeySecret string
	// SecurityToken is set for temporary (STS) credentials.
	SecurityToken string
	// Expiration is when the issuer stops accepting the triple; zero for a
	// long-lived AccessKey pair.
	Expiration time.Time
	// Source names the provider that supplied the triple, with its input
	// ("uri", "ecs_ram_role (role bridge)", "env"); never a secret.
	Source string
	// Skipped is, for the default chain's triple, the errors of the
	// providers before Source whose inputs are set but that failed, joined
	// with "; " ("" when none): the chain went past them, and an operator
	// who set them up is told so.
	Skipped string
}

// String names the source, the key id and the expiry; never the secret or
// the token, so a Credentials value is safe to log.
func (c Credentials) String() string {
	s := c.Source + " " + c.AccessKeyID
	if c.SecurityToken != "" {
		s += " (with security token)"
	}
	if !c.Expiration.IsZero() {
		s += " expires " + c.Expiration.UTC().Format(time.RFC3339)
	}
	return s
}

// GoString hides the secrets from %#v.
func (c Credentials) GoString() string { return "credentials.Credentials{" + c.String() + "}" }

// check reports what is missing from a triple or wrong with its expiry;
// what names where it came from.
func (c Credentials) check(what string, now time.Time) error {
	switch {
	case c.AccessKeyID == "":
		return fmt.Errorf("%s: AccessKeyId is empty", what)
	case c.AccessKeySecret == "":
		return fmt.Errorf("%s: AccessKeySecret is empty", what)
	}
	if err := CheckToken(c.AccessKeyID, c.SecurityToken); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case !c.Expiration.IsZero() && !now.Before(c.Expiration):
		// No age in the text: it is compared with the last one to log a
		// failure once (an age counting up made the destination check log
		// it every 2.5 s).
		return fmt.Errorf("%s: the credentials expired at %s, before they were fetched, by this machine's clock: "+
			"whatever renews them has not (a credentials file that nothing rotates any more?), or this machine's clock is ahead",
			what, c.Expiration.UTC().Format(time.RFC3339))
	}
	return nil
}

// Temporary reports whether id is the AccessKeyId of a temporary key,
// which STS issues with a SecurityToken and an expiry: its id starts with
// "STS.".
func Temporary(id string) bool { return strings.HasPrefix(id, "STS.") }

// CheckToken reports the AccessKeyId of a temporary key (an STS key's
// starts with "STS.") that comes without a SecurityToken: the servers
// refuse whatever is signed with it (the platform's login, every MNS
// request), so it is refused before. A long-lived key needs no token. The
// text names the id masked (MaskID) and what to do.
func CheckToken(id, token string) error {
	if token != "" || !Temporary(id) {
		return nil
	}
	return fmt.Errorf("AccessKeyId %s is a temporary (STS) AccessKey ID, but no SecurityToken came with it: "+
		"give the security token issued with it (with the key and secret of the same issue), or use a long-lived AccessKey", MaskID(id))
}

// Provider fetches a fresh triple. Retrieve may do I/O (a file, an HTTP
// request) and honours ctx; it is called by one goroutine at a time by a
// Cache, but implementations here are safe for concurrent use anyway.
type Provider interface {
	// Name is the provider's config name (static, env, file, profile,
	// cli_profile, ecs_ram_role, oidc, uri, chain).
	Name() string
	Retrieve(ctx context.Context) (Credentials, error)
}

// Watcher is implemented by providers that read local files: Changed
// reports, cheaply (a stat), whether the inputs changed since the last
// Retrieve, so that a rotated file takes effect at the next signing.
type Watcher interface {
	Changed() bool
}

// ErrNotConfigured is wrapped by a provider's error when its inputs are
// absent (no environment variable, no profile file): the chain moves on.
var ErrNotConfigured = errors.New("not configured")

func notConfigured(format string, args ...any) error {
	return fmt.Errorf("%s (%w)", fmt.Sprintf(format, args...), ErrNotConfigured)
}
