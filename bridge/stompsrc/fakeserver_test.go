package stompsrc

import (
	"crypto/tls"
	"encoding/base64"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// fakeServer is a minimal STOMP 1.2 server over TLS for the source's unit
// tests: it checks iotauth logins, takes one subscription per connection,
// sends MESSAGE frames on demand, records ACK and NACK, and can misbehave on
// purpose (ERROR frames, garbage, silence, closing).
type fakeServer struct {
	t      *testing.T
	ln     net.Listener
	caFile string

	secrets map[string]string
	// heartBeat is the server's offer (its cx); 0 sends none.
	heartBeat time.Duration

	mu           sync.Mutex
	conns        map[*fakeConn]bool
	perClient    map[string]int // live subscribed connections per client id
	maxPerClnt   int
	logins       []iotauth.Username
	acks, nacks  []string // message ids
	subscribeErr string   // when set, SUBSCRIBE is answered with ERROR
	nextID       int
	accepted     int // TCP connections accepted

	subscribed chan *fakeConn // each successful SUBSCRIBE
	acked      chan string    // each ACK or NACK ("ack:<id>" / "nack:<id>")
}

type fakeConn struct {
	s        *fakeServer
	nc       net.Conn
	user     iotauth.Username
	subID    string
	ackMode  string
	hbAsk    time.Duration // what the client asked of the server
	mu       sync.Mutex    // guards w and silent
	w        *frame.Writer
	silent   bool
	done     chan struct{}
	closeErr sync.Once
}

const (
	testAK     = "LTAItestkey"
	testSecret = "s3cr3t-value-never-logged"
)

func startFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	b, ca := testpeers.CA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{
		t: t, ln: ln, caFile: ca,
		secrets:    map[string]string{testAK: testSecret},
		conns:      map[*fakeConn]bool{},
		perClient:  map[string]int{},
		subscribed: make(chan *fakeConn, 64),
		acked:      make(chan string, 1024),
	}
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
}

func (s *fakeServer) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &fakeConn{s: s, nc: nc, w: frame.NewWriter(nc), done: make(chan struct{})}
		s.mu.Lock()
		s.conns[c] = true
		s.accepted++
		s.mu.Unlock()
		go c.serve()
	}
}

func (s *fakeServer) stats() (logins int, maxPerClient int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.logins), s.maxPerClnt
}

func (c *fakeConn) write(f *frame.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(f)
}

func (c *fakeConn) writeRaw(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nc.Write(b)
}

// goSilent stops heart-beats (and everything else) without closing.
func (c *fakeConn) goSilent() {
	c.mu.Lock()
	c.silent = true
	c.mu.Unlock()
}

func (c *fakeConn) serve() {
	defer func() {
		c.nc.Close()
		close(c.done)
		c.s.mu.Lock()
		delete(c.s.conns, c)
		if c.subID != "" {
			c.s.perClient[c.user.ClientID]--
		}
		c.s.mu.Unlock()
	}()
	r := frame.NewReader(c.nc)
	f, err := r.Read()
	if err != nil || f == nil || (f.Command != frame.CONNECT && f.Command != frame.STOMP) {
		return
	}
	u, err := iotauth.Verify(f.Header.Get(frame.Login), f.Header.Get(frame.Passcode), func(ak string) (string, bool) {
		v, ok := c.s.secrets[ak]
		return v, ok
	}, time.Now(), time.Minute)
	if err != nil {
		c.write(frame.New(frame.ERROR, frame.Message, "authentication failed: "+err.Error(), frame.ContentType, "text/plain"))
		return
	}
	c.user = u
	c.s.mu.Lock()
	c.s.logins = append(c.s.logins, u)
	c.s.mu.Unlock()
	if hb := f.Header.Get(frame.HeartBeat); hb != "" {
		_, c.hbAsk, _ = frame.ParseHeartBeat(hb)
	}
	offer := int64(c.s.heartBeat / time.Millisecond)
	if err := c.write(frame.New(frame.CONNECTED, frame.Version, "1.2", frame.HeartBeat, strconv.FormatInt(offer, 10)+",0", frame.Session, "s1")); err != nil {
		return
	}
	if c.s.heartBeat > 0 && c.hbAsk > 0 {
		go c.beat(max(c.s.heartBeat, c.hbAsk))
	}
	for {
		f, err := r.Read()
		if err != nil {
			return
		}
		if f == nil {
			continue
		}
		switch f.Command {
		case frame.SUBSCRIBE:
			c.s.mu.Lock()
			serr := c.s.subscribeErr
			c.s.mu.Unlock()
			if serr != "" {
				c.write(frame.New(frame.ERROR, frame.Message, serr, frame.ContentType, "text/plain"))
				return
			}
			c.s.mu.Lock()
			c.subID, c.ackMode = f.Header.Get(frame.Id), f.Header.Get(frame.Ack)
			c.s.perClient[c.user.ClientID]++
			c.s.maxPerClnt = max(c.s.maxPerClnt, c.s.perClient[c.user.ClientID])
			c.s.mu.Unlock()
			c.s.subscribed <- c
		case frame.ACK, frame.NACK:
			id := f.Header.Get(frame.Id)
			c.s.mu.Lock()
			if f.Command == frame.ACK {
				c.s.acks = append(c.s.acks, id)
			} else {
				c.s.nacks = append(c.s.nacks, id)
			}
			c.s.mu.Unlock()
			c.s.acked <- map[string]string{frame.ACK: "ack:", frame.NACK: "nack:"}[f.Command] + id
		case frame.UNSUBSCRIBE, frame.DISCONNECT:
			if rc := f.Header.Get(frame.Receipt); rc != "" {
				c.write(frame.New(frame.RECEIPT, frame.ReceiptId, rc))
			}
			if f.Command == frame.DISCONNECT {
				return
			}
			c.s.mu.Lock()
			c.s.perClient[c.user.ClientID]--
			c.subID = ""
			c.s.mu.Unlock()
		}
	}
}

func (c *fakeConn) beat(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.mu.Lock()
			silent := c.silent
			c.mu.Unlock()
			if !silent {
				c.write(nil)
			}
		}
	}
}

// send sends one MESSAGE with the platform's headers; extra are more
// header pairs. It returns the message id.
func (c *fakeConn) send(topic string, body []byte, extra ...string) (string, error) {
	c.s.mu.Lock()
	c.s.nextID++
	id := "m" + strconv.Itoa(c.s.nextID)
	sub, mode := c.subID, c.ackMode
	c.s.mu.Unlock()
	if c.user.EncodeBase64 {
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	f := frame.New(frame.MESSAGE,
		frame.Subscription, sub,
		frame.MessageId, "stomp-"+id,
		frame.Destination, "/topic/#",
		"topic", topic,
		"messageId", id,
		"generateTime", "1700000000123",
		frame.ContentLength, strconv.Itoa(len(body)))
	if mode == "client-individual" {
		f.Header.Add(frame.Ack, id)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Header.Add(extra[i], extra[i+1])
	}
	f.Body = body
	return id, c.write(f)
}

// waitSubscribed returns the next connection that subscribed.
func (s *fakeServer) waitSubscribed(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-s.subscribed:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no connection subscribed within 20s")
		return nil
	}
}

// waitAcked returns the next "ack:<id>" or "nack:<id>".
func (s *fakeServer) waitAcked(t *testing.T) string {
	t.Helper()
	select {
	case a := <-s.acked:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("no ACK or NACK within 20s")
		return ""
	}
}

// syncBuffer collects log output from many goroutines.
type syncBuffer = testpeers.SyncBuffer

func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func testParams(p iotauth.Params) func() (iotauth.Params, error) {
	return func() (iotauth.Params, error) { return p, nil }
}

func goodParams() iotauth.Params {
	return iotauth.Params{
		ClientID:        "edge-gw-01",
		AccessKeyID:     testAK,
		AccessKeySecret: testSecret,
		ConsumerGroupID: "DEFAULT_GROUP",
		IotInstanceID:   "iot-test",
		SignMethod:      iotauth.HMACSHA1,
	}
}

// frameError is a server ERROR frame as a broker sends it.
func frameError(msg string) *frame.Frame {
	f := frame.New(frame.ERROR, frame.Message, msg, frame.ContentType, "text/plain")
	f.Body = []byte("details: " + msg)
	return f
}
