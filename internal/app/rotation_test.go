package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/config/configtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/credentials/credtest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testbroker"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// rotationRig is the simulator and the emulator checking every login and
// every MNS request against what a fake issuer handed out, and a bridge
// whose credentials come from that issuer.
type rotationRig struct {
	is   *credtest.Issuer
	sim  *iotsim.Server
	emu  *mnsemu.Emulator
	logs *testpeers.SyncBuffer
	b    *Bridge
	stop func()
}

func startRotationRig(t *testing.T, is *credtest.Issuer, creds config.Credentials, signatureVersion string) *rotationRig {
	t.Helper()
	// The default chain must never reach the real metadata service.
	t.Setenv(credentials.EnvECSMetadataDisabled, "true")
	if creds.Provider == "ecs_ram_role" {
		t.Setenv(credentials.EnvECSMetadataDisabled, "")
	}
	r := &rotationRig{is: is, logs: &testpeers.SyncBuffer{}}
	emu, addr := testpeers.StartMNS(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Region: "cn-hangzhou", Authorize: is.Authorize("mns")})
	dir := t.TempDir()
	sim, ca := testpeers.StartIoT(t, iotsim.Config{Authorize: is.Authorize("iot")}, dir)
	r.sim, r.emu = sim, emu
	c := configtest.New()
	c.Source.Endpoint, c.Source.ClientID, c.Source.ConsumerGroupID = sim.Addr(), "rot-bridge", "g1"
	c.Source.ReconnectMinBackoff, c.Source.ReconnectMaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	c.Source.Credentials = creds
	c.Source.TLS = config.TLS{CAFile: ca, ServerName: "localhost"}
	c.Source.STOMP.Ack = "client-individual"
	c.MNS.Endpoint, c.MNS.SignatureVersion, c.MNS.Region = "http://"+addr, signatureVersion, "cn-hangzhou"
	c.Routes = []config.Route{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}}
	c.DefaultRoute.Queue = "unrouted"
	c.Delivery.Retry.InitialBackoff, c.Delivery.Retry.MaxBackoff, c.Delivery.Retry.MaxAge = 20*time.Millisecond, 200*time.Millisecond, 0
	c.HTTP.Listen = ""
	cfg := mustLoad(t, configtest.Write(t, dir, "bridge.yaml", c))
	b, err := New(cfg, Options{Logger: NewLogger(config.Log{Level: "info"}, r.logs),
		Credentials: credentials.CacheOptions{MinBackoff: 50 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	r.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	r.stop = func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("the bridge did not stop within a minute")
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			r.stop()
		}
	})
	return r
}

// publish sends n messages with ids prefix-0000.. and returns them.
func (r *rotationRig) publish(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
		r.sim.Publish("g1", iotsim.Message{Topic: fmt.Sprintf("/pk1/dev%d/user/data", i%5), MessageID: ids[i], Body: []byte(ids[i])})
	}
	return ids
}

// rounds publishes rotations+1 batches of 200 messages (ids prefix<k>-0000..),
// waits for each at the emulator and calls rotate(k) after each but the
// last; it returns every id.
func (r *rotationRig) rounds(t *testing.T, prefix string, rotations int, rotate func(k int)) []string {
	t.Helper()
	var all []string
	for k := 0; k <= rotations; k++ {
		ids := r.publish(fmt.Sprintf("%s%d", prefix, k), 200)
		all = append(all, ids...)
		waitFor(t, fmt.Sprintf("batch %d at the emulator", k), time.Minute, func() bool { return r.arrived(ids) == len(ids) })
		if k < rotations {
			rotate(k)
		}
	}
	return all
}

// arrived reports how many of ids are at the emulator.
func (r *rotationRig) arrived(ids []string) int {
	have := map[string]bool{}
	for _, m := range r.emu.Messages("telemetry-pk1") {
		body, err := m.DecodedBody()
		if err == nil {
			have[string(body)] = true
		}
	}
	n := 0
	for _, id := range ids {
		if have[id] {
			n++
		}
	}
	return n
}

// TestRotationRunSignsEveryRequestWithTheCurrentTriple is the rotation run
// of issue 14 for the URI, the ECS RAM role and the OIDC (RRSA) providers: the fake issues
// triples that live 10 s (refreshed at half life), the simulator and the
// emulator accept a login or request only with the id, secret and token of
// one issue that is still valid, and the platform drops the connection
// after each rotation so that the next dial must sign with the new triple.
// Over at least three rotations nothing is lost, nothing is refused, and
// the logins stay one per drop (no reconnect storm).
func TestRotationRunSignsEveryRequestWithTheCurrentTriple(t *testing.T) {
	for _, tc := range []struct{ provider, signature string }{{"uri", "v2"}, {"ecs_ram_role", "v4"}, {"oidc", "v2"}} {
		provider := tc.provider
		t.Run(provider+"/"+tc.signature, func(t *testing.T) {
			// 10 s: the bridge asks for a new triple at half life, 5 s
			// before the old one expires, and signs with the old one until
			// the answer comes. With 4 s (2 s left) a refresh slowed by a
			// loaded machine (the 300 ms answer delay below, plus the
			// load) came 2 ms before the expiry, and a batch signed with
			// the old triple reached the emulator after it: "MNS answered
			// InvalidAccessKeyId 1 times". Real triples live 15 min to 12 h
			// and are asked for again 180 s before they expire.
			is := credtest.NewIssuer(10 * time.Second)
			// A slow issuer: each triple exists (Issued counts it) 300 ms
			// before the bridge has it; see the drop and the stop below.
			is.AnswerDelay = 300 * time.Millisecond
			var md *credtest.Metadata
			var sts *credtest.STS
			tokenFile := filepath.Join(t.TempDir(), "oidc-token")
			switch provider {
			case "uri":
				t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
			case "ecs_ram_role":
				md = credtest.MetadataServer(t, is, "bridge-role")
				md.RequireV2.Store(true)
				t.Setenv(credentials.EnvTestMetadataURL, md.URL)
			case "oidc":
				sts = credtest.STSServer(t, is)
				sts.Accept("jwt-1")
				sts.Accept("jwt-2")
				if err := os.WriteFile(tokenFile, []byte("jwt-1"), 0o600); err != nil {
					t.Fatal(err)
				}
				t.Setenv(credentials.EnvRoleARN, "acs:ram::1234567890123456:role/bridge")
				t.Setenv(credentials.EnvOIDCProviderARN, "acs:ram::1234567890123456:oidc-provider/ack-rrsa")
				t.Setenv(credentials.EnvOIDCTokenFile, tokenFile)
				t.Setenv(credentials.EnvTestSTSEndpoint, sts.URL)
			}
			r := startRotationRig(t, is, config.Credentials{Provider: provider}, tc.signature)
			const rotations = 3
			all := r.rounds(t, "r", rotations, func(k int) {
				if sts != nil && k == 1 {
					// kubelet rotates the OIDC token: the next refresh sends it.
					if err := os.WriteFile(tokenFile+".new", []byte("jwt-2"), 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(tokenFile+".new", tokenFile); err != nil {
						t.Fatal(err)
					}
				}
				// Wait for the next issue to reach the bridge, then make the
				// platform drop the connection: the next login must use the
				// new triple. The issuer mints a triple 300 ms before the
				// bridge has it, and a dial in between signs, rightly, with
				// the previous one, still valid: the bridge logs each issue
				// once it holds it (the count is checked below), so the drop
				// waits for that line.
				issued := is.Issued()
				waitFor(t, "a refresh", time.Minute, func() bool { return is.Issued() > issued })
				newest := is.Issued()
				waitFor(t, "the bridge to hold the new triple", time.Minute, func() bool {
					return strings.Count(r.logs.String(), "credentials refreshed") >= newest
				})
				logins := r.sim.Stats().LoginsOK
				r.sim.CloseConnections()
				waitFor(t, "a login after the drop", time.Minute, func() bool { return r.sim.Stats().LoginsOK > logins })
				// The login after the drop used the newest issue (or a later one).
				waitFor(t, "the newest triple in a login", time.Minute, func() bool {
					for id := range is.Used("iot") {
						if credtest.IssueNumber(id) >= newest {
							return true
						}
					}
					return false
				})
			})
			// Stop while a refresh is on its way: the bridge logs its triple
			// when the answer comes, after Run returned (Close stops only the
			// next refreshes); the count below waits for that line.
			issued := is.Issued()
			waitFor(t, "a refresh before the stop", time.Minute, func() bool { return is.Issued() > issued })
			r.stop()

			if got := r.arrived(all); got != len(all) {
				t.Fatalf("%d of %d messages at the emulator", got, len(all))
			}
			iotIDs, mnsIDs := is.Used("iot"), is.Used("mns")
			if len(iotIDs) < rotations+1 || len(mnsIDs) < rotations+1 {
				t.Errorf("triples used: %d for logins, %d for MNS requests; want at least %d each (three rotations)", len(iotIDs), len(mnsIDs), rotations+1)
			}
			st := r.sim.Stats()
			if st.LoginsFailed != 0 || is.Refused() != 0 {
				t.Errorf("refused: %d logins, %d lookups of an unknown or expired id", st.LoginsFailed, is.Refused())
			}
			if st.LoginsOK > int64(rotations+1)+1 {
				t.Errorf("%d logins for %d drops: a reconnect storm", st.LoginsOK, rotations)
			}
			for code, n := range r.emu.Stats().Errors {
				t.Errorf("MNS answered %s %d times", code, n)
			}
			if sts != nil {
				if seen := sts.SeenTokens(); len(seen) == 0 || seen[len(seen)-1] != "jwt-2" {
					t.Errorf("OIDC tokens sent %v: the rotated token file was not read again", seen)
				}
			}
			if md != nil && md.V1Requests.Load() != 0 {
				t.Errorf("%d IMDSv1 requests with IMDSv2 available", md.V1Requests.Load())
			}
			// The refresh that was on its way at the stop is logged when its
			// answer comes (Close stops only the next ones).
			waitFor(t, "a 'credentials refreshed' line for each issue", time.Minute, func() bool {
				return strings.Count(r.logs.String(), "credentials refreshed") >= is.Issued()
			})
			logs := r.logs.String()
			if n := strings.Count(logs, "credentials refreshed"); n < rotations+1 || n != is.Issued() {
				t.Errorf("%d 'credentials refreshed' lines for %d issues", n, is.Issued())
			}
			for _, tr := range []string{"secret-", "token-"} {
				if strings.Contains(logs, tr) {
					t.Errorf("the log holds a secret or token (%q)", tr)
				}
			}
			logCredentialLines(t, logs)
			t.Logf("%d messages, %d triples issued, %d used for logins, %d for MNS requests, %d logins, %d MNS requests",
				len(all), is.Issued(), len(iotIDs), len(mnsIDs), st.LoginsOK, r.emu.Stats().Requests)
		})
	}
}

// TestRotationThroughFiles is the rotation walk of the two local-file
// ways: source.credentials.credentials_file, replaced (write, then rename)
// by a rotator, and the *_file twins in a Kubernetes-style secret volume,
// whose ..data symlink is swapped to a new directory. Each triple is
// replaced while it is still valid, as a sidecar does, and the platform
// drops the connection after each rotation: the next login and the next
// MNS requests sign with the new triple (the files are read again when they
// change), nothing is lost and nothing is refused.
func TestRotationThroughFiles(t *testing.T) {
	for _, kind := range []string{"credentials_file", "secret volume"} {
		t.Run(kind, func(t *testing.T) {
			is := credtest.NewIssuer(time.Minute)
			dir := t.TempDir()
			var creds config.Credentials
			var rotate func() credtest.Triple
			writeFile := func(name, data string) {
				if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			switch kind {
			case "credentials_file":
				path := filepath.Join(dir, "sts.json")
				creds.CredentialsFile = path
				rotate = func() credtest.Triple {
					tr := is.Issue()
					writeFile(path+".new", fmt.Sprintf(`{"AccessKeyId": %q, "AccessKeySecret": %q, "SecurityToken": %q, "Expiration": %q}`,
						tr.ID, tr.Secret, tr.Token, tr.Expiration.Format(time.RFC3339)))
					if err := os.Rename(path+".new", path); err != nil {
						t.Fatal(err)
					}
					return tr
				}
			case "secret volume":
				// What the kubelet does: the files are symlinks into ..data,
				// itself a symlink swapped (rename) to a new directory.
				for _, f := range []string{"id", "secret", "token"} {
					if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
						t.Fatal(err)
					}
				}
				creds = config.Credentials{AccessKeyIDFile: filepath.Join(dir, "id"), AccessKeySecretFile: filepath.Join(dir, "secret"),
					SecurityTokenFile: filepath.Join(dir, "token")}
				rotate = func() credtest.Triple {
					tr := is.Issue()
					ts := filepath.Join(dir, "..tr"+strconv.Itoa(credtest.IssueNumber(tr.ID)))
					if err := os.Mkdir(ts, 0o700); err != nil {
						t.Fatal(err)
					}
					writeFile(filepath.Join(ts, "id"), tr.ID)
					writeFile(filepath.Join(ts, "secret"), tr.Secret)
					writeFile(filepath.Join(ts, "token"), tr.Token)
					if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")); err != nil {
						t.Fatal(err)
					}
					if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
						t.Fatal(err)
					}
					return tr
				}
			}
			rotate()
			r := startRotationRig(t, is, creds, "v2")
			const rotations = 3
			all := r.rounds(t, "f", rotations, func(int) {
				tr := rotate()
				r.sim.CloseConnections()
				waitFor(t, "a login with the new triple", time.Minute, func() bool { return r.is.Used("iot")[tr.ID] > 0 })
			})
			r.stop()
			if got := r.arrived(all); got != len(all) {
				t.Fatalf("%d of %d messages at the emulator", got, len(all))
			}
			if iot, mns := len(is.Used("iot")), len(is.Used("mns")); iot != rotations+1 || mns != rotations+1 {
				t.Errorf("triples used: %d for logins, %d for MNS requests; want %d each", iot, mns, rotations+1)
			}
			if st := r.sim.Stats(); st.LoginsFailed != 0 || is.Refused() != 0 {
				t.Errorf("refused: %d logins, %d lookups of an unknown or expired id", st.LoginsFailed, is.Refused())
			}
			for code, n := range r.emu.Stats().Errors {
				t.Errorf("MNS answered %s %d times", code, n)
			}
			logCredentialLines(t, r.logs.String())
		})
	}
}

// TestCredentialsExpireWithTheProviderDown: the URI server goes down, the
// triple expires, messages are held with a clear error (MNS and the login
// after a drop both fail before anything is sent), and everything is
// delivered once the server is back.
func TestCredentialsExpireWithTheProviderDown(t *testing.T) {
	is := credtest.NewIssuer(3 * time.Second)
	t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
	r := startRotationRig(t, is, config.Credentials{Provider: "uri"}, "v2")
	first := r.publish("before", 100)
	waitFor(t, "the first batch", time.Minute, func() bool { return r.arrived(first) == len(first) })

	if exp := credentialGauge(t, r.b, "iot_mns_bridge_credentials_expiry_timestamp_seconds", "mns"); exp < float64(time.Now().Unix()) {
		t.Errorf("expiry gauge %v is not in the future", exp)
	}
	is.SetDown(true)
	waitFor(t, "the failed refreshes in the metrics", time.Minute, func() bool {
		return credentialGauge(t, r.b, "iot_mns_bridge_credentials_refresh_failures", "source") > 0
	})
	waitFor(t, "the expiry to be logged", time.Minute, func() bool {
		return strings.Contains(r.logs.String(), "no valid credentials: signing fails and messages are held")
	})
	held := r.publish("held", 100)
	logins := r.sim.Stats().LoginsOK
	r.sim.CloseConnections()
	waitFor(t, "the held messages and the failed dial to be reported", time.Minute, func() bool {
		l := r.logs.String()
		return strings.Contains(l, "credentials from uri expired at") && strings.Contains(l, "could not be refreshed")
	})
	if n := r.arrived(held); n != 0 {
		t.Fatalf("%d messages sent with expired credentials", n)
	}
	issuedWhileDown := is.Issued()

	is.SetDown(false)
	waitFor(t, "recovery", time.Minute, func() bool { return r.arrived(held) == len(held) })
	if n := credentialGauge(t, r.b, "iot_mns_bridge_credentials_refresh_failures", "source"); n != 0 {
		t.Errorf("refresh failures gauge %v after recovery, want 0", n)
	}
	// Most held messages can only come through a login after the drop (the
	// simulator hands a connection at most 32 unacknowledged deliveries), but
	// the login is waited for, not assumed to come before MNS took them all.
	waitFor(t, "a login after recovery", time.Minute, func() bool { return r.sim.Stats().LoginsOK > logins })
	r.stop()
	if is.Refused() != 0 || r.sim.Stats().LoginsFailed != 0 {
		t.Errorf("a login or request was signed with an expired or unknown triple: %d refused, %d logins failed", is.Refused(), r.sim.Stats().LoginsFailed)
	}
	for code, n := range r.emu.Stats().Errors {
		t.Errorf("MNS answered %s %d times (nothing should be sent without valid credentials)", code, n)
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "recovered=true") {
		t.Error("the recovery is not logged")
	}
	if n := strings.Count(logs, "no valid credentials"); n != 1 {
		t.Errorf("the expiry is logged %d times, want once", n)
	}
	logCredentialLines(t, logs)
	t.Logf("issued %d triples (%d before the outage)", is.Issued(), issuedWhileDown)
}

// TestRabbitMQSTSTokenLoginFromTheURIProvider: a real broker (RabbitMQ with
// the aksign HTTP auth backend) accepts an authMode=ststoken login whose
// AccessKeyId, secret and token all come from a credentials URI, over STOMP
// and AMQP 1.0 ("check -connect" logs in and subscribes or attaches).
func TestRabbitMQSTSTokenLoginFromTheURIProvider(t *testing.T) {
	b := testbroker.RabbitMQ(t)
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pka"}}, iotsim.Config{})
	var hits atomic.Int64
	token := "CAISsts" + strings.Repeat("x", 40)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, `{"Code":"Success","AccessKeyId":%q,"AccessKeySecret":%q,"SecurityToken":%q,"Expiration":%q}`,
			b.AccessKeyID, b.AccessKeySecret, token, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer srv.Close()
	t.Setenv(credentials.EnvCredentialsURI, srv.URL)
	for _, tc := range []struct{ protocol, endpoint string }{
		{"stomp", b.STOMPSAddr},
		{"amqp", b.AMQPSAddr},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			rc := rabbitConfig(t, b, p, tc.protocol, tc.endpoint)
			rc.Source.STOMP.Destination = "/topic/#"
			if tc.protocol == "amqp" {
				rc.Source.AMQP.Address = "/queue/" + b.Unique(t)
			}
			// No static source keys: the credentials URI provider gives them.
			rc.Source.Credentials = config.Credentials{Provider: "uri"}
			path := writeRabbitConfig(t, p, rc)
			before := hits.Load()
			code, out, errOut := runMain(t, context.Background(), "check", "-config", path, "-connect")
			if code != ExitOK || !strings.Contains(out, "ok   source.credentials: provider uri") || !strings.Contains(out, "ststoken") ||
				!strings.Contains(out, "ok   source") {
				t.Fatalf("check -connect: exit %d\n%s%s", code, out, errOut)
			}
			if hits.Load() == before {
				t.Error("the credentials URI was not asked")
			}
			if strings.Contains(out+errOut, b.AccessKeySecret) || strings.Contains(out+errOut, token) {
				t.Error("a secret or the token appears in the check output")
			}
		})
	}
}

// logCredentialLines shows, with -v, the bridge's log lines about
// credentials (the ones an operator sees during a rotation).
func logCredentialLines(t *testing.T, logs string) {
	if !testing.Verbose() {
		return
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "credentials") {
			t.Log(l)
		}
	}
}

// TestBridgeStartsWithTheProviderDown: a credentials provider that is down
// when the bridge starts does not stop it (AMQP checks its signing
// parameters when the source is built); the dial reports the real error.
func TestBridgeStartsWithTheProviderDown(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	is.SetDown(true)
	t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
	for _, protocol := range []string{"stomp", "amqp"} {
		t.Run(protocol, func(t *testing.T) {
			cfg := uriProviderConfig(t, protocol)
			b, err := newUnrun(t, cfg)
			if err != nil {
				t.Fatalf("New with the provider down: %v", err)
			}
			_, err = b.creds.iotParams(cfg)()
			if err == nil || !strings.Contains(err.Error(), "source.credentials: no credentials from uri") {
				t.Errorf("a dial's parameters: %v", err)
			}
		})
	}
}

// TestCheckSaysWhatTheChainSkipped: the default chain goes past a provider
// whose inputs are set but that fails (a broken aliyun CLI config named by
// ALIBABA_CLOUD_CONFIG_FILE), as credentials-go's does; check says so beside
// the ok line, naming the provider and why, so that an operator who set it
// up knows that another identity is used: check printed only 'ok ... from
// profile default' (walk10), and the run's log said nothing either.
func TestCheckSaysWhatTheChainSkipped(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(credentials.EnvECSMetadataDisabled, "true")
	t.Setenv("HOME", dir)
	t.Setenv(credentials.EnvCLIConfigFile, testfile.Write(t, dir, "config.json", `{"current": "ak", "profiles": [`))
	t.Setenv(credentials.EnvCredentialsFile, testfile.Write(t, dir, "credentials", "[default]\ntype = access_key\naccess_key_id = LTAIini\naccess_key_secret = s\n"))
	path := testfile.Write(t, dir, "b.yaml", `source:
  endpoint: iot-06z00xxxx.amqp.iothub.aliyuncs.com
  client_id: c1
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /#
    queue: q
`)
	code, out, errOut := runMain(t, context.Background(), "check", "-config", path)
	if code != ExitOK || !strings.Contains(out, "ok   source.credentials: provider chain, from profile default") ||
		!strings.Contains(out, "warn source.credentials: the default chain skipped cli_profile: "+filepath.Join(dir, "config.json")+" is not the aliyun CLI's JSON config") {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "skipped env") || strings.Contains(out, "skipped oidc") {
		t.Errorf("a provider without inputs is named as skipped:\n%s", out)
	}
}

// TestCheckAndSignUseTheProvider: "check" names the provider of each
// credential and its expiry, never a secret, and fails when one cannot be
// had; "sign" signs with the provider's triple (ststoken, its own id).
func TestCheckAndSignUseTheProvider(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	md := credtest.MetadataServer(t, is, "check-role")
	t.Setenv(credentials.EnvTestMetadataURL, md.URL)
	t.Setenv(credentials.EnvECSMetadataDisabled, "")
	t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
	path := testfile.Write(t, t.TempDir(), "b.yaml", `source:
  endpoint: iot-06z00xxxx.amqp.iothub.aliyuncs.com
  client_id: c1
  credentials:
    provider: uri
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
  credentials:
    provider: ecs_ram_role
routes:
  - match: /#
    queue: q
`)
	code, out, errOut := runMain(t, context.Background(), "check", "-config", path)
	if code != ExitOK || !strings.Contains(out, "ok   source.credentials: provider uri, from uri http://127.0.0.1") ||
		!strings.Contains(out, "ok   mns.credentials: provider ecs_ram_role, from ecs_ram_role check-role") ||
		strings.Count(out, "ststoken, expires ") != 2 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runMain(t, context.Background(), "sign", "-config", path)
	if code != ExitOK || !strings.Contains(out, "authMode=ststoken") || !strings.Contains(out, "authId=STS.fake") {
		t.Fatalf("sign: exit %d\n%s%s", code, out, errOut)
	}
	is.SetDown(true)
	code, out, errOut = runMain(t, context.Background(), "check", "-config", path)
	if code != ExitFailure || !strings.Contains(out, "FAIL source.credentials (provider uri)") || !strings.Contains(out, "HTTP 503") {
		t.Fatalf("provider down: exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"secret-", "token-"} {
		if strings.Contains(out+errOut, s) {
			t.Errorf("check shows a secret or token (%q)", s)
		}
	}
}

// TestCheckPromisesNoRetry: "check" (and "sign") tries to get each
// credential once and stops; its error must not say "next attempt in ..." as
// the daemon's does (which retries), with or without -connect.
func TestCheckPromisesNoRetry(t *testing.T) {
	is := credtest.NewIssuer(time.Hour)
	is.SetDown(true)
	t.Setenv(credentials.EnvCredentialsURI, credtest.URIServer(t, is))
	p := startPeers(t, mnsemu.Config{Queues: []string{"unrouted"}}, iotsim.Config{})
	c := p.config()
	c.Source.Credentials = config.Credentials{Provider: "uri"}
	path := p.writeConfig(t, c)
	for _, args := range [][]string{{"check", "-config", path}, {"check", "-config", path, "-connect", "-timeout", "20s"}} {
		code, out, errOut := runMain(t, context.Background(), args...)
		if code != ExitFailure || !strings.Contains(out, "FAIL source.credentials (provider uri)") || !strings.Contains(out, "HTTP 503") {
			t.Errorf("%s: exit %d, want 1 naming the provider and its failure\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		if strings.Contains(out+errOut, "next attempt") {
			t.Errorf("%s: a one-shot check promises another attempt:\n%s%s", strings.Join(args, " "), out, errOut)
		}
		// The provider's error is printed once: the login and the lookups
		// that could only fail with it again are skipped, saying why.
		if n := strings.Count(out, "HTTP 503"); n != 1 {
			t.Errorf("%s: the provider's error is printed %d times, want once:\n%s%s", strings.Join(args, " "), n, out, errOut)
		}
		if args[len(args)-1] == "20s" && (!strings.Contains(out, "skip source "+c.Source.Endpoint+": no source.credentials") ||
			!strings.Contains(out, "skip MNS queue unrouted: no mns.credentials") || !strings.Contains(errOut, "1 check(s) failed")) {
			t.Errorf("%s: want the login and the lookup skipped, one failure:\n%s%s", strings.Join(args, " "), out, errOut)
		}
	}
	code, out, errOut := runMain(t, context.Background(), "sign", "-config", path)
	if code != ExitFailure || !strings.Contains(errOut, "source.credentials: no credentials from uri") || strings.Contains(out+errOut, "next attempt") {
		t.Errorf("sign: exit %d, want 1 naming the provider, promising no other attempt\n%s%s", code, out, errOut)
	}
}

// TestATokenTheLoginCannotCarryFailsTheDialOnly: a provider's token with a
// separator of the username fails that dial with a retryable error that
// names the provider, not the token; it never reaches the signer (which
// would stop an AMQP source for good).
func TestATokenTheLoginCannotCarryFailsTheDialOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"Code":"Success","AccessKeyId":"STS.x","AccessKeySecret":"s","SecurityToken":"tok,en=SECRETPART","Expiration":%q}`,
			time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	defer srv.Close()
	t.Setenv(credentials.EnvCredentialsURI, srv.URL)
	cfg := uriProviderConfig(t, "amqp")
	b, err := newUnrun(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.creds.iotParams(cfg)()
	if err == nil || !strings.Contains(err.Error(), "cannot sign a login") || !strings.Contains(err.Error(), "securityToken") ||
		errors.Is(err, source.ErrFatal) || strings.Contains(err.Error(), "SECRETPART") {
		t.Fatalf("got %v", err)
	}
}

// credentialGauge reads one credentials gauge of the bridge's registry.
func credentialGauge(t *testing.T, b *Bridge, name, which string) float64 {
	t.Helper()
	v := series(t, b, name, map[string]string{"credentials": which})
	if v == -1 {
		t.Fatalf("no %s{credentials=%q}", name, which)
	}
	return v
}

// newUnrun is New for a test that never runs the bridge. Run closes the
// credentials caches; for a bridge that is not run the cleanup must. A cache
// left open retries a failed refresh in the background for the rest of the
// test binary (with -count or -cpu, into the next pass), and each retry reads
// the provider's inputs as they are then: ALIBABA_CLOUD_CREDENTIALS_URI of a
// later rotation test, whose issuer then minted triples its own bridge never
// held nor logged.
func newUnrun(t *testing.T, cfg *config.Config) (*Bridge, error) {
	t.Helper()
	b, err := New(cfg, Options{})
	if err == nil {
		t.Cleanup(b.creds.close)
	}
	return b, err
}

// uriProviderConfig is a loaded config whose source (protocol) and MNS are
// unreachable and whose credentials come from the credentials URI
// provider.
func uriProviderConfig(t *testing.T, protocol string) *config.Config {
	t.Helper()
	c := configtest.New()
	c.Source.Protocol, c.Source.Endpoint, c.Source.ClientID = protocol, "127.0.0.1:1", "c1"
	c.Source.Credentials = config.Credentials{Provider: "uri"}
	c.MNS.Endpoint = "http://127.0.0.1:1"
	c.Routes = []config.Route{{Match: "/#", Queue: "q"}}
	return mustLoad(t, configtest.Write(t, t.TempDir(), "b.yaml", c))
}
