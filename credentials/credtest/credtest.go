// Package credtest has loopback fakes of the credential issuers for tests:
// the ECS instance metadata service (IMDSv2 token, role discovery), a
// credentials URI server and STS AssumeRoleWithOIDC. Each issues a new
// triple with a short life on every request and remembers what it issued,
// so a test peer (the IoT simulator, the MNS emulator) can check that every
// request was signed with a triple valid at that time.
package credtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// Triple is one issue.
type Triple struct {
	ID, Secret, Token string
	Expiration        time.Time
}

// Issuer mints triples and answers whether one is valid. Safe for
// concurrent use.
type Issuer struct {
	// Life of each triple.
	Life time.Duration
	// AnswerDelay is how long a server waits between minting a triple and
	// answering with it: a slow issuer, whose new triple exists (Issued
	// counts it) a moment before the client has it.
	AnswerDelay time.Duration

	mu      sync.Mutex
	issued  map[string]Triple // by id
	order   []string
	used    map[string]map[string]int // peer → id → accepted requests
	refused int
	down    atomic.Bool
	n       atomic.Int64
}

// NewIssuer returns an Issuer whose triples live for life.
func NewIssuer(life time.Duration) *Issuer {
	return &Issuer{Life: life, issued: map[string]Triple{}}
}

// Issue mints a triple valid from now for Life and returns it after
// AnswerDelay.
func (is *Issuer) Issue() Triple {
	n := is.n.Add(1)
	t := Triple{ID: fmt.Sprintf("STS.fake%04d%s", n, rnd(4)), Secret: "secret-" + rnd(12), Token: "token-" + rnd(24),
		Expiration: time.Now().Add(is.Life).UTC().Truncate(time.Second)}
	// Expiration is written with second precision (RFC 3339): keep at
	// least Life - 1 s of it.
	is.mu.Lock()
	is.issued[t.ID] = t
	is.order = append(is.order, t.ID)
	is.mu.Unlock()
	time.Sleep(is.AnswerDelay)
	return t
}

// IssueNumber returns the sequence number (1, 2, ...) of an id the Issuer
// minted, or 0.
func IssueNumber(id string) int {
	var n int
	if _, err := fmt.Sscanf(id, "STS.fake%04d", &n); err != nil {
		return 0
	}
	return n
}

// Lookup returns the triple issued with id.
func (is *Issuer) Lookup(id string) (Triple, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	t, ok := is.issued[id]
	return t, ok
}

// Check reports why (id, secret, token) is not a triple valid at at, or
// "" when it is.
func (is *Issuer) Check(id, secret, token string, at time.Time) string {
	t, ok := is.Lookup(id)
	switch {
	case !ok:
		return "unknown AccessKeyId"
	case t.Secret != secret:
		return "secret of another issue"
	case t.Token != token:
		return "security token of another issue"
	case !at.Before(t.Expiration):
		return "expired at " + t.Expiration.Format(time.RFC3339)
	}
	return ""
}

// Authorize is the Authorize hook of the IoT simulator and the MNS
// emulator: the secret and token issued with id, and ok only while that
// triple is valid. Every id it accepts is recorded under peer (see Used);
// every refusal is counted (see Refused).
func (is *Issuer) Authorize(peer string) func(id string) (secret, token string, ok bool) {
	return func(id string) (string, string, bool) {
		t, ok := is.Lookup(id)
		is.mu.Lock()
		defer is.mu.Unlock()
		if !ok || !time.Now().Before(t.Expiration) {
			is.refused++
			return "", "", false
		}
		if is.used == nil {
			is.used = map[string]map[string]int{}
		}
		if is.used[peer] == nil {
			is.used[peer] = map[string]int{}
		}
		is.used[peer][id]++
		return t.Secret, t.Token, true
	}
}

// Used returns, for peer, how many times each issued id was accepted.
func (is *Issuer) Used(peer string) map[string]int {
	is.mu.Lock()
	defer is.mu.Unlock()
	out := map[string]int{}
	for id, n := range is.used[peer] {
		out[id] = n
	}
	return out
}

// Refused returns how many lookups named an unknown or expired id.
func (is *Issuer) Refused() int {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.refused
}

// Issued returns the number of triples minted.
func (is *Issuer) Issued() int { return int(is.n.Load()) }

// SetDown makes the servers answer 503 (down) or work again.
func (is *Issuer) SetDown(down bool) { is.down.Store(down) }

func rnd(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// answer is the credentials JSON of a URI or the metadata service.
func (t Triple) answer() []byte {
	b, _ := json.Marshal(map[string]string{"Code": "Success", "AccessKeyId": t.ID, "AccessKeySecret": t.Secret,
		"SecurityToken": t.Token, "Expiration": t.Expiration.Format(time.RFC3339),
		"LastUpdated": time.Now().UTC().Format(time.RFC3339)})
	return b
}

// serve starts h on 127.0.0.1 until the test ends and returns its URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	return "http://" + testpeers.Serve(t, h)
}

// URIServer serves a credentials URI: every GET issues a new triple.
func URIServer(t testing.TB, is *Issuer) string {
	return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(is.Issue().answer())
	}))
}

// Metadata is a fake ECS instance metadata service.
type Metadata struct {
	URL  string
	Role string
	// V1Only refuses the IMDSv2 token request (an old service).
	V1Only atomic.Bool
	// RequireV2 refuses credential requests without a valid token.
	RequireV2 atomic.Bool

	TokenRequests, CredRequests, V1Requests atomic.Int64
	token                                   string
}

// MetadataServer starts a fake metadata service with role attached.
func MetadataServer(t testing.TB, is *Issuer, role string) *Metadata {
	m := &Metadata{Role: role, token: "imds-" + rnd(8)}
	const prefix = "/latest/meta-data/ram/security-credentials/"
	m.URL = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == "/latest/api/token" {
			m.TokenRequests.Add(1)
			if r.Method != http.MethodPut || r.Header.Get("X-aliyun-ecs-metadata-token-ttl-seconds") == "" || m.V1Only.Load() {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			w.Write([]byte(m.token))
			return
		}
		tok := r.Header.Get("X-aliyun-ecs-metadata-token")
		switch {
		case tok == "" && m.RequireV2.Load():
			http.Error(w, "token required", http.StatusUnauthorized)
			return
		case tok != "" && tok != m.token:
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		case tok == "":
			m.V1Requests.Add(1)
		}
		switch r.URL.Path {
		case prefix:
			w.Write([]byte(m.Role))
		case prefix + m.Role:
			m.CredRequests.Add(1)
			w.Write(is.Issue().answer())
		default:
			http.NotFound(w, r)
		}
	}))
	return m
}

// STS is a fake STS answering AssumeRoleWithOIDC.
type STS struct {
	URL string

	mu       sync.Mutex
	accepted map[string]bool // the OIDC tokens it accepts
	Seen     []string        // the OIDC token of every request
	refusal  string          // the code every request is refused with; "" none
}

// RefuseWith makes the fake refuse every request with HTTP 401 and code
// (as STS refuses a role whose trust policy does not admit the caller:
// AuthenticationFail.NoPermission); "" ends it.
func (s *STS) RefuseWith(code string) {
	s.mu.Lock()
	s.refusal = code
	s.mu.Unlock()
}

// Accept adds an OIDC token the fake accepts.
func (s *STS) Accept(token string) {
	s.mu.Lock()
	s.accepted[token] = true
	s.mu.Unlock()
}

// SeenTokens returns the OIDC tokens of every request, in order.
func (s *STS) SeenTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.Seen...)
}

// STSServer starts a fake STS.
func STSServer(t testing.TB, is *Issuer) *STS {
	s := &STS{accepted: map[string]bool{}}
	s.URL = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(status int, code string) {
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"RequestId":"req-1","HostId":"sts.aliyuncs.com","Code":%q,"Message":"secret-free message"}`, code)
		}
		if is.down.Load() {
			fail(503, "ServiceUnavailable")
			return
		}
		if r.Method != http.MethodPost || r.URL.Query().Get("Action") != "AssumeRoleWithOIDC" {
			fail(400, "InvalidAction")
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		form, err := url.ParseQuery(string(body))
		if err != nil {
			fail(400, "MalformedRequest")
			return
		}
		tok := form.Get("OIDCToken")
		s.mu.Lock()
		s.Seen = append(s.Seen, tok)
		ok, refusal := s.accepted[tok], s.refusal
		s.mu.Unlock()
		switch {
		case refusal != "":
			fail(401, refusal)
			return
		case form.Get("RoleArn") == "" || form.Get("OIDCProviderArn") == "" || form.Get("RoleSessionName") == "":
			fail(400, "MissingParameter")
			return
		case !ok:
			fail(400, "AuthenticationFail.OIDCToken.Invalid")
			return
		}
		tr := is.Issue()
		fmt.Fprintf(w, `{"RequestId":"req-2","Credentials":{"AccessKeyId":%q,"AccessKeySecret":%q,"SecurityToken":%q,"Expiration":%q},"AssumedRoleUser":{"Arn":%q}}`,
			tr.ID, tr.Secret, tr.Token, tr.Expiration.Format(time.RFC3339), strings.TrimSpace(form.Get("RoleArn")))
	}))
	return s
}
