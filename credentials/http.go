package credentials

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// How the remote providers (URI, ECSRole, OIDC) reach their endpoint: one
// client, one request function that reads a bounded answer and names no
// secret, and the guard that keeps test binaries on loopback.

// maxAnswer bounds what is read of a remote answer.
const maxAnswer = 64 << 10

// remoteClient is the HTTP client of the remote providers: 1 s to connect,
// 1 s (metadata) or timeout to the reply headers, no proxy for metadata.
func remoteClient(timeout time.Duration, proxy bool) *http.Client {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
		ResponseHeaderTimeout: timeout,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          2,
		IdleConnTimeout:       30 * time.Second,
	}
	if proxy {
		tr.Proxy = http.ProxyFromEnvironment
	}
	return &http.Client{Transport: tr, Timeout: timeout + 2*time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// guardTest refuses, in a test binary, any address that is not loopback:
// no test may reach the metadata service, STS or any Alibaba endpoint.
func guardTest(raw string) error {
	if !testing.Testing() {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing to reach %s from a test binary: point the provider at a loopback fake", host)
}

// get sends one request and returns the status and at most maxAnswer
// bytes of the body. Errors name the URL's host and path, never a body.
func do(ctx context.Context, hc *http.Client, req *http.Request) (int, []byte, error) {
	if err := guardTest(req.URL.String()); err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is named by the caller, without its query
		}
		return 0, nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: read the answer: %w", req.Method, redactURL(req.URL), err)
	}
	return resp.StatusCode, body, nil
}

// redactURL drops the query and user info (a URI may carry a token there).
func redactURL(u *url.URL) string {
	r := *u
	r.User, r.RawQuery, r.Fragment = nil, "", ""
	return r.String()
}
