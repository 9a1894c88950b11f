package mns

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/certgen"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	return "127.0.0.1:" + strconv.Itoa(testpeers.FreePort(t))
}

// TestBehindAProxy: an HTTP proxy in front of MNS (HTTPS_PROXY /
// HTTP_PROXY) that refuses the bridge or does not answer is the bridge's
// problem, not the message's: the error is retryable (the pipeline holds
// the messages instead of dead-lettering the stream) and names the proxy,
// without its password, and the variables that chose it.
func TestBehindAProxy(t *testing.T) {
	// 407 Proxy Authentication Required to a plain-http request.
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Proxy-Authenticate", `Basic realm="corp"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
	}))
	defer refuse.Close()
	proxyURL, _ := url.Parse(refuse.URL)
	proxyURL.User = url.UserPassword("op", "proxy-pw")
	via := func(u *url.URL) func(*http.Request) (*url.URL, error) {
		return func(*http.Request) (*url.URL, error) { return u, nil }
	}
	c, err := newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s", Proxy: via(proxyURL)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Proxy(), "http://op:xxxxx@"+proxyURL.Host; got != want {
		t.Errorf("Proxy() = %q, want %q (the password redacted)", got, want)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if me := (*Error)(nil); !errors.As(err, &me) || me.Status != http.StatusProxyAuthRequired {
		t.Fatalf("407: %T %v, want an *Error with status 407", err, err)
	}
	if !bridge.Retryable(err) {
		t.Errorf("407: %v is permanent: every message would be dead-lettered for the proxy's refusal", err)
	}
	// Its URL holds a password: the proxy refused that one (walked with
	// squid and a wrong password: it said "wants credentials: give them").
	errtext.Want(t, "407", err, []string{"proxy", "HTTPS_PROXY", "user:password", "NO_PROXY", "refuses the credentials in its URL"}, "proxy-pw")

	// The same refusal to the CONNECT of an https endpoint.
	c, _ = newClient(Config{Endpoint: "https://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s", Proxy: via(proxyURL)})
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if !bridge.Retryable(err) {
		t.Errorf("CONNECT 407: %v is permanent", err)
	}
	// It says what the 407 says to a plain request (walked with squid: it
	// said only "...: Proxy Authentication Required").
	errtext.Want(t, "CONNECT 407", err, []string{"through the proxy http://op:xxxxx@" + proxyURL.Host, "HTTPS_PROXY", "NO_PROXY",
		"the proxy answered the CONNECT 407", "refuses the credentials in its URL", "user:password"}, "proxy-pw")

	// A proxy that does not listen.
	down, _ := url.Parse("http://op:proxy-pw@" + closedAddr(t))
	c, _ = newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s", Proxy: via(down)})
	_, err = c.PublishMessage(context.Background(), "t1", []byte("x"), "")
	if nr := (*NoReplyError)(nil); !errors.As(err, &nr) || !bridge.Retryable(err) {
		t.Errorf("proxy down: %T %v, want a retryable *NoReplyError", err, err)
	}
	errtext.Want(t, "proxy down", err, []string{"through the proxy http://op:xxxxx@" + down.Host, "HTTPS_PROXY", "NO_PROXY"}, "proxy-pw")

	// Without a proxy the text does not speak of one.
	c, _ = newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s",
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	errtext.Want(t, "no proxy", err, []string{"no reply from MNS; check Config.Endpoint"})
}

// TestProxyRefusalIsNotBlamedOnMNS: a proxy whose rules refuse the MNS host
// answers 403 with its own HTML page (walked: tinyproxy's "403 Filtered";
// squid's ACL denial is the same), not MNS's error XML. The error is held
// and retried like any 403, and says that the reply is not MNS's and names
// the proxy; before, it said only "HTTP 403: unexpected reply: <html>...",
// with no hint. Without a proxy it says something else in front of MNS
// answered.
func TestProxyRefusalIsNotBlamedOnMNS(t *testing.T) {
	filter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(`<?xml version="1.0" encoding="UTF-8" ?><html><head><title>403 Filtered</title></head><body>The request you made has been filtered</body></html>`))
	}))
	defer filter.Close()
	proxyURL, _ := url.Parse(filter.URL)
	proxyURL.User = url.UserPassword("op", "proxy-pw")
	c, err := newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s",
		Proxy: func(*http.Request) (*url.URL, error) { return proxyURL, nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if me := (*Error)(nil); !errors.As(err, &me) || me.Status != http.StatusForbidden || !bridge.Retryable(err) {
		t.Fatalf("proxy's 403: %T %v, want a retryable *Error with status 403", err, err)
	}
	errtext.Want(t, "proxy's 403", err, []string{"403 Filtered", "not from MNS", "the proxy http://op:xxxxx@" + proxyURL.Host, "NO_PROXY"}, "proxy-pw")

	// The same refusal to the CONNECT of an https endpoint (walked with
	// squid: it said only "...: Forbidden").
	err = sendRetryable(t, "https://"+closedAddr(t), proxyURL)
	errtext.Want(t, "CONNECT 403", err, []string{"the proxy answered the CONNECT 403", "may refuse the host of Config.Endpoint",
		"the proxy http://op:xxxxx@" + proxyURL.Host, "NO_PROXY"}, "proxy-pw")

	direct, err := newClient(Config{Endpoint: filter.URL, AccessKeyID: "a", AccessKeySecret: "s",
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = direct.SendMessage(context.Background(), "q1", []byte("x"))
	errtext.Want(t, "gateway's 403", err, []string{"not from MNS", "Config.Endpoint"})
}

// cutShortProxy is a loopback HTTP proxy that wants a password, as
// tinyproxy with BasicAuth does: it answers 407 to a request without a body
// (the destination check's GET), and resets the connection of a request
// with a body before the sender reads any reply. That is what the walk's
// sender saw from tinyproxy, which answers the head and closes with the body
// unread: over a network the reset comes first.
func cutShortProxy(t *testing.T) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0) // close with a reset
				c.Close()
			}
			return
		}
		w.Header().Set("Proxy-Authenticate", `Basic realm="tinyproxy"`)
		w.WriteHeader(http.StatusProxyAuthRequired)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	u.User = url.User("op") // no password
	return u
}

// TestProxyAuthOnASendTheProxyCutsShort: through a proxy that wants a
// password and closes before reading the request's body (tinyproxy with
// BasicAuth, walked), a send's error names the proxy and its 407, as the
// destination check (a GET, no body) does. Before, the send said only
// "no reply from MNS through the proxy ...: connection reset by peer".
func TestProxyAuthOnASendTheProxyCutsShort(t *testing.T) {
	proxyURL := cutShortProxy(t)
	c, err := newClient(Config{Endpoint: "http://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s",
		Proxy: func(*http.Request) (*url.URL, error) { return proxyURL, nil }})
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("telemetry "), 4000) // 40 KB (53 KB in base64), as a full batch
	check := func(what string, err error, more ...string) {
		t.Helper()
		if me := (*Error)(nil); !errors.As(err, &me) || me.Status != http.StatusProxyAuthRequired || !bridge.Retryable(err) {
			t.Fatalf("%s: %T %v, want a retryable *Error with status 407", what, err, err)
		}
		errtext.Want(t, what, err, append([]string{"HTTP 407", "the HTTP proxy http://op@" + proxyURL.Host + " in front of MNS wants credentials", "HTTPS_PROXY", "NO_PROXY"}, more...))
	}
	cutShort := []string{"Proxy Authentication Required", "closed this request's connection while its body was sent"}
	_, err = c.SendMessage(context.Background(), "q1", body)
	check("SendMessage", err, cutShort...)
	_, errs := c.BatchSendMessage(context.Background(), "q1", [][]byte{body[:20000], body[20000:]})
	check("BatchSendMessage", errs[0], cutShort...)
	check("BatchSendMessage's second", errs[1], cutShort...)
	_, err = c.PublishMessage(context.Background(), "t1", body, "")
	check("PublishMessage", err, cutShort...)
	// The check's GET showed the 407 before as now.
	_, err = c.GetQueueAttributes(context.Background(), "q1")
	check("GetQueueAttributes", err)
}

// TestUntrustedCertificateNamesTheCAStore: an https endpoint whose
// certificate this machine does not trust (walked: a TLS terminator with a
// private CA, as a TLS-intercepting proxy presents) says so and where the CA
// goes, instead of "no reply from MNS; check Config.Endpoint (scheme, host
// and port) and the network".
func TestUntrustedCertificateNamesTheCAStore(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	err := sendRetryable(t, srv.URL, nil)
	errtext.Want(t, "untrusted", err, []string{"not trusted by this machine's CA certificates", "Config.Endpoint", "SSL_CERT_FILE", "unknown authority"})
}

// TestCertificateOutsideItsDatesNamesTheClock: an https endpoint whose
// certificate is not valid yet, or expired, by this machine's clock says
// so with the certificate's dates and the clock's time, and sends the
// operator to the clock (walk14: a box without a real-time clock, 2 days
// behind until NTP set it, was told 'not trusted by this machine's CA
// certificates; check mns.endpoint and the system's CA store').
func TestCertificateOutsideItsDatesNamesTheClock(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		name        string
		from, until time.Time
		want        []string
	}{
		{"not valid yet", now.Add(48 * time.Hour), now.Add(90 * 24 * time.Hour),
			[]string{"the TLS certificate that answered is not valid yet by this machine's clock (valid from " + now.Add(48*time.Hour).UTC().Format(time.RFC3339), "this machine's clock says", "is the clock behind?", "sync it (NTP)"}},
		{"expired", now.Add(-90 * 24 * time.Hour), now.Add(-2 * time.Hour),
			[]string{"the TLS certificate that answered has expired by this machine's clock (valid from", "until " + now.Add(-2*time.Hour).UTC().Format(time.RFC3339), "is the clock ahead?", "sync it (NTP)", "renewed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := certgen.NewDated(tt.from, tt.until)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.NotFoundHandler())
			srv.TLS = b.ServerTLSConfig()
			srv.StartTLS()
			defer srv.Close()
			c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "a", AccessKeySecret: "s"})
			if err != nil {
				t.Fatal(err)
			}
			c.h1.tls.RootCAs = b.CertPool()
			_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
			if err == nil || !bridge.Retryable(err) {
				t.Fatalf("send: %v, want a retryable error", err)
			}
			errtext.Want(t, tt.name, err, tt.want)
			if strings.Contains(err.Error(), "CA store") {
				t.Errorf("%s: %q sends the operator to the CA store", tt.name, err)
			}
		})
	}
}

// sendRetryable sends one message to endpoint through proxy (nil: none)
// and returns the error, which must be retryable: the bridge holds the
// messages while the path to MNS is broken.
func sendRetryable(t *testing.T, endpoint string, proxy *url.URL) error {
	t.Helper()
	c, err := newClient(Config{Endpoint: endpoint, AccessKeyID: "a", AccessKeySecret: "s",
		Proxy: func(*http.Request) (*url.URL, error) { return proxy, nil }})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if err == nil || !bridge.Retryable(err) {
		t.Errorf("send to %s: %v, want a retryable error", endpoint, err)
	}
	return err
}

// TestHTMLReplyIsNamedByItsTitle: a proxy's or gateway's error page is
// named by its title, not by its first 200 bytes (walked: squid's 403 and
// 407 pages showed only '<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN"
// ... <meta type="copyright" content="Copyright (C) 1996-2021 The Squid
// Software Foundation and contri').
func TestHTMLReplyIsNamedByItsTitle(t *testing.T) {
	page := `<!DOCTYPE html PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">
<html><head>
<meta type="copyright" content="Copyright (C) 1996-2021 The Squid Software Foundation and contributors">
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<TITLE>ERROR: The requested URL could not
 be retrieved</TITLE>
<style type="text/css"><!-- body { font-family: sans-serif } --></style>
</head><body id="ERR_ACCESS_DENIED"><p>Access control configuration prevents your request from being allowed at this time.</p></body></html>`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte(page))
	}))
	defer srv.Close()
	err := sendRetryable(t, srv.URL, nil)
	errtext.Want(t, "squid's page", err, []string{`HTTP 403: unexpected reply: an HTML page titled "ERROR: The requested URL could not be retrieved"`, "not from MNS"})
}

// TestConnectRefusalKeepsTheProxysStatus: a proxy's answer to the CONNECT
// of an https endpoint is judged by its status code, not by the reason
// phrase net/http passes on (walked with tinyproxy: "403 Filtered" read as
// "...: Filtered", with no hint, and a wrong password got 401, not 407).
func TestConnectRefusalKeepsTheProxysStatus(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   []string
	}{
		{"403 Filtered", []string{"the proxy answered the CONNECT 403", "may refuse the host of Config.Endpoint", "NO_PROXY", "CONNECT: 403 Filtered"}},
		{"401 Unauthorized", []string{"the proxy answered the CONNECT 401", "refuses the credentials in its URL", "CONNECT: 401 Unauthorized"}},
		{"502 Bad Gateway", []string{"the proxy answered the CONNECT 502", "could not reach the host of Config.Endpoint", "CONNECT: 502 Bad Gateway"}},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// Read the CONNECT's head, answer with the status line, close.
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Write([]byte("HTTP/1.1 " + tc.status + "\r\nContent-Length: 0\r\n\r\n"))
				c.Close()
			}
		}()
		proxyURL, _ := url.Parse("http://op:proxy-pw@" + ln.Addr().String())
		err = sendRetryable(t, "https://"+closedAddr(t), proxyURL)
		errtext.Want(t, tc.status, err, tc.want, "proxy-pw")
		ln.Close()
	}
}
