package amqpsrc

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
)

// serve accepts connections on a loopback listener until the test ends and
// hands each to handle (which must not block past the close of c).
func serve(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(waitLimit))
				handle(c)
			})
		}
	})
	return ln.Addr().String()
}

// tlsThenHangUp completes a TLS handshake and closes the connection.
func tlsThenHangUp(b *certgen.Bundle) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Server(c, b.ServerTLSConfig())
		_ = tc.Handshake()
		_, _ = io.Copy(io.Discard, io.LimitReader(tc, 8))
	}
}

func TestCheckConnectExplainsFailures(t *testing.T) {
	bundle, err := certgen.New("127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := bundle.WriteFiles(caFile, "", ""); err != nil {
		t.Fatal(err)
	}
	tlsAddr := serve(t, tlsThenHangUp(bundle))
	plainAddr := serve(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	})
	// A server that reads the ClientHello and hangs up (a firewall or a
	// proxy that filters TLS, or an AMQP broker without TLS on that port,
	// as Qpid Proton's listener on 5672 does): the handshake ends in EOF.
	hangUpAddr := serve(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 64<<10)) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name string
		addr string
		tls  source.TLSOptions
		want []string
	}{
		{"unknown CA", tlsAddr, source.TLSOptions{}, []string{"TLS certificate not trusted", "source.tls.ca_file"}},
		{"name mismatch", tlsAddr, source.TLSOptions{CAFile: caFile, ServerName: "iot.example.com"},
			[]string{"does not match", "source.tls.server_name"}},
		{"not TLS", plainAddr, source.TLSOptions{CAFile: caFile}, []string{"does not speak TLS", "5671"}},
		{"nothing listening", refusedAddr, source.TLSOptions{}, []string{"refused", "source.endpoint"}},
		{"the server hangs up during the TLS handshake", hangUpAddr, source.TLSOptions{CAFile: caFile},
			[]string{"amqp connect to " + hangUpAddr, "closed the connection during the TLS handshake", "source.endpoint", "firewall or proxy",
				"a server without TLS on that port (AMQP's plain 5672)"}},
		{"trusted, then the server hangs up before the AMQP open", tlsAddr, source.TLSOptions{CAFile: caFile, ServerName: "localhost"},
			[]string{"amqp open to " + tlsAddr, "closed the connection without answering the login", "source.endpoint", "STOMP on 61614"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			err := CheckConnect(ctx, filled(Config{Settings: source.Settings{Endpoint: tc.addr, TLS: tc.tls, Params: testParams, DialTimeout: 5 * time.Second}}))
			sourcetest.WantErr(t, "CheckConnect", err, tc.want, testSecret)
		})
	}
}

func TestCheckConnectDialTimeout(t *testing.T) {
	// A listener that never answers the TLS handshake.
	addr := serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := CheckConnect(ctx, filled(Config{Settings: source.Settings{Endpoint: addr, Params: testParams, DialTimeout: 50 * time.Millisecond}}))
	if err == nil || !strings.Contains(err.Error(), "source.dial_timeout") {
		t.Fatalf("CheckConnect = %v, want an error naming source.dial_timeout", err)
	}
}

func TestCheckConnectRejectsBadConfig(t *testing.T) {
	err := CheckConnect(context.Background(), filled(Config{Settings: source.Settings{Endpoint: "h:5671", Params: testParams}, IdleTimeout: time.Second}))
	if err == nil || !strings.Contains(err.Error(), "source.amqp.idle_timeout") {
		t.Fatalf("CheckConnect = %v, want the config error", err)
	}
}
