package source

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"strconv"
)

// TLSOptions are the source's TLS settings (Fields TLS.*).
type TLSOptions struct {
	CAFile             string // PEM bundle added to the system roots
	ServerName         string // name to verify, if not the endpoint host
	InsecureSkipVerify bool
}

// TLSConfig builds a client TLS config: TLS 1.2 or later, the system roots
// plus CAFile, and ServerName (or host when ServerName is empty). An
// unusable CAFile is a *FieldError (FieldCAFile) named by n.
func (o TLSOptions) TLSConfig(host string, n Names) (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, n.Bad(FieldCAFile, "%w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, n.Bad(FieldCAFile, "%s holds no PEM certificate", o.CAFile)
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
// can read and alter the traffic of connection conn, naming the setting
// with n; a source calls it on every connect.
func (o TLSOptions) WarnIfInsecure(log *slog.Logger, n Names, conn, endpoint string) {
	if o.InsecureSkipVerify {
		log.Warn("TLS certificate verification is off ("+n.Of(FieldInsecureSkipVerify)+"); anyone on the path can read and alter the traffic",
			"conn", conn, "endpoint", endpoint)
	}
}

// CheckEndpoint reports what is wrong with a source endpoint, which must be
// host:port with a port from 1 to 65535: a *FieldError (FieldEndpoint)
// named by n; nil when nothing is.
func CheckEndpoint(endpoint string, n Names) error {
	if endpoint == "" {
		return n.Bad(FieldEndpoint, "is required (host:port)")
	}
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil || host == "" {
		return n.Bad(FieldEndpoint, "%q is not host:port", endpoint)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return n.Bad(FieldEndpoint, "%q has an invalid port", endpoint)
	}
	return nil
}
