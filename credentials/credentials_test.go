package credentials_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials/credtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testclock"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// envMap is a LookupEnv over a map.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const secretWord = "s3cr3t-SHOULD-NOT-LEAK"

// noSecret fails when err's text holds a secret.
func noSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range append(secrets, secretWord) {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error text holds a secret: %v", err)
		}
	}
}

func TestEnvProvider(t *testing.T) {
	ctx := context.Background()
	c, err := credentials.Env{LookupEnv: envMap(map[string]string{
		"ALIBABA_CLOUD_ACCESS_KEY_ID": "ak", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secretWord, "ALIBABA_CLOUD_SECURITY_TOKEN": "tok"})}.Retrieve(ctx)
	if err != nil || c.AccessKeyID != "ak" || c.AccessKeySecret != secretWord || c.SecurityToken != "tok" || !c.Expiration.IsZero() {
		t.Fatalf("got %v, %v", c, err)
	}
	if strings.Contains(fmt.Sprint(c), secretWord) || strings.Contains(fmt.Sprintf("%#v", c), "tok\"") {
		t.Errorf("Credentials print their secret: %v %#v", c, c)
	}
	_, err = credentials.Env{LookupEnv: envMap(nil)}.Retrieve(ctx)
	if !errors.Is(err, credentials.ErrNotConfigured) {
		t.Errorf("no env: %v, want ErrNotConfigured", err)
	}
	_, err = credentials.Env{LookupEnv: envMap(map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_SECRET": secretWord})}.Retrieve(ctx)
	if err == nil || errors.Is(err, credentials.ErrNotConfigured) || !strings.Contains(err.Error(), "ALIBABA_CLOUD_ACCESS_KEY_ID") {
		t.Errorf("secret without id: %v", err)
	}
	noSecret(t, err)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func issueJSON(id, secret, token string, exp time.Time) string {
	b, _ := json.Marshal(map[string]string{"Code": "Success", "AccessKeyId": id, "AccessKeySecret": secret,
		"SecurityToken": token, "Expiration": exp.UTC().Format(time.RFC3339)})
	return string(b)
}

// The JSON file is read again when it is replaced; a bad replacement keeps
// the old triple (the cache) and the error names the file, not its text.
func TestJSONFileRotatesAtomicallyAndRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "creds.json")
	exp := time.Now().Add(time.Hour)
	writeFile(t, path, issueJSON("STS.one", "secret-one", "token-one", exp))
	f := &credentials.JSONFile{Path: path, Field: "source.credentials.credentials_file"}
	cache := credentials.NewCache(f, credentials.CacheOptions{})
	ctx := context.Background()
	c, err := cache.Get(ctx)
	if err != nil || c.AccessKeyID != "STS.one" || c.AccessKeySecret != "secret-one" || c.SecurityToken != "token-one" || !c.Expiration.Equal(exp.Truncate(time.Second)) {
		t.Fatalf("first read: %v %v", c, err)
	}
	writeFile(t, path, issueJSON("STS.two", "secret-two", "token-two", exp))
	c, err = cache.Get(ctx)
	if err != nil || c.AccessKeyID != "STS.two" || c.AccessKeySecret != "secret-two" || c.SecurityToken != "token-two" {
		t.Fatalf("after rotation: %v %v", c, err)
	}
	// A broken replacement: the cache keeps STS.two.
	writeFile(t, path, `{"AccessKeyId": "STS.three", "AccessKeySecret": "`+secretWord+`"`)
	c, err = cache.Get(ctx)
	if err != nil || c.AccessKeyID != "STS.two" {
		t.Fatalf("after a broken file: %v %v, want STS.two kept", c, err)
	}

	for name, tc := range map[string]struct{ data, want string }{
		"bad JSON": {`{"AccessKeySecret": "` + secretWord + `" x}`, "not valid JSON (error at byte"},
		// A file read while it is written in place (walked: "not valid
		// JSON (error at byte 0 of 0)" and "(error at byte 51 of 51)").
		"empty":      {"\n", "file PATH: empty (read while it was written? replace it atomically: write a temporary file, then rename it over this one)"},
		"cut short":  {`{"AccessKeyId":"a","AccessKeySecret":"` + secretWord, "file PATH: not valid JSON: it ends before the JSON does at byte 60 (read while it was written? replace it atomically"},
		"not object": {`["` + secretWord + `"]`, "not the credentials JSON"},
		"code":       {`{"Code":"Failure","AccessKeyId":"a","AccessKeySecret":"` + secretWord + `"}`, `Code is "Failure", not Success`},
		"missing":    {`{"AccessKeyId":"a"}`, "AccessKeySecret missing"},
		"bad time":   {`{"AccessKeyId":"a","AccessKeySecret":"` + secretWord + `","Expiration":"tomorrow"}`, "not an RFC 3339 time"},
		// What to look at (before: 'expired at ... on arrival (is this
		// machine's clock right?)', for a file not rotated for an hour too).
		"expired":      {issueJSON("a", secretWord, "t", time.Now().Add(-time.Hour)), ", before they were fetched, by this machine's clock: whatever renews them has not"},
		"missing file": {"", "does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.json")
			if tc.data != "" {
				writeFile(t, p, tc.data)
			}
			_, err := credentials.NewCache(&credentials.JSONFile{Path: p, Field: "mns.credentials.credentials_file"}, credentials.CacheOptions{}).Get(ctx)
			if want := strings.ReplaceAll(tc.want, "PATH", p); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "mns.credentials.credentials_file") && name != "expired" {
				t.Errorf("the error does not name the key: %v", err)
			}
			// An expired triple is named by its file, and the provider once.
			if name == "expired" && (!strings.Contains(err.Error(), "file "+p) || strings.Count(err.Error(), "from file") != 1) {
				t.Errorf("the error does not name the file once: %v", err)
			}
			noSecret(t, err)
		})
	}
}

// TestSTSKeyWithoutTokenIsRefused: an AccessKeyId of a temporary key
// (STS.) without its SecurityToken is refused by the cache, whichever
// provider gave it, with what to do, before a server refuses a login or a
// request signed with it (walked: check said "ok ... aksign" of such a
// credentials file, and of static keys). A long-lived key needs no token.
func TestSTSKeyWithoutTokenIsRefused(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "c.json")
	writeFile(t, file, issueJSON("STS.fromfile", secretWord, "", time.Now().Add(time.Hour)))
	for name, p := range map[string]credentials.Provider{
		"static": credentials.Static{AccessKeyID: "STS.static", AccessKeySecret: secretWord},
		"env":    credentials.Env{LookupEnv: envMap(map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.env", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secretWord})},
		"file":   &credentials.JSONFile{Path: file},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := credentials.NewCache(p, credentials.CacheOptions{OneShot: true}).Get(ctx)
			if err == nil || !strings.Contains(err.Error(), "is a temporary (STS) AccessKey ID, but no SecurityToken came with it: "+
				"give the security token issued with it (with the key and secret of the same issue), or use a long-lived AccessKey") {
				t.Fatalf("got %v, want the missing token named", err)
			}
			noSecret(t, err)
		})
	}
	if _, err := credentials.NewCache(credentials.Static{AccessKeyID: "LTAIlonglived", AccessKeySecret: secretWord}, credentials.CacheOptions{OneShot: true}).Get(ctx); err != nil {
		t.Fatalf("a long-lived key without a token: %v", err)
	}
}

// The three *_file twins are read together; a swap of all three yields
// the new triple, never a mix.
func TestFilesTwinsReadTogether(t *testing.T) {
	dir := t.TempDir()
	id, sec, tok := filepath.Join(dir, "id"), filepath.Join(dir, "secret"), filepath.Join(dir, "token")
	writeFile(t, id, "STS.a\n")
	writeFile(t, sec, "secret-a\n")
	writeFile(t, tok, "token-a")
	f := &credentials.Files{AccessKeyIDFile: id, AccessKeySecretFile: sec, SecurityTokenFile: tok, Field: "source.credentials"}
	cache := credentials.NewCache(f, credentials.CacheOptions{})
	c, err := cache.Get(context.Background())
	if err != nil || c.AccessKeyID != "STS.a" || c.AccessKeySecret != "secret-a" || c.SecurityToken != "token-a" {
		t.Fatalf("got %v %v", c, err)
	}
	writeFile(t, id, "STS.b")
	writeFile(t, sec, "secret-b")
	writeFile(t, tok, "token-b")
	c, err = cache.Get(context.Background())
	if err != nil || c.AccessKeyID != "STS.b" || c.AccessKeySecret != "secret-b" || c.SecurityToken != "token-b" {
		t.Fatalf("after rotation: %v %v", c, err)
	}
	os.Remove(sec)
	_, err = (&credentials.Files{AccessKeyIDFile: id, AccessKeySecretFile: sec, Field: "source.credentials"}).Retrieve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "source.credentials.access_key_secret_file") || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing secret file: %v", err)
	}
}

// A fake provider that counts calls and fails on demand.
type fakeProvider struct {
	mu    sync.Mutex
	calls int
	fail  bool
	life  time.Duration
	block chan struct{}
	now   func() time.Time // nil = time.Now
}

func (*fakeProvider) Name() string { return "fake" }

func (f *fakeProvider) Retrieve(ctx context.Context) (credentials.Credentials, error) {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail {
		return credentials.Credentials{}, fmt.Errorf("fake: down (call %d)", f.calls)
	}
	return credentials.Credentials{AccessKeyID: fmt.Sprintf("id-%d", f.calls), AccessKeySecret: secretWord,
		SecurityToken: "t", Expiration: f.clock().Add(f.life), Source: "fake"}, nil
}

func (f *fakeProvider) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

func (f *fakeProvider) set(fail bool) {
	f.mu.Lock()
	f.fail = fail
	f.mu.Unlock()
}

func (f *fakeProvider) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// Concurrent callers share one fetch.
func TestCacheConcurrentCallersShareOneFetch(t *testing.T) {
	p := &fakeProvider{life: time.Hour, block: make(chan struct{})}
	cache := credentials.NewCache(p, credentials.CacheOptions{})
	var wg sync.WaitGroup
	ids := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := cache.Get(context.Background())
			if err != nil {
				t.Error(err)
			}
			ids <- c.AccessKeyID
		}()
	}
	close(p.block)
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != "id-1" {
			t.Errorf("a caller got %s", id)
		}
	}
	if n := p.count(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// waitCalls waits until the provider was called n times (a background
// refresh).
func waitCalls(t *testing.T, p *fakeProvider, n int) {
	t.Helper()
	waitfor.Until(t, fmt.Sprintf("%d provider calls", n), 10*time.Second, func() bool { return p.count() >= n },
		func() string { return fmt.Sprintf("called %d times", p.count()) })
}

// waitRefresh waits until Get returns id.
func waitID(t *testing.T, cache *credentials.Cache, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, _ := cache.Get(context.Background())
		if c.AccessKeyID == id {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get returns %s, want %s", c.AccessKeyID, id)
		}
		time.Sleep(time.Millisecond)
	}
}

// Refresh happens once, 180 s before expiry; a failure keeps the old triple
// until it expires, then a clear error, no provider call during backoff,
// and recovery.
func TestCacheRefreshAheadKeepOldBackoffAndRecover(t *testing.T) {
	clk := testclock.New(time.Now())
	p := &fakeProvider{life: time.Hour, now: clk.Now}
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now, MinBackoff: time.Minute, MaxBackoff: 4 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, nil))})
	ctx := context.Background()
	c, err := cache.Get(ctx)
	if err != nil || c.AccessKeyID != "id-1" {
		t.Fatal(c, err)
	}
	clk.Add(time.Hour - 181*time.Second) // not yet due
	for range 100 {
		cache.Get(ctx)
	}
	if p.count() != 1 {
		t.Fatalf("%d fetches before the refresh was due", p.count())
	}
	clk.Add(2 * time.Second) // 179 s left: due
	c, err = cache.Get(ctx)
	if err != nil || c.AccessKeyID != "id-1" {
		t.Fatalf("Get while the refresh runs: %v %v (the current triple is still valid)", c, err)
	}
	waitID(t, cache, "id-2")
	if p.count() != 2 {
		t.Fatalf("%d fetches, want 2", p.count())
	}

	// Provider down: the next refresh fails, id-2 stays in use.
	p.set(true)
	clk.Add(time.Hour - 179*time.Second) // id-2 is due
	c, err = cache.Get(ctx)
	if err != nil || c.AccessKeyID != "id-2" {
		t.Fatal(c, err)
	}
	waitCalls(t, p, 3)
	// The provider is called before the refresh stores its failure and the
	// backoff from the clock of then: wait for that before moving the clock
	// (else the backoff starts 10 minutes later and no fourth call comes).
	waitfor.Until(t, "the failed refresh to be stored", 10*time.Second, func() bool { return cache.Status().Failures == 1 })
	for range 100 {
		if c, err := cache.Get(ctx); err != nil || c.AccessKeyID != "id-2" {
			t.Fatalf("during backoff: %v %v", c, err)
		}
	}
	if p.count() != 3 {
		t.Fatalf("%d fetches during the backoff, want none more", p.count()-3)
	}
	// Past expiry: a clear error at once, naming the provider and cause.
	clk.Add(10 * time.Minute)
	_, _ = cache.Get(ctx) // starts the refresh that waitCalls sees
	waitCalls(t, p, 4)
	_, err = cache.Get(ctx)
	if err == nil || !strings.Contains(err.Error(), "credentials from fake expired at") || !strings.Contains(err.Error(), "fake: down") || !strings.Contains(err.Error(), "next attempt in") {
		t.Fatalf("after expiry: %v", err)
	}
	noSecret(t, err)
	for range 100 {
		cache.Get(ctx)
	}
	if p.count() != 4 {
		t.Fatalf("%d fetches while expired and backing off, want 4 (no storm)", p.count())
	}
	// Back up: recovery after the backoff.
	p.set(false)
	clk.Add(5 * time.Minute)
	c, err = cache.Get(ctx)
	if err != nil || c.AccessKeyID != "id-5" {
		t.Fatalf("recovery: %v %v", c, err)
	}
	logMu.Lock()
	log := logBuf.String()
	logMu.Unlock()
	for _, want := range []string{"credentials refreshed", "credentials refresh failed; using the current ones", "no valid credentials", "recovered=true"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, secretWord) {
		t.Error("the log holds the secret")
	}
	if n := strings.Count(log, "credentials refresh failed"); n != 1 {
		t.Errorf("the failure is logged %d times, want once", n)
	}
}

// bufferedLogger is a text logger into a buffer, safe for the cache's
// background refreshes, and a function that returns what it holds.
func bufferedLogger() (*slog.Logger, func() string) {
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	logs := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return logBuf.String()
	}
	return slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, nil)), logs
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// A short-lived triple is refreshed at half its life, not at every call.
func TestCacheShortLivedTripleIsNotAStorm(t *testing.T) {
	clk := testclock.New(time.Now())
	p := &fakeProvider{life: 10 * time.Second, now: clk.Now}
	cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now})
	for range 100 {
		if _, err := cache.Get(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if p.count() != 1 {
		t.Errorf("%d fetches for a 10 s triple within its first half", p.count())
	}
}

func TestURIProvider(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	u := credtest.URIServer(t, is)
	p := &credentials.URI{LookupEnv: envMap(map[string]string{"ALIBABA_CLOUD_CREDENTIALS_URI": u + "/creds?token=" + secretWord})}
	c, err := p.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if why := is.Check(c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, time.Now()); why != "" {
		t.Fatalf("the triple is not what the fake issued: %s", why)
	}
	if strings.Contains(c.Source, secretWord) {
		t.Errorf("source %q holds the URI's query", c.Source)
	}
	is.SetDown(true)
	_, err = p.Retrieve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("down: %v", err)
	}
	noSecret(t, err)

	for name, tc := range map[string]struct{ body, want string }{
		"bad JSON":     {`{"Code":"Success","AccessKeySecret":"` + secretWord, "not valid JSON"},
		"code":         {`{"Code":"Error","AccessKeyId":"a","AccessKeySecret":"` + secretWord + `"}`, `Code is "Error"`},
		"no code":      {`{"AccessKeyId":"a","AccessKeySecret":"` + secretWord + `","SecurityToken":"t","Expiration":"2099-01-01T00:00:00Z"}`, "Code is none"},
		"no token":     {`{"Code":"Success","AccessKeyId":"a","AccessKeySecret":"` + secretWord + `","Expiration":"2099-01-01T00:00:00Z"}`, "SecurityToken missing"},
		"expired":      {issueJSON("a", secretWord, "t", time.Now().Add(-time.Second)), "expired at"},
		"secret token": {`{"Code":"` + secretWord + strings.Repeat("x", 50) + `"}`, "Code is a"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tc.body)) }))
			defer srv.Close()
			_, err := credentials.NewCache(&credentials.URI{URL: srv.URL}, credentials.CacheOptions{}).Get(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			noSecret(t, err)
		})
	}
	_, err = (&credentials.URI{LookupEnv: envMap(nil)}).Retrieve(context.Background())
	if !errors.Is(err, credentials.ErrNotConfigured) {
		t.Errorf("unset: %v", err)
	}
}

func TestECSRoleIMDSv2AndV1Fallback(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	md := credtest.MetadataServer(t, is, "bridge-role")
	env := map[string]string{credentials.EnvTestMetadataURL: md.URL}
	p := &credentials.ECSRole{LookupEnv: envMap(env)}
	ctx := context.Background()
	c, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if why := is.Check(c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, time.Now()); why != "" || c.Source != "ecs_ram_role bridge-role" {
		t.Fatalf("%v: %s", c, why)
	}
	if md.TokenRequests.Load() != 1 || md.V1Requests.Load() != 0 {
		t.Errorf("IMDSv2 not used: %d token requests, %d v1 requests", md.TokenRequests.Load(), md.V1Requests.Load())
	}
	// An old service without IMDSv2: fall back to v1 ...
	md.V1Only.Store(true)
	if _, err := p.Retrieve(ctx); err != nil || md.V1Requests.Load() == 0 {
		t.Fatalf("v1 fallback: %v (%d v1 requests)", err, md.V1Requests.Load())
	}
	// ... unless v1 is off.
	env[credentials.EnvIMDSv1Disabled] = "true"
	_, err = p.Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "IMDSv1 is off") {
		t.Errorf("v1 disabled: %v", err)
	}
	delete(env, credentials.EnvIMDSv1Disabled)
	md.V1Only.Store(false)
	// A named role that is not attached: the error says where the name
	// came from and what to do (it said 'role other is not attached to this
	// instance (HTTP 404)', walk10).
	env[credentials.EnvECSRoleName] = "other"
	_, err = p.Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "role other (ALIBABA_CLOUD_ECS_METADATA) is not attached to this instance (HTTP 404): "+
		"set ALIBABA_CLOUD_ECS_METADATA to the role attached, or leave it empty to use the attached one") {
		t.Errorf("wrong role: %v", err)
	}
	delete(env, credentials.EnvECSRoleName)
	// The service failing is not a question of the role (walked: a fake
	// answering 500 made it "is a RAM role attached to this instance?").
	is.SetDown(true)
	_, err = p.Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "ecs_ram_role: find the role: the metadata service answered GET /latest/meta-data/ram/security-credentials/ with HTTP 503") ||
		strings.Contains(err.Error(), "attached") {
		t.Errorf("metadata service down: %v", err)
	}
	is.SetDown(false)
	// Off by switch.
	env[credentials.EnvECSMetadataDisabled] = "true"
	if _, err := p.Retrieve(ctx); !errors.Is(err, credentials.ErrNotConfigured) {
		t.Errorf("disabled: %v", err)
	}
}

// In a test binary no provider reaches a non-loopback address, whatever
// the environment says.
func TestTestBinaryNeverLeavesLoopback(t *testing.T) {
	ctx := context.Background()
	_, err := (&credentials.ECSRole{LookupEnv: envMap(nil)}).Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "refusing to reach 100.100.100.200 from a test binary") {
		t.Errorf("ECS default: %v", err)
	}
	dir := t.TempDir()
	tok := filepath.Join(dir, "oidc")
	writeFile(t, tok, "jwt")
	_, err = (&credentials.OIDC{LookupEnv: envMap(map[string]string{credentials.EnvRoleARN: "acs:ram::1:role/r",
		credentials.EnvOIDCProviderARN: "acs:ram::1:oidc-provider/p", credentials.EnvOIDCTokenFile: tok})}).Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "refusing to reach sts.aliyuncs.com") {
		t.Errorf("STS default: %v", err)
	}
}

// TestOIDCSaysWhereTheVariablesComeFrom: a pod with some of the three
// RRSA variables and not the others (a ServiceAccount without the role
// annotation, a namespace without the injection label) is told what sets
// them on ACK; before, the error named the missing variables only.
func TestOIDCSaysWhereTheVariablesComeFrom(t *testing.T) {
	_, err := (&credentials.OIDC{LookupEnv: envMap(map[string]string{credentials.EnvOIDCTokenFile: "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token"})}).Retrieve(context.Background())
	for _, want := range []string{"ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set", "ack-pod-identity-webhook",
		"pod-identity.alibabacloud.com/injection=on", "pod-identity.alibabacloud.com/role-name"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("oidc with the token file only: %v, want it to say %q", err, want)
		}
	}
}

func TestOIDCRereadsTheTokenFile(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	sts := credtest.STSServer(t, is)
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	writeFile(t, tok, "jwt-1")
	sts.Accept("jwt-1")
	env := map[string]string{credentials.EnvRoleARN: "acs:ram::1:role/bridge", credentials.EnvOIDCProviderARN: "acs:ram::1:oidc-provider/ack",
		credentials.EnvOIDCTokenFile: tok, credentials.EnvTestSTSEndpoint: sts.URL}
	p := &credentials.OIDC{LookupEnv: envMap(env)}
	ctx := context.Background()
	c, err := p.Retrieve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if why := is.Check(c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, time.Now()); why != "" {
		t.Fatal(why)
	}
	// kubelet rotates the token: the next call sends the new one.
	writeFile(t, tok, "jwt-2")
	_, err = p.Retrieve(ctx)
	// The refusal names the file the token was read from (it named the
	// role only; walk10: a token file swapped to a bad token under a running
	// bridge).
	if err == nil || !strings.Contains(err.Error(), "AuthenticationFail.OIDCToken.Invalid") || !strings.Contains(err.Error(), "request id") ||
		!strings.Contains(err.Error(), "STS refused the OIDC token read from "+tok+": ") {
		t.Errorf("refused token: %v", err)
	}
	noSecret(t, err, "jwt-2", "secret-free message")
	sts.Accept("jwt-2")
	if _, err := p.Retrieve(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sts.SeenTokens(); len(got) != 3 || got[0] != "jwt-1" || got[1] != "jwt-2" || got[2] != "jwt-2" {
		t.Errorf("tokens sent: %v", got)
	}
	delete(env, credentials.EnvOIDCProviderARN)
	_, err = p.Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), credentials.EnvOIDCProviderARN) {
		t.Errorf("incomplete env: %v", err)
	}
}

// TestOIDCSaysWhereARefusedRoleIsDecided: STS refuses a pod whose OIDC
// provider is not registered, or whose role's trust policy does not admit
// it, with one code (AuthenticationFail.NoPermission); the error names the
// provider and the role, and where in RAM each is checked, not the token.
func TestOIDCSaysWhereARefusedRoleIsDecided(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	sts := credtest.STSServer(t, is)
	tok := filepath.Join(t.TempDir(), "token")
	writeFile(t, tok, "jwt-1")
	sts.Accept("jwt-1")
	sts.RefuseWith("AuthenticationFail.NoPermission")
	env := map[string]string{credentials.EnvRoleARN: "acs:ram::1:role/bridge", credentials.EnvOIDCProviderARN: "acs:ram::1:oidc-provider/ack",
		credentials.EnvOIDCTokenFile: tok, credentials.EnvTestSTSEndpoint: sts.URL}
	p := &credentials.OIDC{LookupEnv: envMap(env)}
	_, err := p.Retrieve(context.Background())
	for _, want := range []string{"HTTP 401 \"AuthenticationFail.NoPermission\"", "the OIDC provider acs:ram::1:oidc-provider/ack (ALIBABA_CLOUD_OIDC_PROVIDER_ARN) exists",
		"the trust policy of role acs:ram::1:role/bridge (ALIBABA_CLOUD_ROLE_ARN)", "ServiceAccount"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("refused role: %v, want it to say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "refused the OIDC token") {
		t.Errorf("refused role: %v, blames the token", err)
	}
	noSecret(t, err, "jwt-1", "secret-free message")
	sts.RefuseWith("")
	if _, err := p.Retrieve(context.Background()); err != nil {
		t.Fatalf("once the role admits the provider: %v", err)
	}
}

func TestProfiles(t *testing.T) {
	dir := t.TempDir()
	is := credtest.NewIssuer(time.Hour)
	md := credtest.MetadataServer(t, is, "ini-role")
	ini := filepath.Join(dir, "credentials")
	writeFile(t, ini, `# comment
[default]
type = access_key
access_key_id = LTAIdefault
access_key_secret = `+secretWord+`

[ecs]
type = ecs_ram_role
role_name = ini-role

[arn]
type = ram_role_arn
`)
	env := map[string]string{"HOME": dir, credentials.EnvCredentialsFile: ini, credentials.EnvTestMetadataURL: md.URL}
	ctx := context.Background()
	issued := func(c credentials.Credentials) bool {
		return is.Check(c.AccessKeyID, c.AccessKeySecret, c.SecurityToken, time.Now()) == ""
	}
	// Each step retrieves with a new provider of its kind and
	// ALIBABA_CLOUD_PROFILE set to profile (unset for ""): it wants ok of
	// the credentials when ok is set, else an error holding err.
	type step struct {
		name, profile string
		ok            func(credentials.Credentials) bool
		err           string
	}
	run := func(newProvider func() credentials.Provider, steps []step) {
		t.Helper()
		for _, st := range steps {
			if st.profile == "" {
				delete(env, credentials.EnvProfile)
			} else {
				env[credentials.EnvProfile] = st.profile
			}
			c, err := newProvider().Retrieve(ctx)
			if st.ok != nil && (err != nil || !st.ok(c)) {
				t.Fatalf("%s: %v %v", st.name, c, err)
			}
			if st.ok == nil && (err == nil || !strings.Contains(err.Error(), st.err)) {
				t.Errorf("%s: %v, want an error holding %q", st.name, err, st.err)
			}
		}
	}
	profile := func() credentials.Provider { return &credentials.Profile{LookupEnv: envMap(env)} }
	run(profile, []step{
		{name: "default", ok: func(c credentials.Credentials) bool {
			return c.AccessKeyID == "LTAIdefault" && c.AccessKeySecret == secretWord
		}},
		{name: "ecs_ram_role", profile: "ecs", ok: issued},
		{name: "ram_role_arn", profile: "arn", err: `type "ram_role_arn" is not supported`},
		{name: "missing section", profile: "nope", err: "no section [nope] (named by ALIBABA_CLOUD_PROFILE)"},
	})
	// The file without [default]: the error says it is the default one
	// and which variable picks another (walk10: only the file and the
	// section were named).
	noDefault := filepath.Join(dir, "no-default")
	writeFile(t, noDefault, "[ecs]\ntype = ecs_ram_role\nrole_name = ini-role\n")
	env[credentials.EnvCredentialsFile] = noDefault
	run(profile, []step{{name: "no default section", err: "no section [default] (the default; set ALIBABA_CLOUD_PROFILE to the one to use)"}})
	env[credentials.EnvCredentialsFile] = ini
	delete(env, credentials.EnvProfile)
	delete(env, credentials.EnvCredentialsFile)
	if _, err := profile().Retrieve(ctx); !errors.Is(err, credentials.ErrNotConfigured) {
		t.Errorf("no file in HOME: %v", err)
	}

	cli := filepath.Join(dir, "config.json")
	writeFile(t, cli, `{"current":"ak","profiles":[
 {"name":"ak","mode":"AK","access_key_id":"LTAIcli","access_key_secret":"`+secretWord+`"},
 {"name":"sts","mode":"StsToken","access_key_id":"STS.cli","access_key_secret":"s","sts_token":"tok"},
 {"name":"role","mode":"EcsRamRole","ram_role_name":"ini-role"},
 {"name":"arn","mode":"RamRoleArn"}]}`)
	env[credentials.EnvCLIConfigFile] = cli
	cliProfile := func() credentials.Provider { return &credentials.CLIProfile{LookupEnv: envMap(env)} }
	run(cliProfile, []step{
		{name: "AK", ok: func(c credentials.Credentials) bool { return c.AccessKeyID == "LTAIcli" && c.SecurityToken == "" }},
		{name: "StsToken", profile: "sts", ok: func(c credentials.Credentials) bool { return c.AccessKeyID == "STS.cli" && c.SecurityToken == "tok" }},
		{name: "EcsRamRole", profile: "role", ok: issued},
		{name: "RamRoleArn", profile: "arn", err: "not supported"},
		{name: "missing profile", profile: "nope", err: `profile "nope": no such profile (named by ALIBABA_CLOUD_PROFILE)`},
	})
	env[credentials.EnvCLIProfileDisabled] = "true"
	if _, err := cliProfile().Retrieve(ctx); !errors.Is(err, credentials.ErrNotConfigured) {
		t.Errorf("disabled: %v", err)
	}
	writeFile(t, cli, `{"profiles": [`+secretWord)
	delete(env, credentials.EnvCLIProfileDisabled)
	_, err := cliProfile().Retrieve(ctx)
	if err == nil || !strings.Contains(err.Error(), "not the aliyun CLI's JSON config") {
		t.Errorf("bad JSON: %v", err)
	}
	noSecret(t, err)
}

// The chain's order: env, oidc, cli_profile, profile, ecs_ram_role, uri;
// the first that yields wins, and it is not sticky.
func TestDefaultChainOrder(t *testing.T) {
	dir := t.TempDir()
	is := credtest.NewIssuer(time.Hour)
	md := credtest.MetadataServer(t, is, "chain-role")
	uriIs := credtest.NewIssuer(time.Hour)
	uri := credtest.URIServer(t, uriIs)
	sts := credtest.STSServer(t, is)
	tok := filepath.Join(dir, "oidc")
	writeFile(t, tok, "jwt")
	sts.Accept("jwt")
	ini := filepath.Join(dir, "credentials")
	writeFile(t, ini, "[default]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = s\n")
	cli := filepath.Join(dir, "config.json")
	writeFile(t, cli, `{"current":"p","profiles":[{"name":"p","mode":"AK","access_key_id":"LTAIcli","access_key_secret":"s"}]}`)

	env := map[string]string{
		"HOME":                            dir,
		"ALIBABA_CLOUD_ACCESS_KEY_ID":     "LTAIenv",
		"ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s",
		credentials.EnvRoleARN:            "acs:ram::1:role/r",
		credentials.EnvOIDCProviderARN:    "acs:ram::1:oidc-provider/p",
		credentials.EnvOIDCTokenFile:      tok,
		credentials.EnvTestSTSEndpoint:    sts.URL,
		credentials.EnvCLIConfigFile:      cli,
		credentials.EnvCredentialsFile:    ini,
		credentials.EnvTestMetadataURL:    md.URL,
		credentials.EnvCredentialsURI:     uri,
	}
	ch := credentials.DefaultChain(envMap(env))
	steps := []struct {
		drop []string
		want string
	}{
		{nil, "env"},
		{[]string{"ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"}, "oidc"},
		{[]string{credentials.EnvRoleARN, credentials.EnvOIDCProviderARN, credentials.EnvOIDCTokenFile}, "cli_profile"},
		{[]string{credentials.EnvCLIConfigFile}, "profile"},
		{[]string{credentials.EnvCredentialsFile}, "ecs_ram_role"},
	}
	for _, s := range steps {
		for _, k := range s.drop {
			delete(env, k)
		}
		c, err := ch.Retrieve(context.Background())
		if err != nil || !strings.HasPrefix(c.Source, s.want) {
			t.Fatalf("want %s: got %q, %v", s.want, c.Source, err)
		}
	}
	env[credentials.EnvECSMetadataDisabled] = "true"
	c, err := ch.Retrieve(context.Background())
	if err != nil || !strings.HasPrefix(c.Source, "uri") {
		t.Fatalf("want uri: %q %v", c.Source, err)
	}
	// The chain falls through a failing provider (ECS down) to the next.
	delete(env, credentials.EnvECSMetadataDisabled)
	is.SetDown(true)
	c, err = ch.Retrieve(context.Background())
	if err != nil || !strings.HasPrefix(c.Source, "uri") {
		t.Fatalf("ECS down: %q %v", c.Source, err)
	}
	delete(env, credentials.EnvCredentialsURI)
	_, err = ch.Retrieve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "found none") || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("none: %v", err)
	}
}

// countingChain counts the Retrieves of the chain it wraps (and is a
// Watcher through it).
type countingChain struct {
	credentials.Chain
	n atomic.Int64
}

func (c *countingChain) Retrieve(ctx context.Context) (credentials.Credentials, error) {
	c.n.Add(1)
	return c.Chain.Retrieve(ctx)
}

// A chain whose first provider yields does not fetch again at every Get
// because a later, file-backed member was never read.
func TestChainWithUnreadFileProvidersIsFetchedOnce(t *testing.T) {
	dir := t.TempDir()
	env := envMap(map[string]string{"HOME": dir, "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s",
		credentials.EnvECSMetadataDisabled: "true"})
	p := &countingChain{Chain: credentials.DefaultChain(env)}
	var _ credentials.Watcher = p
	cache := credentials.NewCache(p, credentials.CacheOptions{})
	defer cache.Close()
	for range 100 {
		if c, err := cache.Get(context.Background()); err != nil || c.Source != "env" {
			t.Fatal(c, err)
		}
	}
	if n := p.n.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

// BenchmarkCacheGet is the cost a signer pays per request for a valid
// cached triple (static keys from files: one stat per file per Get).
func BenchmarkCacheGet(b *testing.B) {
	sec := testfile.Write(b, b.TempDir(), "secret", "s")
	for _, tc := range []struct {
		name string
		p    credentials.Provider
	}{
		{"static", &credentials.Files{AccessKeyID: "a", AccessKeySecret: "s"}},
		{"secret_file", &credentials.Files{AccessKeyID: "a", AccessKeySecretFile: sec}},
		{"expiring", &fakeProvider{life: time.Hour}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cache := credentials.NewCache(tc.p, credentials.CacheOptions{})
			defer cache.Close()
			ctx := context.Background()
			for b.Loop() {
				if _, err := cache.Get(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCacheRefusedRefreshesAnSTSTripleEarly: a server that refuses the held
// STS triple (its clock is ahead of this machine's, so the triple expired
// there before the refresh the cache planned) makes the cache fetch anew at
// once, not at the planned refresh: at most once per 5 s, only for the held
// id, never for a triple that does not expire (a static key). Before, the
// bridge kept signing with the refused triple until its own refresh time
// (walked: 10 s of refused MNS sends at every rotation with the servers'
// clocks 60 s ahead and 40 s triples).
func TestCacheRefusedRefreshesAnSTSTripleEarly(t *testing.T) {
	clk := testclock.New(time.Now())
	p := &fakeProvider{life: time.Hour, now: clk.Now}
	var logBuf bytes.Buffer
	var logMu sync.Mutex
	cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logBuf}, nil))})
	defer cache.Close()
	get := func() string {
		t.Helper()
		c, err := cache.Get(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c.AccessKeyID
	}
	if id := get(); id != "id-1" {
		t.Fatalf("first triple %s", id)
	}
	cache.Refused("id-1")
	waitID(t, cache, "id-2")
	cache.Refused("id-1") // not the held one any more
	cache.Refused("id-2") // within 5 s of the last refresh it started
	clk.Add(4 * time.Second)
	cache.Refused("id-2")
	if n := p.count(); n != 2 {
		t.Errorf("%d fetches, want 2 (a refusal of an old id, or within 5 s, fetches nothing)", n)
	}
	clk.Add(time.Second)
	cache.Refused("id-2")
	waitCalls(t, p, 3)
	// Each refused triple was followed by a new one: the clock question is
	// asked once per refused id (id-1, id-2), when its refetch has ended.
	waitID(t, cache, "id-3")
	logMu.Lock()
	n := strings.Count(logBuf.String(), "is the clock behind, or did the issuer revoke them early?")
	logMu.Unlock()
	if n != 2 {
		t.Errorf("the clock question is logged %d times, want 2 (once per refused triple)", n)
	}

	static := &countingStatic{}
	sc := credentials.NewCache(static, credentials.CacheOptions{Now: clk.Now})
	if _, err := sc.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	sc.Refused("LTAIstatic")
	if _, err := sc.Get(context.Background()); err != nil || static.calls.Load() != 1 {
		t.Errorf("a refused static key was fetched again (%d fetches, %v): fixing it is the operator's", static.calls.Load(), err)
	}
}

// TestCacheRefusedTripleGivenAgainIsCalledStale: a credentials file whose
// token the servers refuse before its Expiration (nothing rotates it any
// more; walked) gives the same triple at every refetch. That is said once,
// as stale where it comes from, and not logged as refreshed every 5 s
// (before: "credentials refreshed" for the same triple at each refusal, and
// only "is the clock behind, or did the issuer revoke them early?").
func TestCacheRefusedTripleGivenAgainIsCalledStale(t *testing.T) {
	cache, p, clk, logs := sameTripleCache(t, time.Hour)
	// Refused starts a refetch only when none runs and 5 s have passed:
	// it is repeated until the provider is called again, which also means
	// the refetch before has ended (and logged what it logs).
	for i := int64(2); i <= 6; i++ {
		waitfor.Until(t, fmt.Sprintf("fetch %d", i), 10*time.Second, func() bool {
			cache.Refused("STS.stale")
			return p.calls.Load() >= i
		})
		clk.Add(5 * time.Second)
	}
	const stale = "the provider gave the refused credentials again: they are stale where they come from"
	if n := strings.Count(logs(), "credentials refreshed"); n != 1 {
		t.Errorf("%d lines 'credentials refreshed' for one triple fetched 6 times, want 1 (the first fetch):\n%s", n, logs())
	}
	if n := strings.Count(logs(), stale); n != 1 {
		t.Errorf("the stale triple is logged %d times, want once:\n%s", n, logs())
	}
	// The clock is not what is wrong: the question is not asked.
	if strings.Contains(logs(), "is the clock behind, or did the issuer revoke them early?") {
		t.Errorf("a stale triple is blamed on the clock:\n%s", logs())
	}
}

// TestCacheRefusedSoonBeforeItsExpiryAsksTheClock: a triple refused again
// within 15 minutes of its expiry by this machine's clock may have expired
// by the servers' clocks (MNS takes a request dated up to 15 minutes off):
// the stale line asks whether the clock is behind by that much (walk14: a
// box 10 minutes behind, a credentials file freshly written with a triple
// that expired there 5 minutes later, was told only that the file was
// stale, that nothing rotated it any more).
func TestCacheRefusedSoonBeforeItsExpiryAsksTheClock(t *testing.T) {
	cache, p, _, logs := sameTripleCache(t, 5*time.Minute)
	waitfor.Until(t, "the refetch", 10*time.Second, func() bool {
		cache.Refused("STS.stale")
		return p.calls.Load() >= 2 && strings.Contains(logs(), "the provider gave the refused credentials again")
	})
	for _, w := range []string{"the provider gave the refused credentials again, which expire in 5m0s by this machine's clock: is this clock behind the servers' by that much or more?",
		"sync it (NTP)", "else they are stale where they come from"} {
		if !strings.Contains(logs(), w) {
			t.Errorf("the log lacks %q:\n%s", w, logs())
		}
	}
}

// TestExpiredTripleErrorStaysTheSame: the error of a triple that comes
// expired does not change as time passes (no age in it): callers log a
// failure once by comparing its text (an age counting up made the MNS
// destination check log it every 2.5 s, walked).
func TestExpiredTripleErrorStaysTheSame(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	writeFile(t, p, issueJSON("a", secretWord, "t", time.Now().Add(-time.Minute)))
	clk := testclock.New(time.Now())
	var texts []string
	for range 2 {
		_, err := credentials.NewCache(&credentials.JSONFile{Path: p}, credentials.CacheOptions{Now: clk.Now, OneShot: true}).Get(context.Background())
		if err == nil || !strings.Contains(err.Error(), "whatever renews them has not (a credentials file that nothing rotates any more?), or this machine's clock is ahead") {
			t.Fatalf("got %v, want the expired triple's error", err)
		}
		noSecret(t, err)
		texts = append(texts, err.Error())
		clk.Add(5 * time.Second)
	}
	if texts[0] != texts[1] {
		t.Errorf("the error changed in 5 s:\n%s\n%s", texts[0], texts[1])
	}
}

// TestCacheTripleNotRenewedIsNotCalledRefreshed: a provider that gives the
// held triple again when its refresh is due (a credentials file nothing
// rotates any more) is not logged as "credentials refreshed" at each of the
// re-reads that close in on the expiry (before: 12 such lines in the last
// 5 s of a 5 s triple, walked), but once as not renewed.
func TestCacheTripleNotRenewedIsNotCalledRefreshed(t *testing.T) {
	cache, p, clk, logs := sameTripleCache(t, 10*time.Minute)
	exp := p.exp
	// Each due refresh: 180 s before the expiry, then at half the rest. Each
	// fetch is waited for until the cache has stored its answer (its next
	// refresh is after the clock): the clock moves on only then, or the
	// answer would be stored at the moved clock and set the next refresh
	// past the step that waits for it.
	for i, before := range []time.Duration{180 * time.Second, 90 * time.Second, 45 * time.Second, 20 * time.Second} {
		clk.Add(exp.Add(-before).Sub(clk.Now()))
		waitfor.Until(t, fmt.Sprintf("fetch %d", i+2), 10*time.Second, func() bool {
			if _, err := cache.Get(context.Background()); err != nil {
				t.Fatal(err)
			}
			return p.calls.Load() >= int64(i+2) && cache.Status().Refresh.After(clk.Now())
		})
	}
	if n := strings.Count(logs(), "credentials refreshed"); n != 1 {
		t.Errorf("%d lines 'credentials refreshed' for one triple fetched 5 times, want 1 (the first fetch):\n%s", n, logs())
	}
	if n := strings.Count(logs(), "credentials not renewed: the provider gave the held ones again"); n != 1 {
		t.Errorf("the unrenewed triple is logged %d times, want once:\n%s", n, logs())
	}
}

// TestCacheUnrenewedTripleIsNotAskedEverMoreOften: a provider that keeps
// giving the same expiring triple (a stale credentials file, a stuck RAM
// role agent) is asked again at most every UnrenewedAskEvery: the refresh
// was due at half the remaining life after each answer, 90 s, 45 s, ...
// down to nanoseconds before the expiry (38 asks in the last 180 s, 33 of
// them in its last 10 s). The log says once when they expire.
func TestCacheUnrenewedTripleIsNotAskedEverMoreOften(t *testing.T) {
	cache, p, clk, logs := sameTripleCache(t, 10*time.Minute)
	exp := p.exp
	asks := askBeforeExpiry(t, cache, clk, exp)
	for i := 1; i < len(asks); i++ {
		if gap := asks[i].Sub(asks[i-1]); gap < credentials.UnrenewedAskEvery {
			t.Errorf("ask %d came %v after the one before, %v before the expiry; want at least %v between asks (%d asks in all)",
				i+1, gap, exp.Sub(asks[i]), credentials.UnrenewedAskEvery, len(asks))
			break
		}
	}
	if want := "credentials not renewed: the provider gave the held ones again (they expire at " + exp.UTC().Format(time.RFC3339) + ")"; strings.Count(logs(), want) != 1 {
		t.Errorf("want once %q:\n%s", want, logs())
	}
}

// TestCacheUnrenewedTripleSaysWhyAtItsExpiry: a triple that nothing
// renews (the same one at every ask, each at least UnrenewedAskEvery
// apart) is asked for once more at its expiry, and the error then says
// that it expired before it was fetched. Before, the last ask (1.25 s
// before the expiry) put the next one 8.75 s after it, and until then
// every signer got "credentials from file expired at T and could not be
// refreshed: <nil>" (walked: a credentials_file not rotated for 10
// minutes, in the MNS send and destination-check lines of the log).
func TestCacheUnrenewedTripleSaysWhyAtItsExpiry(t *testing.T) {
	cache, p, clk, _ := sameTripleCache(t, 10*time.Minute)
	exp := p.exp
	askBeforeExpiry(t, cache, clk, exp)
	clk.Add(exp.Sub(clk.Now()))
	_, err := cache.Get(context.Background())
	if err == nil || strings.Contains(err.Error(), "<nil>") || !strings.Contains(err.Error(), "before they were fetched") {
		t.Fatalf("at the expiry: %v, want why: expired before they were fetched", err)
	}
	noSecret(t, err)
}

// askBeforeExpiry moves clk to each refresh of cache that is due before
// exp, lets Get ask the provider and waits for the answer; it returns the
// clock at each ask (at most 100).
func askBeforeExpiry(t *testing.T, cache *credentials.Cache, clk *testclock.Clock, exp time.Time) []time.Time {
	t.Helper()
	var asks []time.Time
	for len(asks) < 100 {
		due := cache.Status().Refresh
		if !due.Before(exp) {
			break
		}
		clk.Add(due.Sub(clk.Now()))
		asks = append(asks, clk.Now())
		if _, err := cache.Get(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitfor.Until(t, fmt.Sprintf("ask %d answered", len(asks)), 10*time.Second, func() bool { return cache.Status().Refresh != due })
	}
	return asks
}

// sameTripleCache is a Cache on a new test clock over a sameTriple whose
// triple expires life after the clock's start (p.exp); the cache has
// fetched once, and is closed when the test ends. It returns the cache, its
// provider, the clock and the cache's log so far.
func sameTripleCache(t *testing.T, life time.Duration) (*credentials.Cache, *sameTriple, *testclock.Clock, func() string) {
	t.Helper()
	clk := testclock.New(time.Now())
	p := &sameTriple{exp: clk.Now().Add(life)}
	logger, logs := bufferedLogger()
	cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now, Logger: logger})
	t.Cleanup(cache.Close)
	if _, err := cache.Get(context.Background()); err != nil {
		t.Fatal(err)
	}
	return cache, p, clk, logs
}

// sameTriple gives the same expiring STS triple at every fetch.
type sameTriple struct {
	exp   time.Time
	calls atomic.Int64
}

func (*sameTriple) Name() string { return "file" }
func (p *sameTriple) Retrieve(context.Context) (credentials.Credentials, error) {
	p.calls.Add(1)
	return credentials.Credentials{AccessKeyID: "STS.stale", AccessKeySecret: secretWord, SecurityToken: "token-stale",
		Expiration: p.exp, Source: "file sts.json"}, nil
}

// countingStatic is a provider of a key that does not expire.
type countingStatic struct{ calls atomic.Int64 }

func (*countingStatic) Name() string { return "static" }
func (s *countingStatic) Retrieve(context.Context) (credentials.Credentials, error) {
	s.calls.Add(1)
	return credentials.Credentials{AccessKeyID: "LTAIstatic", AccessKeySecret: secretWord, Source: "static"}, nil
}

// TestCacheFailingRefreshIsTriedAgainAtTheExpiry: a refresh that fails
// while the held triple is still valid is tried again at the latest when
// the triple expires, whatever the backoff: a provider back by then gives
// the new triple at once, and one that still fails says at the expiry that
// the triple expired. Before, the next attempt waited out the backoff (up
// to MaxBackoff past the expiry): walked with a credentials_file left
// half-written, the triple expired at 16:15:28 with the next attempt 31.8 s
// later, and the log's "no valid credentials" line was never written (only
// MNS sends, when messages came, said the triple had expired).
func TestCacheFailingRefreshIsTriedAgainAtTheExpiry(t *testing.T) {
	clk := testclock.New(time.Now())
	p := &fakeProvider{life: 10 * time.Minute, now: clk.Now}
	logger, logs := bufferedLogger()
	// A backoff of 15 to 30 minutes: longer than the triple has left.
	cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now, MinBackoff: 30 * time.Minute, MaxBackoff: 30 * time.Minute,
		Logger: logger})
	t.Cleanup(cache.Close)
	ctx := context.Background()
	c, err := cache.Get(ctx)
	if err != nil || c.AccessKeyID != "id-1" {
		t.Fatal(c, err)
	}
	exp := c.Expiration
	p.set(true)
	clk.Add(exp.Add(-170 * time.Second).Sub(clk.Now())) // the refresh is due, and fails
	if c, err := cache.Get(ctx); err != nil || c.AccessKeyID != "id-1" {
		t.Fatalf("while the refresh runs: %v %v", c, err)
	}
	waitfor.Until(t, "the failed refresh to be stored", 10*time.Second, func() bool { return cache.Status().Failures == 1 })

	clk.Add(exp.Sub(clk.Now())) // the expiry
	_, err = cache.Get(ctx)
	if err == nil || !strings.Contains(err.Error(), "credentials from fake expired at "+exp.UTC().Format(time.RFC3339)) {
		t.Fatalf("at the expiry: %v", err)
	}
	waitfor.Until(t, "a refresh at the expiry", 10*time.Second, func() bool { return cache.Status().Failures == 2 },
		func() string { return fmt.Sprintf("provider called %d times; log:\n%s", p.count(), logs()) })
	if want := "no valid credentials: signing fails and messages are held until a refresh works"; strings.Count(logs(), want) != 1 {
		t.Errorf("want once %q at the expiry:\n%s", want, logs())
	}
	noSecret(t, err)
}

// TestCacheWithoutAValidTripleAsksTheProviderEveryFewSeconds: once the held
// triple has expired (or none was ever had) nothing can be signed and every
// message is held, so a failing provider is asked again at most
// credentials.ExpiredMaxBackoff after each failure, not after the doubling
// backoff of up to a minute (the walk: a metadata service back at 16:50:55
// was asked again at 16:51:27, 37 s of held messages). The first attempt
// after the provider is back renews the triple.
func TestCacheWithoutAValidTripleAsksTheProviderEveryFewSeconds(t *testing.T) {
	for _, held := range []bool{true, false} {
		clk := testclock.New(time.Now())
		p := &fakeProvider{life: 10 * time.Minute, now: clk.Now}
		logger, logs := bufferedLogger()
		cache := credentials.NewCache(p, credentials.CacheOptions{Now: clk.Now, Logger: logger})
		ctx := context.Background()
		if held {
			c, err := cache.Get(ctx)
			if err != nil || c.AccessKeyID != "id-1" {
				t.Fatal(c, err)
			}
			p.set(true)
			clk.Add(c.Expiration.Sub(clk.Now())) // the refresh at the expiry fails
		} else {
			p.set(true)
		}
		if _, err := cache.Get(ctx); err == nil {
			t.Fatalf("held %v: Get with a failing provider and no valid triple succeeded", held)
		}
		// Ten failures: the doubling backoff would be 8.5 minutes by now
		// (capped at a minute).
		for i := 0; i < 10; i++ {
			calls := p.count()
			clk.Add(credentials.ExpiredMaxBackoff)
			_, err := cache.Get(ctx)
			if p.count() != calls+1 || err == nil {
				t.Fatalf("held %v: %d failures, then %s later: provider called %d more times (want 1), Get: %v\nlog:\n%s",
					held, cache.Status().Failures, credentials.ExpiredMaxBackoff, p.count()-calls, err, logs())
			}
		}
		p.set(false)
		clk.Add(credentials.ExpiredMaxBackoff)
		if c, err := cache.Get(ctx); err != nil || c.AccessKeyID != fmt.Sprintf("id-%d", p.count()) {
			t.Fatalf("held %v: the provider is back: Get %v %v", held, c, err)
		}
		if !strings.Contains(logs(), "recovered=true") {
			t.Errorf("held %v: no 'recovered' line:\n%s", held, logs())
		}
		cache.Close()
	}
}

// A metadata service that answered this process and then does not (down,
// unreachable for a while) is not a machine off ECS: the error said 'not on
// ECS? set ALIBABA_CLOUD_ECS_METADATA_DISABLED=true', which turns the only
// provider that worked off (walk10: the metadata service down for 30 s
// under a running bridge, pinned ecs_ram_role and the default chain). A
// service that never answered keeps the hint; the profile's ecs_ram_role
// section remembers it too.
func TestECSRoleMetadataGoneAfterItAnswered(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	md := credtest.MetadataServer(t, is, "bridge-role")
	target, _ := url.Parse(md.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var down atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() { // the connection closed without an answer
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	ini := filepath.Join(t.TempDir(), "credentials")
	writeFile(t, ini, "[on-ecs]\ntype = ecs_ram_role\nrole_name = bridge-role\n")
	env := envMap(map[string]string{credentials.EnvTestMetadataURL: front.URL, credentials.EnvCredentialsFile: ini, credentials.EnvProfile: "on-ecs"})
	ctx := context.Background()
	for _, p := range []credentials.Provider{&credentials.ECSRole{LookupEnv: env}, &credentials.Profile{LookupEnv: env}} {
		down.Store(true)
		if _, err := p.Retrieve(ctx); err == nil || !strings.Contains(err.Error(), "not on ECS?") {
			t.Errorf("%s: a metadata service that never answered: %v", p.Name(), err)
		}
		down.Store(false)
		if _, err := p.Retrieve(ctx); err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
		down.Store(true)
		_, err := p.Retrieve(ctx)
		if err == nil || strings.Contains(err.Error(), "not on ECS") || !strings.Contains(err.Error(), "answered before") {
			t.Errorf("%s: the metadata service gone after it answered: %v", p.Name(), err)
		}
	}
}
