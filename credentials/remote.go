package credentials

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Environment variables of the remote providers.
const (
	EnvCredentialsURI      = "ALIBABA_CLOUD_CREDENTIALS_URI"
	EnvECSRoleName         = "ALIBABA_CLOUD_ECS_METADATA"
	EnvECSMetadataDisabled = "ALIBABA_CLOUD_ECS_METADATA_DISABLED"
	EnvIMDSv1Disabled      = "ALIBABA_CLOUD_IMDSV1_DISABLED"

	// EnvTestMetadataURL is a test-only override of the ECS instance
	// metadata base URL (default http://100.100.100.200), for loopback
	// fakes. Not an Alibaba Cloud name; never set it in production.
	EnvTestMetadataURL = "IOT_MNS_BRIDGE_TEST_METADATA_URL"
)

// DefaultMetadataURL is the ECS instance metadata service.
const DefaultMetadataURL = "http://100.100.100.200"

// URI fetches the triple from a credentials URI (a sidecar or agent on the
// machine): GET answers the credentials JSON with "Code": "Success".
type URI struct {
	// URL; "" = $ALIBABA_CLOUD_CREDENTIALS_URI.
	URL string
	// LookupEnv; nil = os.LookupEnv.
	LookupEnv  func(string) (string, bool)
	HTTPClient *http.Client // nil: 1 s connect, 5 s reply
}

func (*URI) Name() string { return "uri" }

func (p *URI) Retrieve(ctx context.Context) (Credentials, error) {
	raw := firstSet(p.URL, lookup(p.LookupEnv)(EnvCredentialsURI))
	if raw == "" {
		return Credentials{}, notConfigured("uri: %s is not set", EnvCredentialsURI)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Credentials{}, fmt.Errorf("uri: %s is not an http(s) URL", EnvCredentialsURI)
	}
	hc := p.HTTPClient
	if hc == nil {
		hc = remoteClient(5*time.Second, false)
	}
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	status, body, err := do(ctx, hc, req)
	if err != nil {
		return Credentials{}, fmt.Errorf("uri: %w", err)
	}
	if status != http.StatusOK {
		return Credentials{}, fmt.Errorf("uri: GET %s answered HTTP %d", redactURL(u), status)
	}
	c, err := parseIssue(body, true)
	if err != nil {
		return Credentials{}, fmt.Errorf("uri: GET %s: %w", redactURL(u), err)
	}
	c.Source = "uri " + redactURL(u)
	return c, nil
}

// ECSRole fetches the instance's RAM role credentials from the ECS
// metadata service: IMDSv2 (a session token from PUT /latest/api/token),
// falling back to IMDSv1 unless ALIBABA_CLOUD_IMDSV1_DISABLED=true. The
// role is RoleName, else $ALIBABA_CLOUD_ECS_METADATA, else the one the
// service lists. ALIBABA_CLOUD_ECS_METADATA_DISABLED=true turns it off.
type ECSRole struct {
	RoleName string
	// BaseURL; "" = $IOT_MNS_BRIDGE_TEST_METADATA_URL, else
	// http://100.100.100.200.
	BaseURL    string
	LookupEnv  func(string) (string, bool)
	HTTPClient *http.Client // nil: 1 s connect, 1 s reply, no proxy

	// answered is set once the metadata service has answered a request:
	// a later one it does not answer is an outage, not a machine off ECS.
	answered atomic.Bool
}

func (*ECSRole) Name() string { return "ecs_ram_role" }

// unanswered is what an error says of a request the metadata service did
// not answer (no connection, no reply in time).
func (p *ECSRole) unanswered() string {
	if p.answered.Load() {
		return "the metadata service answered before: it is down or unreachable for now"
	}
	return "not on ECS? set " + EnvECSMetadataDisabled + "=true"
}

func envTrue(get func(string) string, k string) bool {
	return strings.EqualFold(get(k), "true")
}

func (p *ECSRole) Retrieve(ctx context.Context) (Credentials, error) {
	return p.retrieve(ctx, p.RoleName)
}

// retrieve is Retrieve for the role named roleName, else as Retrieve finds it.
func (p *ECSRole) retrieve(ctx context.Context, roleName string) (Credentials, error) {
	get := lookup(p.LookupEnv)
	if envTrue(get, EnvECSMetadataDisabled) {
		return Credentials{}, notConfigured("ecs_ram_role: off (%s=true)", EnvECSMetadataDisabled)
	}
	base := strings.TrimRight(firstSet(p.BaseURL, get(EnvTestMetadataURL), DefaultMetadataURL), "/")
	hc := p.HTTPClient
	if hc == nil {
		hc = remoteClient(time.Second, false)
	}
	v1off := envTrue(get, EnvIMDSv1Disabled)

	// IMDSv2 session token.
	token := ""
	req, _ := http.NewRequest(http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aliyun-ecs-metadata-token-ttl-seconds", "21600")
	status, body, err := do(ctx, hc, req)
	if err == nil {
		p.answered.Store(true)
	}
	switch {
	case err == nil && status == http.StatusOK && len(body) > 0:
		token = strings.TrimSpace(string(body))
	case v1off:
		if err == nil {
			err = fmt.Errorf("PUT /latest/api/token answered HTTP %d", status)
		}
		return Credentials{}, fmt.Errorf("ecs_ram_role: no IMDSv2 token and IMDSv1 is off (%s=true): %w", EnvIMDSv1Disabled, err)
	case err != nil && ctx.Err() != nil:
		return Credentials{}, fmt.Errorf("ecs_ram_role: %w", err)
	}
	getMeta := func(path string) (int, []byte, error) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("X-aliyun-ecs-metadata-token", token)
		}
		status, body, err := do(ctx, hc, req)
		if err == nil {
			p.answered.Store(true)
		}
		return status, body, err
	}

	role := firstSet(roleName, get(EnvECSRoleName))
	const credPath = "/latest/meta-data/ram/security-credentials/"
	if role == "" {
		status, body, err := getMeta(credPath)
		if err != nil {
			return Credentials{}, fmt.Errorf("ecs_ram_role: find the role: %w (%s)", err, p.unanswered())
		}
		switch {
		case status == http.StatusNotFound:
			return Credentials{}, fmt.Errorf("ecs_ram_role: GET %s answered HTTP 404: is a RAM role attached to this instance?", credPath)
		case status != http.StatusOK:
			// Before, "is a RAM role attached" for every status: a
			// metadata service failing for a while (5xx) pointed at the
			// instance's role.
			return Credentials{}, fmt.Errorf("ecs_ram_role: find the role: the metadata service answered GET %s with HTTP %d", credPath, status)
		}
		role, _, _ = strings.Cut(strings.TrimSpace(string(body)), "\n")
		role = strings.TrimSpace(role)
		if role == "" || strings.ContainsAny(role, "/?# ") {
			return Credentials{}, fmt.Errorf("ecs_ram_role: GET %s named no usable role: attach a RAM role to this instance or set %s", credPath, EnvECSRoleName)
		}
	}
	status, body, err = getMeta(credPath + url.PathEscape(role))
	if err != nil {
		return Credentials{}, fmt.Errorf("ecs_ram_role: role %s: %w (%s)", role, err, p.unanswered())
	}
	switch {
	case status == http.StatusNotFound:
		if roleName == "" && get(EnvECSRoleName) != "" {
			return Credentials{}, fmt.Errorf("ecs_ram_role: role %s (%s) is not attached to this instance (HTTP 404): set %s to the role attached, or leave it empty to use the attached one",
				role, EnvECSRoleName, EnvECSRoleName)
		}
		return Credentials{}, fmt.Errorf("ecs_ram_role: role %s is not attached to this instance (HTTP 404)", role)
	case status != http.StatusOK:
		return Credentials{}, fmt.Errorf("ecs_ram_role: role %s: the metadata service answered HTTP %d", role, status)
	}
	c, err := parseIssue(body, true)
	if err != nil {
		return Credentials{}, fmt.Errorf("ecs_ram_role: role %s: %w", role, err)
	}
	c.Source = "ecs_ram_role " + role
	return c, nil
}
