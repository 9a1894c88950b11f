package certclock

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The dates of a CA certificate in the chain (an intermediate that
// expired) are its own, named by its subject; reasons other than the dates
// are not this package's.
func TestExplain(t *testing.T) {
	ca := &x509.Certificate{IsCA: true, Subject: pkix.Name{CommonName: "Intermediate CA"},
		NotBefore: time.Date(2021, 12, 3, 19, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 12, 3, 17, 30, 0, 0, time.UTC)}
	now := ca.NotAfter.Add(90 * time.Minute)
	err := fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: ca, Reason: x509.Expired}})
	got, ok := Explain("the TLS certificate that answered", err, now)
	want := `the CA certificate "CN=Intermediate CA" in the chain of the TLS certificate that answered has expired by this machine's clock ` +
		`(valid from 2021-12-03T19:00:00Z until 2026-12-03T17:30:00Z, and this machine's clock says 2026-12-03T19:00:00Z, 1h30m0s after it ended): is the clock ahead?`
	if !ok || !strings.HasPrefix(got, want) {
		t.Errorf("Explain = %q, %v; want it to start %q", got, ok, want)
	}
	for _, err := range []error{
		x509.CertificateInvalidError{Cert: ca, Reason: x509.IncompatibleUsage},
		x509.UnknownAuthorityError{},
		errors.New("x509: certificate has expired or is not yet valid"),
	} {
		if got, ok := Explain("c", err, now); ok {
			t.Errorf("Explain(%v) = %q, want none", err, got)
		}
	}
}
