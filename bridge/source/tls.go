package source

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
)

// TLSOptions are the source's TLS settings (config keys source.tls.*).
type TLSOptions struct {
	CAFile             string // PEM bundle added to the system roots
	ServerName         string // name to verify, if not the endpoint host
	InsecureSkipVerify bool
}

// TLSConfig builds a client TLS config: TLS 1.2 or later, the system roots
// plus CAFile, and ServerName (or host when ServerName is empty). Errors name
// the config key.
func (o TLSOptions) TLSConfig(host string) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("source.tls.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("source.tls.ca_file: %s holds no PEM certificate", o.CAFile)
		}
	}
	name := o.ServerName
	if name == "" {
		name = host
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            roots,
		ServerName:         name,
		InsecureSkipVerify: o.InsecureSkipVerify,
	}, nil
}

// WarnIfInsecure logs, when verification is off, that anyone on the path
// can read and alter the traffic of connection conn; a source calls it on
// every connect.
func (o TLSOptions) WarnIfInsecure(log *slog.Logger, conn, endpoint string) {
	if o.InsecureSkipVerify {
		log.Warn("TLS certificate verification is off (source.tls.insecure_skip_verify); anyone on the path can read and alter the traffic",
			"conn", conn, "endpoint", endpoint)
	}
}

// CheckEndpoint reports what is wrong with a source endpoint, which must be
// host:port with a port from 1 to 65535; nil when nothing is.
func CheckEndpoint(endpoint string) error {
	if endpoint == "" {
		return errors.New("source.endpoint: is required (host:port)")
	}
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || host == "" {
		return fmt.Errorf("source.endpoint: %q is not host:port", endpoint)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("source.endpoint: %q has an invalid port", endpoint)
	}
	return nil
}
