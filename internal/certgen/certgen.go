// Package certgen makes a throwaway certificate authority and a server
// certificate signed by it, in memory, for tests, the demo and the IoT
// platform simulator. The keys are ECDSA P-256 and live only as long as the
// process unless written out with WriteFiles.
//
// Nothing here is meant for production: the CA key is never protected.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"time"
)

// DefaultHosts are the names a Bundle's server certificate covers when New is
// given none.
var DefaultHosts = []string{"127.0.0.1", "::1", "localhost"}

// Validity is how long a generated certificate is valid, counted from an hour
// before it was made (to tolerate clock skew).
const Validity = 30 * 24 * time.Hour

// Bundle is a CA and one server certificate it signed. Its fields are read
// only; a Bundle is safe for concurrent use.
type Bundle struct {
	// CA is the parsed CA certificate.
	CA *x509.Certificate
	// CAPEM is the CA certificate in PEM, what a client adds to its roots.
	CAPEM []byte
	// CertPEM is the server certificate (leaf only) in PEM.
	CertPEM []byte
	// KeyPEM is the server's private key, PKCS #8 in PEM.
	KeyPEM []byte
	// Cert is the server certificate and key ready for tls.Config.
	Cert tls.Certificate
}

// New generates a CA and a server certificate for hosts (IP addresses become
// IP SANs, anything else DNS SANs). With no hosts it uses DefaultHosts.
func New(hosts ...string) (*Bundle, error) {
	now := time.Now()
	return NewDated(now.Add(-time.Hour), now.Add(Validity), hosts...)
}

// NewDated is New with a server certificate valid from notBefore until
// notAfter, to try a client whose clock is off (a certificate not valid
// yet, or expired); the CA is valid as New's.
func NewDated(notBefore, notAfter time.Time, hosts ...string) (*Bundle, error) {
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "iot-mns-bridge throwaway test CA"},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caKey, caDER, ca, err := issue("CA", now.Add(-time.Hour), now.Add(Validity), caTmpl, nil, nil)
	if err != nil {
		return nil, err
	}

	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	key, der, _, err := issue("server", notBefore, notAfter, tmpl, ca, caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certgen: encode server key: %w", err)
	}
	b := &Bundle{
		CA:      ca,
		CAPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	b.Cert, err = tls.X509KeyPair(b.CertPEM, b.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("certgen: load key pair: %w", err)
	}
	return b, nil
}

// issue makes a P-256 key and a certificate for it from tmpl, which gets
// its serial number, its validity (from notBefore until notAfter) and the
// subject's organisation here, signed by parent with parentKey; a
// nil parent makes it self-signed (a CA). It returns the key and the
// certificate, DER-encoded and parsed. what names the certificate in
// errors.
func issue(what string, notBefore, notAfter time.Time, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, []byte, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certgen: generate %s key: %w", what, err)
	}
	tmpl.SerialNumber = serial()
	tmpl.Subject.Organization = []string{"iot-mns-bridge tests"}
	tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certgen: sign %s certificate: %w", what, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certgen: parse %s certificate: %w", what, err)
	}
	return key, der, cert, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// CertPool returns a new pool holding only the CA.
func (b *Bundle) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(b.CA)
	return p
}

// ServerTLSConfig returns a fresh server config (TLS 1.2 or later) serving
// the certificate.
func (b *Bundle) ServerTLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{b.Cert}}
}

// ClientTLSConfig returns a fresh client config (TLS 1.2 or later) that
// trusts only the CA and verifies serverName (empty: the dialled host).
func (b *Bundle) ClientTLSConfig(serverName string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: b.CertPool(), ServerName: serverName}
}

// WriteFiles writes the CA certificate, the server certificate and the server
// key as PEM files; an empty path skips that file. The key file gets mode
// 0600, the certificates 0644. Existing files are replaced.
func (b *Bundle) WriteFiles(caPath, certPath, keyPath string) error {
	var errs []error
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{caPath, b.CAPEM, 0o644},
		{certPath, b.CertPEM, 0o644},
		{keyPath, b.KeyPEM, 0o600},
	} {
		if f.path == "" {
			continue
		}
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			errs = append(errs, fmt.Errorf("certgen: write %s: %w", f.path, err))
		}
	}
	return errors.Join(errs...)
}
