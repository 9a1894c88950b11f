// Package aksignauth is an HTTP authentication service for RabbitMQ's
// rabbitmq_auth_backend_http plugin that accepts Alibaba Cloud IoT Platform
// style credentials: a username built by iotauth.Sign and a password that is
// the HMAC signature of that username under a known AccessKey.
//
// It lets a real RabbitMQ broker stand in for the platform's login check in
// integration tests. It is a test peer, not a security boundary: it allows a
// password-less re-check of a known platform username (see Handler), and it
// grants every vhost, resource and topic permission to such usernames.
package aksignauth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// Keys maps AccessKey IDs to their secrets.
type Keys map[string]string

// ParseKeys reads "id:secret" pairs separated by commas or new lines. Blank
// lines and lines starting with '#' are ignored. Errors name the entry by
// position and never quote a secret.
func ParseKeys(r io.Reader) (Keys, error) {
	keys := make(Keys)
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, entry := range strings.Split(line, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			n++
			id, secret, ok := strings.Cut(entry, ":")
			id = strings.TrimSpace(id)
			if !ok || id == "" || secret == "" {
				return nil, fmt.Errorf("parse keys: entry %d: want id:secret", n)
			}
			if _, dup := keys[id]; dup {
				return nil, fmt.Errorf("parse keys: entry %d: AccessKey ID %q appears twice", n, id)
			}
			keys[id] = secret
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("parse keys: no id:secret entry found")
	}
	return keys, nil
}

// Config configures a Handler.
type Config struct {
	Keys   Keys         // AccessKey ID → secret; required
	Logger *slog.Logger // one line per decision; nil discards
	// MaxSkew, when > 0, refuses a username timestamp further than this from
	// Now. Zero disables the check (the platform's tolerance is undocumented).
	MaxSkew time.Duration
	Now     func() time.Time // nil means time.Now
}

// Handler answers rabbitmq_auth_backend_http requests (POST or GET form
// fields) on these paths, with the body "allow" or "deny":
//
//	/auth/user      username, password → allow when iotauth.Verify accepts
//	                them; also allow when there is NO password field and the
//	                username parses with a known authId (the 3.x amqp1_0
//	                plugin re-checks the user that way after SASL)
//	/auth/vhost     allow for a parsable username with a known authId
//	/auth/resource  same
//	/auth/topic     same
//
// It is safe for concurrent use.
type Handler struct {
	keys    Keys
	log     *slog.Logger
	maxSkew time.Duration
	now     func() time.Time
	mux     *http.ServeMux
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("aksignauth: no AccessKey configured: give at least one id:secret")
	}
	h := &Handler{keys: cfg.Keys, log: cfg.Logger, maxSkew: cfg.MaxSkew, now: cfg.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("/auth/user", h.user)
	for _, p := range []string{"/auth/vhost", "/auth/resource", "/auth/topic"} {
		h.mux.HandleFunc(p, h.permission)
	}
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func (h *Handler) secretFor(id string) (string, bool) {
	s, ok := h.keys[id]
	return s, ok
}

// knownUser reports whether username parses and names a known authId.
func (h *Handler) knownUser(username string) (iotauth.Username, error) {
	u, err := iotauth.ParseUsername(username)
	if err != nil {
		return u, err
	}
	if _, ok := h.keys[u.AuthID]; !ok {
		return u, fmt.Errorf("unknown authId %q", u.AuthID)
	}
	return u, nil
}

func (h *Handler) user(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.answer(w, r, false, "bad form: "+err.Error())
		return
	}
	username := r.Form.Get("username")
	if _, hasPassword := r.Form["password"]; !hasPassword {
		if _, err := h.knownUser(username); err != nil {
			h.answer(w, r, false, "no password and "+err.Error())
			return
		}
		h.answer(w, r, true, "password-less re-check of a known platform user")
		return
	}
	if _, err := iotauth.Verify(username, r.Form.Get("password"), h.secretFor, h.now(), h.maxSkew); err != nil {
		h.answer(w, r, false, err.Error())
		return
	}
	h.answer(w, r, true, "signature verified")
}

func (h *Handler) permission(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		h.answer(w, r, false, "bad form: "+err.Error())
		return
	}
	if _, err := h.knownUser(r.Form.Get("username")); err != nil {
		h.answer(w, r, false, err.Error())
		return
	}
	h.answer(w, r, true, "platform user")
}

// answer writes the decision and logs it. It logs only fields that hold no
// secret: the password is never logged and a security token is masked.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, allow bool, reason string) {
	decision := "deny"
	if allow {
		decision = "allow"
	}
	attrs := []any{
		"path", r.URL.Path,
		"decision", decision,
		"reason", reason,
		"username", iotauth.RedactUsername(r.Form.Get("username")),
	}
	for _, k := range []string{"vhost", "resource", "name", "permission", "routing_key"} {
		if v := r.Form.Get(k); v != "" {
			attrs = append(attrs, k, v)
		}
	}
	h.log.Info("auth decision", attrs...)
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, decision)
}
