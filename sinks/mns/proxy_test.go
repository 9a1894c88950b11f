package mns

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
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
	errtext.Want(t, "407", err, []string{"proxy", "HTTPS_PROXY", "user:password", "NO_PROXY"}, "proxy-pw")

	// The same refusal to the CONNECT of an https endpoint.
	c, _ = newClient(Config{Endpoint: "https://" + closedAddr(t), AccessKeyID: "a", AccessKeySecret: "s", Proxy: via(proxyURL)})
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if !bridge.Retryable(err) {
		t.Errorf("CONNECT 407: %v is permanent", err)
	}
	errtext.Want(t, "CONNECT 407", err, []string{"through the proxy http://op:xxxxx@" + proxyURL.Host, "HTTPS_PROXY", "NO_PROXY"}, "proxy-pw")

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
