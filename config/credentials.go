package config

import (
	"os"

	"github.com/iot-mns-bridge/iot-mns-bridge/credentials"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// EffectiveProvider is the provider the credentials select: Provider when
// set; else "file" with credentials_file, "static" with any key value or
// *_file twin, and "chain" (the Alibaba Cloud default chain) with none.
func (cr Credentials) EffectiveProvider() string {
	switch {
	case cr.Provider != "":
		return cr.Provider
	case cr.CredentialsFile != "":
		return "file"
	case cr.hasKeys():
		return "static"
	}
	return "chain"
}

// hasKeys reports whether any static key value or twin is set.
func (cr Credentials) hasKeys() bool {
	return cr.AccessKeyID != "" || cr.AccessKeyIDFile != "" || cr.AccessKeySecret != "" || cr.AccessKeySecretFile != "" ||
		cr.SecurityToken != "" || cr.SecurityTokenFile != ""
}

// SourceProvider returns the credentials provider of source.credentials.
// It does no I/O. Wrap it in a credentials.Cache to sign with it.
func (c *Config) SourceProvider() (credentials.Provider, error) {
	return c.Source.Credentials.provider("source.credentials")
}

// MNSProvider returns the credentials provider of mns.credentials; shared
// is true when they are the source's (mns.credentials left empty), so one
// cache can serve both signers.
func (c *Config) MNSProvider() (p credentials.Provider, shared bool, err error) {
	cr := c.mnsCredentials()
	if cr == c.Source.Credentials {
		p, err = c.SourceProvider()
		return p, true, err
	}
	p, err = cr.provider("mns.credentials")
	return p, false, err
}

func (cr Credentials) provider(path string) (credentials.Provider, error) {
	switch name := cr.EffectiveProvider(); name {
	case "static":
		return &credentials.Files{AccessKeyID: cr.AccessKeyID, AccessKeySecret: cr.AccessKeySecret.Reveal(), SecurityToken: cr.SecurityToken.Reveal(),
			AccessKeyIDFile: cr.AccessKeyIDFile, AccessKeySecretFile: cr.AccessKeySecretFile, SecurityTokenFile: cr.SecurityTokenFile, Field: path}, nil
	case "file":
		return &credentials.JSONFile{Path: cr.CredentialsFile, Field: path + ".credentials_file"}, nil
	default:
		p, err := credentials.ByName(name, os.LookupEnv)
		if err != nil {
			return nil, &FieldError{Path: path + ".provider", Reason: err.Error()}
		}
		return p, nil
	}
}

// SourceParams is IoTParams with the key triple given: the signing
// parameters of the source for that AccessKeyId, secret and token.
func (c *Config) SourceParams(id, secret, token string) iotauth.Params {
	s := c.Source
	return iotauth.Params{
		ClientID:        s.ClientID,
		AccessKeyID:     id,
		AccessKeySecret: secret,
		SecurityToken:   token,
		ConsumerGroupID: s.ConsumerGroupID,
		IotInstanceID:   s.IotInstanceID,
		SignMethod:      s.SignMethod,
		EncodeBase64:    s.Protocol == "stomp" && s.STOMP.EncodeBase64,
	}
}

// credentialsProvider checks the provider choice of one credentials block
// and that it has no keys of another provider.
func (v *validator) credentialsProvider(path string, cr Credentials) (name string, ok bool) {
	name = cr.EffectiveProvider()
	switch name {
	case "static", "chain":
		if cr.CredentialsFile != "" {
			v.bad(path+".credentials_file", "is for provider file, not %s: remove one", name)
			return name, false
		}
		return name, true
	case "file":
		if cr.CredentialsFile == "" {
			v.bad(path+".credentials_file", "required with provider file: the JSON file with the whole triple")
			return name, false
		}
		if cr.hasKeys() {
			v.bad(path, "credentials_file holds the whole triple: remove access_key_id, access_key_secret, security_token and their *_file keys")
			return name, false
		}
		return name, true
	}
	if _, err := credentials.ByName(name, nil); err != nil {
		v.bad(path+".provider", "%v", err)
		return name, false
	}
	if cr.hasKeys() || cr.CredentialsFile != "" {
		v.bad(path, "provider %s reads its own inputs (environment, files, metadata): remove the access_key_*, security_token* and credentials_file keys, or use provider static", name)
		return name, false
	}
	return name, true
}

// checkIDFile reads access_key_id_file once, so that a missing file is
// reported by check; errors never quote its contents.
func (v *validator) checkIDFile(path string, cr Credentials) {
	if cr.AccessKeyIDFile == "" {
		return
	}
	if cr.AccessKeyID != "" {
		v.bad(path, "access_key_id and access_key_id_file are both set: use one")
		return
	}
	data, err := os.ReadFile(cr.AccessKeyIDFile)
	switch {
	case err != nil:
		v.bad(path+".access_key_id_file", "read the AccessKey id: %v", fileReadError(cr.AccessKeyIDFile, "the AccessKey id", err))
	case len(data) == 0:
		v.bad(path+".access_key_id_file", "file %s is empty", cr.AccessKeyIDFile)
	}
}
