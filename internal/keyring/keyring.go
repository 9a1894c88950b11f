// Package keyring is the key triple a test peer (the IoT simulator, the MNS
// emulator) accepts when an operator rotates it through a credentials file,
// as an issuer would: the triple the file holds now and, for a grace after
// the file replaced it, the one before (STS keeps an old token valid until
// it expires, so a client that has not re-read its own file yet is not
// refused). Any other triple, or one past its Expiration, is refused.
//
// The file is the JSON the bridge's `file` credentials provider reads
// (credentials.JSONFile), replaced atomically (write a temporary file, then
// rename it over the old one). It is read again, at the next request, when
// it changes; the grace counts from its modification time. A read that
// fails (a half-written file) keeps the triples already accepted.
package keyring

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
)

// DefaultGrace is the commands' default grace: an hour, STS's default
// token life, so that in effect a replaced triple is accepted until its
// Expiration, as STS accepts it.
const DefaultGrace = time.Hour

// Ring is the triples accepted from one credentials file. Safe for
// concurrent use.
type Ring struct {
	grace time.Duration
	log   *slog.Logger
	now   func() time.Time

	mu        sync.Mutex
	file      credentials.JSONFile
	cur, prev credentials.Credentials
	prevUntil time.Time // prev is accepted before this
}

// Options are Open's optional settings.
type Options struct {
	// Logger gets a line at each rotation (the key ids, never a secret or
	// token) and at each read that fails; nil: slog.Default.
	Logger *slog.Logger
	// Now is the clock that Expiration and the grace are compared with;
	// nil: time.Now.
	Now func() time.Time
}

// Open reads the credentials file at path; grace is how long a triple the
// file replaced stays accepted (never past its own Expiration; 0 or less:
// not at all). The error names flag, the option the path came from.
func Open(flag, path string, grace time.Duration, o Options) (*Ring, error) {
	r := &Ring{grace: grace, log: o.Logger, now: o.Now, file: credentials.JSONFile{Path: path, Field: flag}}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	c, err := r.file.Retrieve(context.Background())
	if err != nil {
		return nil, err
	}
	r.cur = c
	return r, nil
}

// Authorize is the peers' Authorize hook: the secret of id and the security
// token that must come with it ("" for a triple without one), with ok true
// while the triple of id is accepted: it is the file's triple and not
// expired, or the one the file replaced, within the grace and not expired.
func (r *Ring) Authorize(id string) (secret, token string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	r.reread(now)
	switch {
	case id == r.cur.AccessKeyID && live(r.cur, now):
		return r.cur.AccessKeySecret, r.cur.SecurityToken, true
	case id == r.prev.AccessKeyID && id != "" && now.Before(r.prevUntil) && live(r.prev, now):
		return r.prev.AccessKeySecret, r.prev.SecurityToken, true
	}
	return "", "", false
}

// reread takes a rotated file's triple as the current one; the current one
// becomes the previous, accepted until the grace ends. A triple with the
// current one's AccessKeyId replaces it without a grace: an id names one
// triple (STS issues a new AccessKeyId with every token).
func (r *Ring) reread(now time.Time) {
	if !r.file.Changed() {
		return
	}
	c, err := r.file.Retrieve(context.Background())
	switch {
	case err != nil:
		r.log.Warn("credentials file not read again; the triples accepted so far still are", "err", err)
		return
	case sameTriple(c, r.cur):
		return
	}
	if c.AccessKeyID == r.cur.AccessKeyID {
		r.prev, r.prevUntil = credentials.Credentials{}, time.Time{}
	} else {
		r.prev, r.prevUntil = r.cur, r.replacedAt(now).Add(r.grace)
	}
	r.cur = c
	attrs := []any{"accessKeyId", c.AccessKeyID, "expires", expiry(c)}
	if r.prev.AccessKeyID != "" {
		attrs = append(attrs, "previous", r.prev.AccessKeyID, "previousAcceptedUntil", r.prevUntil.UTC().Format(time.RFC3339))
	}
	r.log.Info("credentials file rotated", attrs...)
}

// replacedAt is when the file was replaced, by the clock of now: its
// modification time (a rename keeps the new file's), not when a request
// first noticed it, so that a grace runs out on time however seldom the
// peer is asked (before, the grace of a file replaced long ago began at the
// next login).
func (r *Ring) replacedAt(now time.Time) time.Time {
	fi, err := os.Stat(r.file.Path)
	if err != nil {
		return now
	}
	return now.Add(-max(time.Since(fi.ModTime()), 0))
}

func sameTriple(a, b credentials.Credentials) bool {
	return a.AccessKeyID == b.AccessKeyID && a.AccessKeySecret == b.AccessKeySecret &&
		a.SecurityToken == b.SecurityToken && a.Expiration.Equal(b.Expiration)
}

func live(c credentials.Credentials, now time.Time) bool {
	return c.Expiration.IsZero() || now.Before(c.Expiration)
}

func expiry(c credentials.Credentials) string {
	if c.Expiration.IsZero() {
		return "never"
	}
	return c.Expiration.UTC().Format(time.RFC3339)
}

// Write replaces the credentials file at path with c atomically, as a
// rotation must: it writes a temporary file beside it, then renames it
// over the old one, so no reader sees half a triple.
func Write(path string, c credentials.Credentials) error {
	doc := map[string]string{"AccessKeyId": c.AccessKeyID, "AccessKeySecret": c.AccessKeySecret}
	if c.SecurityToken != "" {
		doc["SecurityToken"] = c.SecurityToken
	}
	if !c.Expiration.IsZero() {
		doc["Expiration"] = c.Expiration.UTC().Format(time.RFC3339)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
