package credentials

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// Static is a fixed AccessKey pair, with an optional security token. It
// never expires and never changes.
type Static struct {
	AccessKeyID, AccessKeySecret, SecurityToken string
}

func (Static) Name() string { return "static" }

func (s Static) Retrieve(context.Context) (Credentials, error) {
	if s.AccessKeyID == "" || s.AccessKeySecret == "" {
		return Credentials{}, notConfigured("static: access_key_id and access_key_secret are required")
	}
	return Credentials{AccessKeyID: s.AccessKeyID, AccessKeySecret: s.AccessKeySecret,
		SecurityToken: s.SecurityToken, Source: "static"}, nil
}

// Environment variables of the Alibaba Cloud credential chain.
const (
	EnvAccessKeyID     = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	EnvSecurityToken   = "ALIBABA_CLOUD_SECURITY_TOKEN"
)

// Env reads ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and
// the optional ALIBABA_CLOUD_SECURITY_TOKEN at each Retrieve.
type Env struct {
	// LookupEnv; nil = os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

func (Env) Name() string { return "env" }

func (e Env) Retrieve(context.Context) (Credentials, error) {
	get := lookup(e.LookupEnv)
	id, secret := get(EnvAccessKeyID), get(EnvAccessKeySecret)
	switch {
	case id == "" && secret == "":
		return Credentials{}, notConfigured("env: %s is not set", EnvAccessKeyID)
	case id == "":
		return Credentials{}, fmt.Errorf("env: %s is set but %s is empty", EnvAccessKeySecret, EnvAccessKeyID)
	case secret == "":
		return Credentials{}, fmt.Errorf("env: %s is set but %s is empty", EnvAccessKeyID, EnvAccessKeySecret)
	}
	return Credentials{AccessKeyID: id, AccessKeySecret: secret, SecurityToken: get(EnvSecurityToken), Source: "env"}, nil
}

func lookup(f func(string) (string, bool)) func(string) string {
	if f == nil {
		f = os.LookupEnv
	}
	return func(k string) string {
		v, _ := f(k)
		return strings.TrimSpace(v)
	}
}

// firstSet returns the first of vals that is not empty, "" when none is: a
// provider's setting, else its environment variable, else the default.
func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
