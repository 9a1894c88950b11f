// Package webconfig protects an HTTP listener the way Prometheus exporters
// do: TLS and basic auth from a web config file in the format of the
// Prometheus exporter-toolkit
// (https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):
//
//	tls_server_config:
//	  cert_file: /etc/iot-mns-bridge/tls.crt
//	  key_file: /etc/iot-mns-bridge/tls.key
//	  client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
//	  client_ca_file: /etc/iot-mns-bridge/clients.pem
//	  min_version: TLS12                             # optional: TLS10..TLS13
//	  max_version: TLS13
//	http_server_config:
//	  http2: true                                    # optional
//	basic_auth_users:
//	  prometheus: $2y$10$...                         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//
// The keys iot-mns-bridge does not implement (cipher_suites,
// curve_preferences, prefer_server_cipher_sites, http_server_config.headers)
// are refused with an error naming them, rather than ignored; any other key
// is an error too. Relative file names are read from the web config file's
// directory. The certificate and key are read again on every TLS handshake,
// so a renewed certificate is used without a restart.
package webconfig

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// Config is a parsed web config file.
type Config struct {
	TLS        *TLSServerConfig  `yaml:"tls_server_config"`
	HTTPServer HTTPServerConfig  `yaml:"http_server_config"`
	Users      map[string]string `yaml:"basic_auth_users"` // user -> bcrypt hash

	path string
}

// TLSServerConfig is tls_server_config.
type TLSServerConfig struct {
	CertFile       string `yaml:"cert_file"`
	KeyFile        string `yaml:"key_file"`
	ClientAuthType string `yaml:"client_auth_type"`
	ClientCAFile   string `yaml:"client_ca_file"`
	MinVersion     string `yaml:"min_version"`
	MaxVersion     string `yaml:"max_version"`

	// Accepted by the exporter-toolkit, refused here (see the package doc).
	CipherSuites             []string `yaml:"cipher_suites"`
	CurvePreferences         []string `yaml:"curve_preferences"`
	PreferServerCipherSuites *bool    `yaml:"prefer_server_cipher_suites"`
}

// HTTPServerConfig is http_server_config.
type HTTPServerConfig struct {
	HTTP2   *bool             `yaml:"http2"`
	Headers map[string]string `yaml:"headers"` // refused
}

var tlsVersions = map[string]uint16{"TLS10": tls.VersionTLS10, "TLS11": tls.VersionTLS11, "TLS12": tls.VersionTLS12, "TLS13": tls.VersionTLS13}

var clientAuthTypes = map[string]tls.ClientAuthType{
	"NoClientCert": tls.NoClientCert, "RequestClientCert": tls.RequestClientCert,
	"RequireAnyClientCert": tls.RequireAnyClientCert, "VerifyClientCertIfGiven": tls.VerifyClientCertIfGiven,
	"RequireAndVerifyClientCert": tls.RequireAndVerifyClientCert,
}

// Load reads and checks the web config file at path: every key known, the
// certificate and key loadable, the client CA file parseable, every
// password a bcrypt hash.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("web config: %w", err)
	}
	c := &Config{path: path}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // an empty file is an empty config
		return nil, fmt.Errorf("web config %s: %w (the keys are those of the Prometheus exporter-toolkit web config)", path, err)
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("web config %s: %s: %s", path, key, fmt.Sprintf(format, args...)))
	}
	if t := c.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" {
			bad("tls_server_config", "cert_file and key_file are both required")
		} else {
			t.CertFile, t.KeyFile = c.rel(t.CertFile), c.rel(t.KeyFile)
			if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
				bad("tls_server_config.cert_file", "%v", err)
			}
		}
		if _, ok := clientAuthTypes[t.ClientAuthType]; t.ClientAuthType != "" && !ok {
			bad("tls_server_config.client_auth_type", "%q: use one of %s", t.ClientAuthType, keys(clientAuthTypes))
		}
		if t.ClientCAFile != "" {
			t.ClientCAFile = c.rel(t.ClientCAFile)
			if _, err := CertPool(t.ClientCAFile); err != nil {
				bad("tls_server_config.client_ca_file", "%v", err)
			}
		} else if strings.HasPrefix(t.ClientAuthType, "Verify") || t.ClientAuthType == "RequireAndVerifyClientCert" {
			bad("tls_server_config.client_ca_file", "required with client_auth_type %s", t.ClientAuthType)
		}
		for key, v := range map[string]string{"min_version": t.MinVersion, "max_version": t.MaxVersion} {
			if _, ok := tlsVersions[v]; v != "" && !ok {
				bad("tls_server_config."+key, "%q: use one of %s", v, keys(tlsVersions))
			}
		}
		if len(t.CipherSuites) > 0 || len(t.CurvePreferences) > 0 || t.PreferServerCipherSuites != nil {
			bad("tls_server_config", "cipher_suites, curve_preferences and prefer_server_cipher_suites are not supported by iot-mns-bridge: remove them (Go's defaults apply)")
		}
	}
	if len(c.HTTPServer.Headers) > 0 {
		bad("http_server_config.headers", "not supported by iot-mns-bridge: remove it")
	}
	for user, hash := range c.Users {
		if user == "" || strings.Contains(user, ":") {
			bad("basic_auth_users", "user name %q: must be non-empty and without ':'", user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			bad("basic_auth_users."+user, "not a bcrypt hash (%v): make one with htpasswd -nBC 10 \"\" | tr -d ':\\n'", err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

func (c *Config) rel(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

func keys[V any](m map[string]V) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// CertPool reads the PEM certificates in file into a pool; a file that
// holds none is an error. The server reads client_ca_file with it, and a
// client of the server its cert_file (a CA, or the server's own
// self-signed certificate) to trust.
func CertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// TLSConfig returns the server TLS config, or nil when the file has no
// tls_server_config (plain HTTP).
func (c *Config) TLSConfig() (*tls.Config, error) {
	t := c.TLS
	if t == nil {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Read the pair on every handshake: a renewed certificate is used
		// without a restart.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("web config tls_server_config: %w", err)
			}
			return &cert, nil
		},
	}
	if v, ok := tlsVersions[t.MinVersion]; ok {
		cfg.MinVersion = v
	}
	if v, ok := tlsVersions[t.MaxVersion]; ok {
		cfg.MaxVersion = v
	}
	if a, ok := clientAuthTypes[t.ClientAuthType]; ok {
		cfg.ClientAuth = a
	}
	if t.ClientCAFile != "" {
		pool, err := CertPool(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("web config tls_server_config.client_ca_file: %w", err)
		}
		cfg.ClientCAs = pool
	}
	if c.HTTPServer.HTTP2 != nil && !*c.HTTPServer.HTTP2 {
		cfg.NextProtos = []string{"http/1.1"}
	} else {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	return cfg, nil
}

// dummyHash is compared against for unknown users, so that a wrong user
// name takes as long as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("dummy password"), bcrypt.DefaultCost)

// RequireAuth wraps h with basic auth against basic_auth_users; without
// users it returns h unchanged. A request without valid credentials gets
// 401 with a WWW-Authenticate challenge.
func (c *Config) RequireAuth(h http.Handler) http.Handler {
	if len(c.Users) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if ok {
			hash, known := c.Users[user]
			if !known {
				hash = string(dummyHash)
			}
			err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
			if known && err == nil {
				h.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="iot-mns-bridge", charset="UTF-8"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
	})
}
