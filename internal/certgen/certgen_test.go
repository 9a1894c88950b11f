package certgen

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestHandshakeForEachHost(t *testing.T) {
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("ok"))
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	tests := []struct {
		name       string
		serverName string
		wantErr    bool
	}{
		{"ip", "127.0.0.1", false},
		{"dns", "localhost", false},
		{"other name", "example.com", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", port), b.ClientTLSConfig(tt.serverName))
			if tt.wantErr {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded, want a verification error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, _ := io.ReadAll(c)
			if string(got) != "ok" {
				t.Fatalf("read %q", got)
			}
		})
	}
}

func TestUntrustedWithoutCA(t *testing.T) {
	b, err := New("localhost")
	if err != nil {
		t.Fatal(err)
	}
	other, err := New("localhost")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(b.Cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: b.CertPool(), DNSName: "localhost"}); err != nil {
		t.Fatalf("own CA: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.CertPool(), DNSName: "localhost"}); err == nil {
		t.Fatal("verified against another bundle's CA")
	}
}

func TestWriteFiles(t *testing.T) {
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	if err := b.WriteFiles(ca, cert, key); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Fatalf("written pair does not load: %v", err)
	}
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file holds no certificate")
	}
	st, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	if err := b.WriteFiles(filepath.Join(dir, "missing", "ca.pem"), "", ""); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
