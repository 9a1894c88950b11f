// Package certclock explains a TLS certificate that verification refused
// for its dates: not valid yet, or expired, by this machine's clock. The
// words give the certificate's validity and the clock's time, so that the
// operator sees at once which is wrong: a box without a real-time clock
// (a Raspberry Pi class edge box) starts at 1970 or at its last shutdown
// and NTP steps its clock later, often after the bridge started, and the
// certificates of the platform and of MNS then look not valid yet; a
// certificate that really expired is a server's (or a TLS-intercepting
// proxy's) to renew. The source and the MNS client both say so in these
// words.
package certclock

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Explain returns what to tell the operator when err holds an
// x509.CertificateInvalidError for the certificate's dates (Go's reason
// x509.Expired, given for one not valid yet too), and false for any other
// error. what names the certificate ("the TLS certificate that
// answered"); a CA certificate of its chain is named by its subject. now
// is this machine's time (time.Now, which the verification used a moment
// before). The text says which date the clock is on the wrong side of, by
// how much, and what to do: sync the clock (NTP), after which the bridge
// goes on by itself, or, if the clock is right, have the certificate
// renewed.
func Explain(what string, err error, now time.Time) (string, bool) {
	var invalid x509.CertificateInvalidError // crypto/x509 returns it as a value
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired || invalid.Cert == nil {
		return "", false
	}
	c := invalid.Cert
	if c.IsCA {
		what = fmt.Sprintf("the CA certificate %q in the chain of %s", c.Subject.String(), what)
	}
	const layout = time.RFC3339
	now = now.UTC()
	dates := fmt.Sprintf("valid from %s until %s, and this machine's clock says %s", c.NotBefore.UTC().Format(layout), c.NotAfter.UTC().Format(layout), now.Format(layout))
	if now.Before(c.NotBefore) {
		return fmt.Sprintf("%s is not valid yet by this machine's clock (%s, %s before it starts): is the clock behind? "+
			"(a box without a real-time clock starts with a wrong one until NTP sets it) sync it (NTP), and the bridge goes on by itself; "+
			"if the clock is right, the certificate is not in use yet", what, dates, gap(c.NotBefore.Sub(now))), true
	}
	return fmt.Sprintf("%s has expired by this machine's clock (%s, %s after it ended): is the clock ahead? sync it (NTP), and the bridge goes on by itself; "+
		"if the clock is right, the certificate must be renewed (behind a TLS-intercepting proxy, the proxy's)", what, dates, gap(now.Sub(c.NotAfter))), true
}

// gap is d to the second, or to the minute beyond an hour: how far the
// clock is off, read at a glance.
func gap(d time.Duration) time.Duration {
	if d >= time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}
