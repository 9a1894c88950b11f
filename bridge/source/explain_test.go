package source

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
)

// A server certificate not valid yet by this machine's clock is explained
// with its dates and the clock's time, and the operator is sent to the
// clock first (walk14: a box without a real-time clock, 2 days behind until
// NTP set it, read 'TLS certificate not valid (expired or not yet valid:
// check the clock; or not usable for a server)', which did not say which,
// nor by how much). The MNS client's test has the expired certificate too.
func TestCertificateNotValidYetNamesTheClock(t *testing.T) {
	from := time.Now().Add(48 * time.Hour)
	b, err := certgen.NewDated(from, from.Add(90*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			tls.Server(c, b.ServerTLSConfig()).Handshake()
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialTLS(ctx, ln.Addr().String(), b.ClientTLSConfig("localhost"))
	if err == nil {
		c.Close()
		t.Fatal("the handshake succeeded")
	}
	got := ExplainDial(Names{FieldEndpoint: "EP", FieldCAFile: "CA"}, "stomp connect A", time.Second, err).Error()
	for _, w := range []string{"stomp connect A: the server's TLS certificate is not valid yet by this machine's clock (valid from " + from.UTC().Format(time.RFC3339),
		"this machine's clock says", "is the clock behind?", "sync it (NTP)"} {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
}
