package mns

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/rawio"
)

// h1 is the client's own HTTP/1.1 exchange: the goroutine that sends a
// request writes it and reads its reply on a kept-alive connection itself.
// net/http runs a write loop and a read loop goroutine per connection and
// hands every request and reply between them and the caller; at a moderate
// rate each hand-off parks and wakes a thread, which cost more than the
// request itself (bench/README, "The MNS exchange in the sender"). The
// client uses h1 unless a proxy from the environment (HTTPS_PROXY,
// HTTP_PROXY, NO_PROXY) applies to the endpoint or Config.HTTPClient is
// set: those go through net/http as before.
//
// It speaks HTTP/1.1 only (ALPN "http/1.1" over TLS), sends no Expect or
// compression headers, reads replies with net/http's own parser
// (http.ReadResponse: Content-Length, chunked, and close-delimited bodies)
// and keeps a connection for the next request only when the reply was read
// whole and did not ask to close.
type h1 struct {
	addr  string      // host:port to dial
	host  string      // the Host header
	tls   *tls.Config // nil for http
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
	slots chan struct{} // one per request in flight: at most MaxConns
	// idleFor is how long an idle connection is kept (net/http's default
	// IdleConnTimeout).
	idleFor time.Duration

	mu   sync.Mutex
	idle []*h1Conn // most recently used last
}

type h1Conn struct {
	nc     net.Conn  // the connection (TLS over raw for https)
	raw    net.Conn  // the TCP connection, for the liveness check
	idleAt time.Time // when it was put back
}

// The buffers of an exchange (a 16 KB writer, a 4 KB reader) are taken for
// the exchange only: a kept connection's reader is empty (exchange keeps
// no connection with bytes after the reply) and its writer flushed, so an
// idle connection needs neither. Each connection had its own: after a
// burst or an outage's drain (up to the requests allowed in flight to a
// destination) the idle connections held 20 KB each for up to idleFor
// (TestIdleConnectionsHoldNoBuffers).
var (
	h1Readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	h1Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
)

// newH1 returns the exchange for base (scheme://host[:port], checked by
// ParseEndpoint), or nil when proxy (http.ProxyFromEnvironment) names a
// proxy for it.
func newH1(base string, maxConns int, proxy func(*http.Request) (*url.URL, error)) *h1 {
	if !canPeek {
		// Without the peek a kept connection the server closed is found
		// only when its reply fails, after the request was written: that
		// is net/http's to handle.
		return nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil
	}
	if p, err := proxy(&http.Request{URL: u}); err != nil || p != nil {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	h := &h1{addr: net.JoinHostPort(u.Hostname(), port), host: u.Host, slots: make(chan struct{}, maxConns), idleFor: 90 * time.Second}
	if u.Scheme == "https" {
		h.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	h.dial = d.DialContext
	return h
}

// h1Request is one request: the method and resource, the headers after
// Host and Content-Length, and the body (xml, with the bodies of refs in
// place).
type h1Request struct {
	method, resource string
	headers          [][2]string
	xml              []byte
	refs             []bodyRef
}

func (r *h1Request) contentLength() int {
	n := len(r.xml)
	for _, ref := range r.refs {
		n += len(ref.b)
	}
	return n
}

// errTimedOut marks the per-request timeout (Config.Timeout); it
// wraps context.DeadlineExceeded, as net/http's timeouts do.
var errTimedOut = fmt.Errorf("request timed out: %w", context.DeadlineExceeded)

// do sends req and reads the reply whole into rb.buf (at most
// maxReplySize bytes) until ctx is done; ctx's deadline is the request's
// (Config.Timeout, set by the caller before it signed). It returns the
// status and the x-mns-request-id header.
func (h *h1) do(ctx context.Context, req *h1Request, rb *replyBuf) (status int, serverID string, err error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return 0, "", errors.New("mns: a request without a deadline (internal error)")
	}
	// net/http refuses these too: a line break would end the header early
	// and put the rest on the wire as request text.
	for _, kv := range req.headers {
		if strings.ContainsAny(kv[1], "\r\n") {
			return 0, "", fmt.Errorf("header %s holds a line break; check the credentials (a security token must be one line)", kv[0])
		}
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return 0, "", ctx.Err()
	}
	defer func() { <-h.slots }()
	for {
		c, reused, err := h.conn(ctx, deadline)
		if err != nil {
			return 0, "", timedOut(err, deadline)
		}
		status, serverID, keep, wrote, err := h.exchange(ctx, c, deadline, req, rb)
		if err == nil {
			if keep {
				h.put(c)
			} else {
				c.nc.Close()
			}
			return status, serverID, nil
		}
		c.nc.Close()
		// A kept-alive connection the server closed meanwhile fails the
		// write: nothing reached MNS, so the request goes on a new one.
		if reused && !wrote && ctx.Err() == nil && time.Now().Before(deadline) {
			continue
		}
		return 0, "", timedOut(err, deadline)
	}
}

// timedOut marks err as the per-request timeout once deadline passed.
func timedOut(err error, deadline time.Time) error {
	if !time.Now().Before(deadline) && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%w (%w)", errTimedOut, err)
	}
	return err
}

// exchange writes req on c and reads the reply. keep says whether c may
// carry another request; wrote whether the request was written whole.
func (h *h1) exchange(ctx context.Context, c *h1Conn, deadline time.Time, req *h1Request, rb *replyBuf) (status int, serverID string, keep, wrote bool, err error) {
	if err := c.nc.SetDeadline(deadline); err != nil {
		return 0, "", false, false, err
	}
	// The caller's cancel ends a write or read in progress.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	bw := h1Writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	err = h.write(bw, req)
	bw.Reset(nil)
	h1Writers.Put(bw)
	if err != nil {
		return 0, "", false, false, fmt.Errorf("write request: %w", err)
	}
	// Written: a request waiting for its reply holds no copy of its
	// messages, which the pipeline holds anyway.
	req.xml, req.refs = nil, nil
	br := h1Readers.Get().(*bufio.Reader)
	br.Reset(c.nc)
	defer func() {
		br.Reset(nil)
		h1Readers.Put(br)
	}()
	status, serverID, keepable, err := readReply(br, rb)
	if err != nil {
		return 0, "", false, true, err
	}
	// Kept only when the body was read to its end (a reply cut at
	// maxReplySize leaves the rest on the connection) and nothing came
	// after it (net/http closes on such an unsolicited reply too).
	keep = keepable && br.Buffered() == 0 &&
		stop() // false once the cancel has set (or is setting) the deadline to the past
	return status, serverID, keep, true, nil
}

// write sends req in one socket write when it fits the write buffer.
func (h *h1) write(w *bufio.Writer, req *h1Request) error {
	w.WriteString(req.method)
	w.WriteByte(' ')
	w.WriteString(req.resource)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(h.host)
	if req.method != "GET" || req.xml != nil {
		var nb [20]byte
		w.WriteString("\r\nContent-Length: ")
		w.Write(strconv.AppendInt(nb[:0], int64(req.contentLength()), 10))
	}
	for _, kv := range req.headers {
		w.WriteString("\r\n")
		w.WriteString(kv[0])
		w.WriteString(": ")
		w.WriteString(kv[1])
	}
	w.WriteString("\r\n\r\n")
	at := 0
	for _, r := range req.refs {
		w.Write(req.xml[at:r.at])
		w.Write(r.b)
		at = r.at
	}
	w.Write(req.xml[at:])
	return w.Flush()
}

// conn returns a kept-alive connection that is still open, or dials one.
func (h *h1) conn(ctx context.Context, deadline time.Time) (*h1Conn, bool, error) {
	now := time.Now()
	for {
		h.mu.Lock()
		n := len(h.idle)
		if n == 0 {
			h.mu.Unlock()
			break
		}
		c := h.idle[n-1]
		h.idle[n-1] = nil
		h.idle = h.idle[:n-1]
		h.mu.Unlock()
		if now.Sub(c.idleAt) < h.idleFor && open(c.raw) {
			return c, true, nil
		}
		c.nc.Close()
	}
	c, err := h.dialConn(ctx, deadline)
	return c, false, err
}

func (h *h1) dialConn(ctx context.Context, deadline time.Time) (*h1Conn, error) {
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	raw, err := h.dial(dctx, "tcp", h.addr)
	if err != nil {
		return nil, err
	}
	nc := rawio.Wrap(raw)
	if h.tls != nil {
		tc := tls.Client(nc, h.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", h.addr, err)
		}
		nc = tc
	}
	return &h1Conn{nc: nc, raw: raw}, nil
}

// put keeps c for the next request, and closes the kept connections idle
// for longer than idleFor: the newest is taken first, so at a steady low
// rate the oldest are never taken again and would stay open for good.
func (h *h1) put(c *h1Conn) {
	now := time.Now()
	c.idleAt = now
	h.mu.Lock()
	expired := 0
	for expired < len(h.idle) && now.Sub(h.idle[expired].idleAt) >= h.idleFor {
		expired++
	}
	old := slices.Clone(h.idle[:expired])
	h.idle = append(slices.Delete(h.idle, 0, expired), c)
	h.mu.Unlock()
	for _, o := range old {
		o.nc.Close()
	}
}
