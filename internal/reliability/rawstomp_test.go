package reliability

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
)

// rawServer is a STOMP 1.2 server over TLS that sends whatever bytes a test
// gives it, so that tests can send frames the simulator never would
// (malformed frames, bad headers, invalid base64). It accepts any login,
// answers CONNECTED with heart-beats every 500 ms (sent even in the middle of
// a frame, as the bytes of a stuck peer would keep coming), takes one SUBSCRIBE per connection
// and records ACK and NACK ids.
type rawServer struct {
	ln     net.Listener
	caFile string

	mu       sync.Mutex
	conn     net.Conn // the newest subscribed connection
	subID    string   // its subscription id
	wmu      sync.Mutex
	logins   int
	acks     map[string]bool
	nacks    map[string]bool
	subbed   chan struct{} // a value per SUBSCRIBE
	wg       sync.WaitGroup
	closed   bool
	allConns []net.Conn
}

func startRawServer(t *testing.T) *rawServer {
	t.Helper()
	b, ca := testpeers.CA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", b.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, caFile: ca, acks: map[string]bool{}, nacks: map[string]bool{}, subbed: make(chan struct{}, 100)}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

func (s *rawServer) close() {
	s.mu.Lock()
	s.closed = true
	conns := s.allConns
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

func (s *rawServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.allConns = append(s.allConns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *rawServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	r := frame.NewReader(bufio.NewReader(c))
	for {
		f, err := r.Read()
		if err != nil {
			return
		}
		if f == nil { // a heart-beat
			continue
		}
		switch f.Command {
		case frame.CONNECT, frame.STOMP:
			s.mu.Lock()
			s.logins++
			s.mu.Unlock()
			s.write(c, []byte("CONNECTED\nversion:1.2\nheart-beat:500,0\nserver:raw\n\n\x00"))
			s.wg.Add(1)
			go s.beat(c)
		case frame.SUBSCRIBE:
			s.mu.Lock()
			s.conn = c
			s.subID = f.Header.Get(frame.Id)
			s.mu.Unlock()
			s.subbed <- struct{}{}
		case frame.ACK, frame.NACK:
			s.mu.Lock()
			if f.Command == frame.ACK {
				s.acks[f.Header.Get(frame.Id)] = true
			} else {
				s.nacks[f.Header.Get(frame.Id)] = true
			}
			s.mu.Unlock()
		case frame.DISCONNECT:
			if rc := f.Header.Get(frame.Receipt); rc != "" {
				s.write(c, []byte("RECEIPT\nreceipt-id:"+rc+"\n\n\x00"))
			}
			return
		}
	}
}

// beat sends a heart-beat (a newline) every 500 ms until c fails.
func (s *rawServer) beat(c net.Conn) {
	defer s.wg.Done()
	for {
		time.Sleep(500 * time.Millisecond)
		if s.write(c, []byte("\n")) != nil {
			return
		}
	}
}

func (s *rawServer) write(c net.Conn, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	_, err := c.Write(b)
	return err
}

// send writes raw bytes to the newest subscribed connection; the first
// "{sub}" in b becomes its subscription id.
func (s *rawServer) send(t *testing.T, b []byte) {
	t.Helper()
	s.mu.Lock()
	c, sub := s.conn, s.subID
	s.mu.Unlock()
	b = bytes.Replace(b, []byte("{sub}"), []byte(sub), 1)
	if c == nil {
		t.Fatal("raw STOMP server: no subscribed connection")
	}
	if err := s.write(c, b); err != nil {
		t.Fatalf("raw STOMP server: write: %v", err)
	}
}

func (s *rawServer) acked(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks[id] || s.nacks[id]
}

func (s *rawServer) loginCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// waitSubscribed waits for the next SUBSCRIBE.
func (s *rawServer) waitSubscribed(t *testing.T) {
	t.Helper()
	select {
	case <-s.subbed:
	case <-time.After(time.Minute):
		t.Fatal("the bridge never subscribed to the raw STOMP server")
	}
}

// stompHeader is one header line of a raw frame.
type stompHeader struct{ k, v string }

// messageFrame builds a MESSAGE frame with the platform's headers (topic,
// messageId, generateTime unless overridden in hdrs), ack id = messageId,
// and a content-length.
func messageFrame(id string, hdrs []stompHeader, body []byte) []byte {
	b := []byte(fmt.Sprintf("MESSAGE\nsubscription:{sub}\nmessage-id:%s\nack:%s\ndestination:/topic/#\nmessageId:%s\ngenerateTime:1700000000000\n", id, id, id))
	for _, h := range hdrs {
		b = append(b, h.k+":"+h.v+"\n"...)
	}
	b = append(b, fmt.Sprintf("content-length:%d\n\n", len(body))...)
	b = append(b, body...)
	return append(b, 0)
}
