package config

import (
	"strings"
	"testing"
)

func TestLiteralSecretsInReadableConfigAreFound(t *testing.T) {
	cfg := []byte(`source:
  credentials:
    access_key_id: AK
    access_key_secret: plain-text-secret
    security_token: ${STS_TOKEN}
mns:
  credentials:
    access_key_secret: "${MNS_SECRET:-}"
    security_token: "tok"
`)
	got := strings.Join(literalSecrets(cfg), ",")
	if got != "source.credentials.access_key_secret,mns.credentials.security_token" {
		t.Errorf("literal secrets = %q", got)
	}
	if n := literalSecrets([]byte("source:\n  credentials:\n    access_key_secret_file: s\n")); len(n) != 0 {
		t.Errorf("a *_file key is not a literal secret: %v", n)
	}
}
