package mns

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// scriptedServer accepts connections and answers each request it reads
// with the next of replies (raw bytes); after a reply ending in "|close"
// (cut off before sending) it closes the connection. It counts the
// connections it accepted.
type scriptedServer struct {
	ln      net.Listener
	mu      sync.Mutex
	replies []string
	conns   int
	open    []net.Conn
	wg      sync.WaitGroup
}

func newScriptedServer(t *testing.T, replies ...string) *scriptedServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedServer{ln: ln, replies: replies}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *scriptedServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *scriptedServer) accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *scriptedServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		s.open = append(s.open, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *scriptedServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		s.mu.Lock()
		if len(s.replies) == 0 {
			s.mu.Unlock()
			return
		}
		r := s.replies[0]
		s.replies = s.replies[1:]
		s.mu.Unlock()
		r, closeAfter := strings.CutSuffix(r, "|close")
		if _, err := io.WriteString(c, r); err != nil || closeAfter {
			return
		}
	}
}

const attrsXML = `<?xml version="1.0" encoding="UTF-8"?><Queue xmlns="http://mns.aliyuncs.com/doc/v1/"><QueueName>q1</QueueName><ActiveMessages>7</ActiveMessages></Queue>`

func lengthReply(status, extra, body string) string {
	return "HTTP/1.1 " + status + "\r\nContent-Type: text/xml\r\nx-mns-request-id: R1\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func chunked(body string) string {
	var b strings.Builder
	for len(body) > 0 {
		n := min(len(body), 40)
		b.WriteString(strconv.FormatInt(int64(n), 16) + "\r\n" + body[:n] + "\r\n")
		body = body[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// TestH1ReplyForms: the client's own exchange reads Content-Length,
// chunked and close-delimited replies, keeps the connection for the next
// request only when the reply allows it, and maps MNS error replies as
// before.
func TestH1ReplyForms(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reply     string
		wantConns int // connections for two requests
	}{
		{"content-length", lengthReply("200 OK", "", attrsXML), 1},
		{"chunked", "HTTP/1.1 200 OK\r\nx-mns-request-id: R1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(attrsXML), 1},
		{"connection close", lengthReply("200 OK", "Connection: close\r\n", attrsXML) + "|close", 2},
		{"close-delimited", "HTTP/1.1 200 OK\r\nx-mns-request-id: R1\r\nConnection: close\r\n\r\n" + attrsXML + "|close", 2},
		{"bytes after the reply", lengthReply("200 OK", "", attrsXML) + "HTTP/1.1 200 OK\r\n", 2},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\nx-mns-request-id: R1\r\nContent-Length: " + strconv.Itoa(len(attrsXML)) + "\r\n\r\n" + attrsXML + "|close", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, tc.reply, tc.reply)
			c, err := newClient(Config{Endpoint: srv.url(), AccessKeyID: "a", AccessKeySecret: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if c.h1 == nil {
				t.Fatal("the client does not use its own exchange for a loopback endpoint")
			}
			for i := range 2 {
				a, err := c.GetQueueAttributes(context.Background(), "q1")
				if err != nil || a.QueueName != "q1" || a.ActiveMessages != 7 {
					t.Fatalf("request %d: %+v, %v", i, a, err)
				}
			}
			if n := srv.accepted(); n != tc.wantConns {
				t.Errorf("two requests took %d connections, want %d", n, tc.wantConns)
			}
		})
	}
}

// TestH1BrokenReplies: a reply that is not HTTP, is cut short or has a bad
// chunk is a retryable error naming the request and Config.Endpoint; an MNS
// error in a chunked reply keeps its code; and the next request works on a
// new connection.
func TestH1BrokenReplies(t *testing.T) {
	errXML := `<?xml version="1.0" encoding="UTF-8"?><Error xmlns="http://mns.aliyuncs.com/doc/v1/"><Code>QueueNotExist</Code><Message>The queue name you provided is not exist.</Message><RequestId>R9</RequestId><HostId>h</HostId></Error>`
	for _, tc := range []struct {
		name, reply, want string
		code              string
	}{
		{"not HTTP", "HELLO THERE\r\n\r\n|close", "malformed HTTP", ""},
		{"cut body", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<Queue>|close", "unexpected EOF", ""},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n|close", "invalid byte in chunk length", ""},
		{"closed without reply", "|close", "EOF", ""},
		{"MNS error, chunked", "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(errXML), "QueueNotExist", "QueueNotExist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newScriptedServer(t, tc.reply, lengthReply("200 OK", "", attrsXML))
			c, err := newClient(Config{Endpoint: srv.url(), AccessKeyID: "a", AccessKeySecret: "s"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.GetQueueAttributes(context.Background(), "q1")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "GetQueueAttributes queue q1") {
				t.Fatalf("error %v, want one naming the request and %q", err, tc.want)
			}
			var e *Error
			switch {
			case tc.code != "":
				if !errors.As(err, &e) || e.Code != tc.code || e.Status != 404 || e.RequestID != "R9" || bridge.Retryable(err) {
					t.Errorf("error %#v, want MNS code %s, status 404, request id R9, not retryable", e, tc.code)
				}
			case !bridge.Retryable(err) || !strings.Contains(err.Error(), "check Config.Endpoint"):
				t.Errorf("error %v: want it retryable, naming Config.Endpoint", err)
			}
			if _, err := c.GetQueueAttributes(context.Background(), "q1"); err != nil {
				t.Errorf("the request after the broken reply: %v", err)
			}
		})
	}
}

// TestH1IdleConnectionClosedByServer: a kept-alive connection the server
// has closed since is not used: the next request goes on a new one and
// succeeds.
func TestH1IdleConnectionClosedByServer(t *testing.T) {
	srv := newScriptedServer(t, lengthReply("200 OK", "", attrsXML)+"|close", lengthReply("200 OK", "", attrsXML))
	c, err := newClient(Config{Endpoint: srv.url(), AccessKeyID: "a", AccessKeySecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetQueueAttributes(context.Background(), "q1"); err != nil {
		t.Fatal(err)
	}
	// The server closes after its reply (without saying so): wait until
	// the client's kept connection sees the end of the stream.
	c.h1.mu.Lock()
	idle := c.h1.idle[0]
	c.h1.mu.Unlock()
	for open(idle.raw) {
		runtime.Gosched()
	}
	if _, err := c.GetQueueAttributes(context.Background(), "q1"); err != nil {
		t.Fatalf("the request after the server closed the idle connection: %v", err)
	}
	if n := srv.accepted(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestH1WriteFailureOnKeptConnectionIsResent: when writing a request on a
// kept-alive connection fails (the server closed it), nothing reached MNS
// and the request goes on a new connection.
func TestH1WriteFailureOnKeptConnectionIsResent(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	if _, err := f.c.SendMessage(context.Background(), "q1", []byte("first")); err != nil {
		t.Fatal(err)
	}
	f.c.h1.mu.Lock()
	kept := f.c.h1.idle[0]
	f.c.h1.mu.Unlock()
	kept.nc.Close() // writes on it now fail; the liveness peek cannot see it
	kept.raw = openConn{kept.raw}
	if _, err := f.c.SendMessage(context.Background(), "q1", []byte("second")); err != nil {
		t.Fatalf("the request after its kept connection failed: %v", err)
	}
	if got := f.emu.Messages("q1"); len(got) != 2 || got[1].Body != "c2Vjb25k" {
		t.Errorf("stored %+v, want the two messages once each", got)
	}
}

// openConn is a connection the liveness check takes for open (it cannot
// peek at it).
type openConn struct{ net.Conn }

// TestH1OverTLS: an https endpoint goes over TLS (HTTP/1.1), and the
// connection is kept.
func TestH1OverTLS(t *testing.T) {
	emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"ak": "sk"}, Queues: []string{"q1"}})
	srv := httptest.NewUnstartedServer(emu)
	srv.EnableHTTP2 = true
	var conns int
	var mu sync.Mutex
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	if c.h1 == nil || c.h1.tls == nil {
		t.Fatal("the client does not use its own exchange over TLS for an https endpoint")
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c.h1.tls.RootCAs = pool
	for i := range 3 {
		if _, errs := c.BatchSendMessage(context.Background(), "q1", [][]byte{[]byte("a"), []byte("b")}); errs[0] != nil || errs[1] != nil {
			t.Fatalf("batch %d: %v", i, errs)
		}
	}
	if n := len(emu.Messages("q1")); n != 6 {
		t.Errorf("stored %d messages, want 6", n)
	}
	mu.Lock()
	n := conns
	mu.Unlock()
	if n != 1 {
		t.Errorf("3 requests over TLS took %d connections, want 1", n)
	}
	// A server the system roots do not trust is refused, retryably.
	c2, _ := newClient(Config{Endpoint: srv.URL, AccessKeyID: "a", AccessKeySecret: "s"})
	if _, err := c2.SendMessage(context.Background(), "q1", []byte("x")); err == nil || !strings.Contains(err.Error(), "certificate") || !bridge.Retryable(err) {
		t.Errorf("untrusted server: %v, want a retryable certificate error", err)
	}
}

// TestH1NotWithAProxy: an endpoint a proxy from the environment applies
// to goes through net/http (which speaks to the proxy), as before.
func TestH1NotWithAProxy(t *testing.T) {
	proxy := func(*http.Request) (*url.URL, error) { return url.Parse("http://proxy.example.invalid:3128") }
	none := func(*http.Request) (*url.URL, error) { return nil, nil }
	if h := newH1("https://123.mns.cn-hangzhou.aliyuncs.com", 4, proxy); h != nil {
		t.Error("own exchange with a proxy set")
	}
	h := newH1("https://123.mns.cn-hangzhou.aliyuncs.com", 4, none)
	if h == nil || h.addr != "123.mns.cn-hangzhou.aliyuncs.com:443" || h.tls == nil || h.tls.ServerName != "123.mns.cn-hangzhou.aliyuncs.com" {
		t.Fatalf("https endpoint: %+v", h)
	}
	if h := newH1("http://127.0.0.1:8080", 4, none); h == nil || h.addr != "127.0.0.1:8080" || h.tls != nil || h.host != "127.0.0.1:8080" {
		t.Errorf("http endpoint: %+v", h)
	}
}

// TestNetHTTPExchangeStillWorks: with Config.HTTPClient (as with a proxy)
// requests go through net/http: batches, large bodies sent in place and
// MNS errors as through the client's own exchange.
func TestNetHTTPExchangeStillWorks(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, func(c *Config) { c.HTTPClient = &http.Client{} })
	if f.c.h1 != nil {
		t.Fatal("the client uses its own exchange although Config.HTTPClient is set")
	}
	msgs := []bridge.Outgoing{{Body: []byte("a")}, {Body: base64Text(2, 20<<10), Base64: true}}
	if _, errs := f.c.SendMessages(context.Background(), "q1", msgs); errs[0] != nil || errs[1] != nil {
		t.Fatalf("batch: %v", errs)
	}
	if got := f.emu.Messages("q1"); len(got) != 2 || got[1].Body != string(msgs[1].Body) {
		t.Errorf("stored %d messages, want both whole", len(got))
	}
	var e *Error
	if _, err := f.c.SendMessage(context.Background(), "nosuch", []byte("x")); !errors.As(err, &e) || e.Code != "QueueNotExist" {
		t.Errorf("missing queue: %v, want QueueNotExist", err)
	}
}

// TestH1PutClosesConnectionsIdleTooLong: the newest kept connection is
// taken first, so at a steady low rate the oldest are never taken again;
// put closes those idle for longer than idleFor instead of keeping them
// open (in CLOSE_WAIT once MNS closed its side) for good.
func TestH1PutClosesConnectionsIdleTooLong(t *testing.T) {
	h := &h1{idleFor: time.Minute}
	stale, stalePeer := net.Pipe()
	fresh, freshPeer := net.Pipe()
	now, _ := net.Pipe()
	defer stalePeer.Close()
	defer freshPeer.Close()
	defer now.Close()
	h.idle = []*h1Conn{
		{nc: stale, idleAt: time.Now().Add(-2 * time.Minute)},
		{nc: fresh, idleAt: time.Now()},
	}
	h.put(&h1Conn{nc: now})
	if len(h.idle) != 2 || h.idle[0].nc != fresh || h.idle[1].nc != now {
		t.Fatalf("kept %d connections, want the fresh one and the one put back", len(h.idle))
	}
	if _, err := stalePeer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the connection idle for 2 minutes: its peer reads %v, want EOF (closed)", err)
	}
}

// TestH1RefusesALineBreakInAHeader: a security token with a line break
// (a broken credentials file) must not split the request on the wire, as
// net/http refuses it too; the request fails naming the header, and
// nothing reaches MNS.
func TestH1RefusesALineBreakInAHeader(t *testing.T) {
	var got int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got++
		mu.Unlock()
	}))
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "a", AccessKeySecret: "s", SecurityToken: "tok\r\nX-Evil: 1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.h1 == nil {
		t.Skip("the client uses net/http on this platform")
	}
	_, err = c.SendMessage(context.Background(), "q1", []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "Security-Token holds a line break") {
		t.Errorf("err = %v, want the Security-Token's line break named", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got != 0 {
		t.Errorf("the server got %d request(s), want none", got)
	}
}

// TestIdleConnectionsHoldNoBuffers: after 32 requests at once (32
// connections, as after a burst or an outage's drain) the kept idle
// connections hold no read or write buffer: a few KB of heap each (the
// sockets, and this test's server's 2 KB buffer per connection), not the
// 20 KB of buffers each held before.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	const n = 32
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	// Answers 503 to each request; a connection's first reply waits until
	// n requests have arrived, so that n connections are open.
	addr := serveLoopback(t, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 2<<10)
		first := true
		for have := 0; ; {
			m, err := c.Read(buf[have:])
			if err != nil {
				return
			}
			have += m
			if !strings.Contains(string(buf[:have]), "\r\n\r\n") {
				continue
			}
			have = 0
			if first {
				first = false
				arrived.Done()
				<-all
			}
			if _, err := io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
	})
	c, err := newClient(Config{Endpoint: "http://" + addr, AccessKeyID: "a", AccessKeySecret: "s", MaxConns: n})
	if err != nil {
		t.Fatal(err)
	}
	if c.h1 == nil {
		t.Fatal("the client does not use its own exchange for a loopback endpoint")
	}
	runtime.GC()
	runtime.GC() // what a sync.Pool keeps outlives one collection
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := c.GetQueueAttributes(context.Background(), "q1"); err == nil {
				t.Error("a 503 was taken for attributes")
			}
		})
	}
	wg.Wait()
	c.h1.mu.Lock()
	idle := len(c.h1.idle)
	c.h1.mu.Unlock()
	if idle != n {
		t.Fatalf("%d idle connections after %d requests at once, want %d", idle, n, n)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c) // and its idle connections
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("an idle connection and its server side hold %d bytes of heap", per)
	if per > 12<<10 {
		t.Errorf("an idle kept connection holds %d bytes of heap (with this test's 2 KB server buffer), want at most 12 KB", per)
	}
}
