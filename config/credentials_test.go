package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testfile"
)

// The provider a credentials block selects, and the checks of each choice.
func TestCredentialsProviderChoice(t *testing.T) {
	dir := t.TempDir()
	idFile := testfile.Write(t, dir, "id", "LTAIfromfile\n")
	for _, tc := range []struct {
		name     string
		cr       Credentials
		provider string
		want     string // "" = valid
	}{
		{"static", Credentials{AccessKeyID: "a", AccessKeySecret: testSecret}, "static", ""},
		{"static id file", Credentials{AccessKeyIDFile: idFile, AccessKeySecret: testSecret}, "static", ""},
		{"id and id file", Credentials{AccessKeyID: "a", AccessKeyIDFile: idFile, AccessKeySecret: testSecret}, "static", "access_key_id and access_key_id_file are both set"},
		{"missing id file", Credentials{AccessKeyIDFile: filepath.Join(dir, "nope"), AccessKeySecret: testSecret}, "static", "source.credentials.access_key_id_file: read the AccessKey id"},
		{"nothing: the chain", Credentials{}, "chain", ""},
		{"credentials file", Credentials{CredentialsFile: "/run/creds.json"}, "file", ""},
		{"file pinned without path", Credentials{Provider: "file"}, "file", "source.credentials.credentials_file: required with provider file"},
		{"file with keys", Credentials{CredentialsFile: "/x", AccessKeyID: "a"}, "file", "credentials_file holds the whole triple"},
		{"pinned uri", Credentials{Provider: "uri"}, "uri", ""},
		{"pinned ecs", Credentials{Provider: "ecs_ram_role"}, "ecs_ram_role", ""},
		{"pinned with keys", Credentials{Provider: "oidc", AccessKeyID: "a", AccessKeySecret: testSecret}, "oidc", "provider oidc reads its own inputs"},
		{"unknown", Credentials{Provider: "vault"}, "vault", `source.credentials.provider: unknown provider "vault": use static, env, file`},
		{"static pinned, no keys", Credentials{Provider: "static"}, "static", "source.credentials.access_key_id: required"},
		// Refused with its line and what to do (walked: check said "ok ...
		// aksign" of it, and the platform refuses such a login).
		{"STS key without token", Credentials{AccessKeyID: "STS.NTx9walk4key", AccessKeySecret: testSecret}, "static",
			"source.credentials.security_token: AccessKeyId STS.NTx9...ey is a temporary (STS) AccessKey ID, but no SecurityToken came with it: " +
				"give the security token issued with it (with the key and secret of the same issue), or use a long-lived AccessKey; " +
				"set security_token (or security_token_file), or credentials_file for a triple that rotates"},
		{"STS key with token", Credentials{AccessKeyID: "STS.NTx9walk4key", AccessKeySecret: testSecret, SecurityToken: "tok"}, "static", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cr.EffectiveProvider(); got != tc.provider {
				t.Errorf("EffectiveProvider = %q, want %q", got, tc.provider)
			}
			c := validConfig()
			c.Source.Credentials = tc.cr
			c.MNS.Credentials = tc.cr
			err := validateWants(t, &c, tc.want)
			if err != nil && strings.Contains(err.Error(), testSecret) {
				t.Errorf("the error holds the secret: %v", err)
			}
			if tc.want == "" {
				p, err := c.SourceProvider()
				if err != nil || (p.Name() != tc.provider) {
					t.Errorf("SourceProvider: %v %v, want %s", p, err, tc.provider)
				}
			}
		})
	}
}

// mns.credentials left empty share the source's provider; its own are its
// own.
func TestMNSProviderDefaultsToTheSources(t *testing.T) {
	c, err := Parse([]byte(`source:
  endpoint: h
  client_id: c
  credentials:
    provider: uri
mns:
  endpoint: https://1.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /#
    queue: q
`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, shared, err := c.MNSProvider()
	if err != nil || !shared || p.Name() != "uri" {
		t.Fatalf("MNSProvider = %v, %v, %v; want the source's uri, shared", p, shared, err)
	}
	c.MNS.Credentials = Credentials{Provider: "ecs_ram_role"}
	p, shared, err = c.MNSProvider()
	if err != nil || shared || p.Name() != "ecs_ram_role" {
		t.Fatalf("own MNS provider = %v, %v, %v", p, shared, err)
	}
}
