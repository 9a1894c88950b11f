package credentials

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Environment variables of OIDC / RRSA (ACK pods).
const (
	EnvRoleARN            = "ALIBABA_CLOUD_ROLE_ARN"
	EnvOIDCProviderARN    = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN"
	EnvOIDCTokenFile      = "ALIBABA_CLOUD_OIDC_TOKEN_FILE"
	EnvRoleSessionName    = "ALIBABA_CLOUD_ROLE_SESSION_NAME"
	EnvSTSRegion          = "ALIBABA_CLOUD_STS_REGION"
	EnvVPCEndpointEnabled = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"

	// EnvTestSTSEndpoint is a test-only override of the STS endpoint URL
	// (default https://sts.aliyuncs.com), for loopback fakes. Not an
	// Alibaba Cloud name; never set it in production.
	EnvTestSTSEndpoint = "IOT_MNS_BRIDGE_TEST_STS_ENDPOINT"
)

// OIDC exchanges the OIDC token in a file for STS credentials with the
// unsigned STS call AssumeRoleWithOIDC (RRSA on ACK). The token file is
// read again at every refresh (kubelet rotates it). Empty fields come from
// the ALIBABA_CLOUD_* environment variables.
type OIDC struct {
	RoleARN, ProviderARN, TokenFile, SessionName string
	// Duration of the issued credentials; 0 = 3600 s (minimum 900 s).
	Duration time.Duration
	// Endpoint is the STS URL; "" = $IOT_MNS_BRIDGE_TEST_STS_ENDPOINT, else
	// sts[-vpc].<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com, else
	// sts.aliyuncs.com, over https.
	Endpoint   string
	LookupEnv  func(string) (string, bool)
	HTTPClient *http.Client
	Now        func() time.Time
}

func (*OIDC) Name() string { return "oidc" }

func (p *OIDC) endpoint(get func(string) string) string {
	if e := firstSet(p.Endpoint, get(EnvTestSTSEndpoint)); e != "" {
		return e
	}
	region := get(EnvSTSRegion)
	switch {
	case region == "":
		return "https://sts.aliyuncs.com"
	case envTrue(get, EnvVPCEndpointEnabled):
		return "https://sts-vpc." + region + ".aliyuncs.com"
	}
	return "https://sts." + region + ".aliyuncs.com"
}

// rrsaHint says where the three variables come from on ACK (RRSA).
const rrsaHint = "on ACK, the ack-pod-identity-webhook add-on sets all three (with RRSA enabled on the cluster) in the pods of a namespace " +
	"labelled pod-identity.alibabacloud.com/injection=on whose ServiceAccount is annotated pod-identity.alibabacloud.com/role-name: ROLE; " +
	"elsewhere set the three together"

func (p *OIDC) Retrieve(ctx context.Context) (Credentials, error) {
	get := lookup(p.LookupEnv)
	role, provider, tokenFile := firstSet(p.RoleARN, get(EnvRoleARN)), firstSet(p.ProviderARN, get(EnvOIDCProviderARN)), firstSet(p.TokenFile, get(EnvOIDCTokenFile))
	if role == "" && provider == "" && tokenFile == "" {
		return Credentials{}, notConfigured("oidc: %s is not set", EnvRoleARN)
	}
	var missing []string
	for _, f := range []struct{ v, name string }{{role, EnvRoleARN}, {provider, EnvOIDCProviderARN}, {tokenFile, EnvOIDCTokenFile}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return Credentials{}, fmt.Errorf("oidc: %s not set; %s", strings.Join(missing, ", "), rrsaHint)
	}
	token, err := readSecretFile(tokenFile)
	if err != nil {
		return Credentials{}, fmt.Errorf("oidc: the OIDC token: %w", err)
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	session := firstSet(p.SessionName, get(EnvRoleSessionName), "iot-mns-bridge-"+strconv.FormatInt(now().UnixMilli(), 10))
	d := p.Duration
	if d == 0 {
		d = time.Hour
	}
	d = max(d, 900*time.Second)

	ep := p.endpoint(get)
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Credentials{}, fmt.Errorf("oidc: STS endpoint %q is not an http(s) URL", ep)
	}
	q := url.Values{"Action": {"AssumeRoleWithOIDC"}, "Format": {"JSON"}, "Version": {"2015-04-01"},
		"Timestamp": {now().UTC().Format("2006-01-02T15:04:05Z")}}
	u.RawQuery = q.Encode()
	form := url.Values{"RoleArn": {role}, "OIDCProviderArn": {provider}, "OIDCToken": {token},
		"RoleSessionName": {session}, "DurationSeconds": {strconv.Itoa(int(d / time.Second))}}
	req, _ := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	hc := p.HTTPClient
	if hc == nil {
		hc = remoteClient(10*time.Second, true)
	}
	status, body, err := do(ctx, hc, req)
	if err != nil {
		return Credentials{}, fmt.Errorf("oidc: AssumeRoleWithOIDC: %w", err)
	}
	var ans struct {
		RequestID   string `json:"RequestId"`
		Code        string `json:"Code"`
		Credentials *issue `json:"Credentials"`
	}
	jerr := json.Unmarshal(body, &ans)
	if status != http.StatusOK || ans.Credentials == nil {
		msg := fmt.Sprintf("oidc: AssumeRoleWithOIDC for role %s answered HTTP %d", role, status)
		if jerr == nil && ans.Code != "" {
			msg += " " + printable(ans.Code)
		}
		if jerr == nil && ans.RequestID != "" {
			msg += " [request id " + printable(ans.RequestID) + "]"
		}
		if jerr != nil {
			msg += " (the answer is not JSON)"
		}
		switch {
		case jerr != nil:
		case strings.HasPrefix(ans.Code, "AuthenticationFail.OIDCToken"):
			// The operator's next look is at the token: say which file.
			msg += fmt.Sprintf(": STS refused the OIDC token read from %s: check that it is the pod's current token "+
				"(kubelet replaces it before it expires) and that %s names the provider that issued it", tokenFile, EnvOIDCProviderARN)
		case ans.Code == "AuthenticationFail.NoPermission":
			// STS answers this code both for a provider it does not know
			// and for a role that does not admit it: name both places.
			msg += fmt.Sprintf(": STS does not let this provider assume the role: check in RAM that the OIDC provider %s (%s) exists in the role's account "+
				"and that the trust policy of role %s (%s) lets that provider assume it, with conditions this pod's ServiceAccount meets",
				provider, EnvOIDCProviderARN, role, EnvRoleARN)
		}
		return Credentials{}, fmt.Errorf("%s", msg)
	}
	doc, _ := json.Marshal(ans.Credentials)
	c, err := parseIssue(doc, false)
	if err == nil && (c.SecurityToken == "" || c.Expiration.IsZero()) {
		err = fmt.Errorf("SecurityToken or Expiration missing")
	}
	if err != nil {
		return Credentials{}, fmt.Errorf("oidc: AssumeRoleWithOIDC for role %s: %w", role, err)
	}
	c.Source = "oidc " + role
	return c, nil
}
