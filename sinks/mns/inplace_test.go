package mns

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// base64Text is the base64 text of a payload of size bytes of b.
func base64Text(b byte, size int) []byte {
	return []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, size)))
}

// TestLargeBase64BodyInPlaceArrivesWhole: large pre-encoded bodies, which
// the client sends in place rather than copying them into the request's
// XML, arrive exactly, beside small ones and properties, in one batch.
func TestLargeBase64BodyInPlaceArrivesWhole(t *testing.T) {
	f := newFixture(t, mnsemu.Config{}, nil)
	msgs := []bridge.Outgoing{
		{Body: base64Text(1, 100), Base64: true, ID: "small-1"},
		{Body: base64Text(2, 20<<10), Base64: true, ID: "large-2", Properties: []bridge.Property{{Name: "k", Value: "v", Type: bridge.PropString}}},
		{Body: base64Text(3, 10), Base64: true, ID: "small-3"},
		{Body: base64Text(4, 20<<10), Base64: true, ID: "large-4"},
	}
	_, errs := f.c.SendMessages(context.Background(), "q1", msgs)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	got := f.emu.Messages("q1")
	if len(got) != len(msgs) {
		t.Fatalf("stored %d messages, want %d", len(got), len(msgs))
	}
	for i, m := range got {
		if m.Body != string(msgs[i].Body) {
			t.Errorf("message %d stored with a body of %d bytes, not the %d sent", i, len(m.Body), len(msgs[i].Body))
		}
	}
	if p := got[1].UserProperties; len(p) != 1 || p[0].Name != "k" {
		t.Errorf("message 1 stored with properties %+v, want k=v", p)
	}
}

// TestLargeBase64BodyIsSentInPlace: a request does not copy a large
// pre-encoded base64 body (the platform's text, which the pipeline holds
// anyway) into its XML. Sending a 60 KB body allocates about as much as
// sending a 1 KB body (through net/http it was about 31 KB more: its 32 KB
// copy buffer while it writes a body of more than 4 KB); copied, it
// allocated 97 KB more, and each request in flight held the 64 KB copy.
func TestLargeBase64BodyIsSentInPlace(t *testing.T) {
	small := allocatedPerSend(t, base64Text(1, 1<<10))
	large := allocatedPerSend(t, base64Text(2, 45<<10))
	t.Logf("a send allocates %d bytes with a 1,368 byte body, %d with a 61,440 byte body", small, large)
	if int64(large)-int64(small) > 61440*3/4 {
		t.Errorf("a send with a 61,440 byte base64 body allocates %d bytes more than one with a small body: the body is copied", large-small)
	}
}

// allocatedPerSend returns the bytes allocated (by client and server
// together) per request sending body as one pre-encoded message to a
// server that reads it and answers 503.
func allocatedPerSend(t *testing.T, body []byte) uint64 {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	send := func() {
		_, errs := c.SendMessages(context.Background(), "q1", []bridge.Outgoing{{Body: body, Base64: true}})
		if errs[0] == nil {
			t.Fatal("accepted by a server answering 503")
		}
	}
	send() // the connection
	const n = 16
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		send()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / n
}

// TestRequestWaitingForItsReplyHoldsNoBody: once a request's XML has been
// written, the request lets go of it while it waits for the reply: 16
// requests of a 45 KB payload each (61 KB of base64 the client encodes),
// read whole by a server that then holds its reply, take about the heap
// that 16 requests of a 1 KB payload take. Before, each held its 61 KB of
// XML until the reply.
func TestRequestWaitingForItsReplyHoldsNoBody(t *testing.T) {
	// The least of three tries: memory freed by an earlier test during
	// one try cannot make it fail.
	diff := int64(1 << 62)
	for range 3 {
		small := heapPerRequestWaiting(t, 1<<10)
		large := heapPerRequestWaiting(t, 45<<10)
		t.Logf("a request waiting for its reply holds %d bytes of heap with a 1 KB payload, %d with a 45 KB payload", small, large)
		diff = min(diff, large-small)
	}
	if diff > 61440/4 {
		t.Errorf("a request waiting for its reply with a 45 KB payload holds %d bytes more than one with a 1 KB payload: it keeps its XML", diff)
	}
}

// heapPerRequestWaiting sends 16 messages with payloads of size bytes, one
// per request, to a server that reads each request whole and then holds
// its reply, and returns the heap each request takes meanwhile (the
// payloads excluded).
func heapPerRequestWaiting(t *testing.T, size int) int64 {
	const n = 16
	var read atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		read.Add(1)
		<-release
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk", MaxConns: n})
	if err != nil {
		t.Fatal(err)
	}
	payloads := make([][]byte, n)
	for i := range payloads {
		payloads[i] = bytes.Repeat([]byte{byte(i)}, size)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs := c.SendMessages(context.Background(), "q1", []bridge.Outgoing{{Body: payloads[i]}})
			if errs[0] == nil {
				t.Errorf("message %d: accepted by a server answering 503", i)
			}
		})
	}
	for read.Load() < n {
		runtime.Gosched()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	close(release)
	wg.Wait()
	return (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
}

// TestSentBodyRewindsUntilSent: until the body has been written, the
// transport can rewind it (GetBody) and send it whole again; afterwards
// GetBody refuses and the request's reader no longer holds the body (the
// request waiting for its reply lets go of it:
// TestRequestWaitingForItsReplyHoldsNoBody).
func TestSentBodyRewindsUntilSent(t *testing.T) {
	body := []byte("<Messages>0123456789</Messages>")
	br := bytes.NewReader(body)
	s := &sentBody{full: body, br: br}
	part := make([]byte, 5)
	if _, err := br.Read(part); err != nil {
		t.Fatal(err)
	}
	again, err := s.getBody()
	if err != nil {
		t.Fatalf("GetBody before the body was written: %v", err)
	}
	if b, _ := io.ReadAll(again); !bytes.Equal(b, body) {
		t.Fatalf("rewound body %q, want %q", b, body)
	}
	s.wrote(httptrace.WroteRequestInfo{Err: errors.New("broken pipe")})
	if _, err := s.getBody(); err != nil {
		t.Fatalf("GetBody after a failed write: %v", err)
	}
	s.wrote(httptrace.WroteRequestInfo{})
	if _, err := s.getBody(); err != errBodySent {
		t.Fatalf("GetBody once the body was written: %v, want errBodySent", err)
	}
	if br.Size() != 0 {
		t.Fatalf("the request's reader still holds %d bytes once the body was written", br.Size())
	}
}
