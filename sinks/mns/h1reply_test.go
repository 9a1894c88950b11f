package mns

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// replySeeds are reply forms the plain reader takes and ones it leaves to
// net/http.
var replySeeds = []string{
	"HTTP/1.1 201 Created\r\nx-mns-request-id: R1\r\nContent-Length: 5\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nServer: AliyunMNS\r\nContent-Type: text/xml;charset=utf-8\r\nContent-Length: 3\r\nConnection: keep-alive\r\nx-mns-request-id: 656E6F4A3A4F2D4B  \r\nx-mns-version: 2015-06-06\r\n\r\nabcNEXT",
	"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
	"HTTP/1.1 404\r\nX-MNS-REQUEST-ID:\tR2\r\nX-Mns-Request-Id: R3\r\ndate: Mon, 23 Nov 2026 01:00:00 GMT \r\nDate: x\r\ncontent-length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nx-mns-request-id: R4\r\nContent-Length: 600\r\n\r\n" + strings.Repeat("0123456789", 60),
	"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
	"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 2\r\n\r\nok",
	"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
	"HTTP/1.1 20x OK\r\nContent-Length: 2\r\n\r\nok",
	"HELLO THERE\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
	"",
}

// readerOf gives data through a small buffer, in pieces of one byte when
// oneByte, so that a head spans several reads and reading a long body
// refills the buffer the head was in.
func readerOf(data string, oneByte bool) *bufio.Reader {
	var r io.Reader = strings.NewReader(data)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	return bufio.NewReaderSize(r, 256)
}

// FuzzReadReplyMatchesNetHTTP: whatever reply the plain reader takes,
// net/http's parser reads the same from it: status, x-mns-request-id,
// whether the connection may be kept, the body, the error, and what is left
// on the connection after it.
func FuzzReadReplyMatchesNetHTTP(f *testing.F) {
	for _, s := range replySeeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data string, oneByte bool) {
		if _, ok := readPlainHead(readerOf(data, oneByte)); !ok {
			return
		}
		var rbA, rbB replyBuf
		brA, brB := readerOf(data, oneByte), readerOf(data, oneByte)
		stA, idA, keepA, errA := readReply(brA, &rbA)
		stB, idB, keepB, errB := readReplyNetHTTP(brB, &rbB)
		if (errA == nil) != (errB == nil) || errA != nil && errA.Error() != errB.Error() {
			t.Fatalf("%q: errors %v / net/http %v", data, errA, errB)
		}
		if errA != nil {
			return
		}
		if stA != stB || idA != idB || keepA != keepB || !bytes.Equal(rbA.buf.Bytes(), rbB.buf.Bytes()) || rbA.date != rbB.date {
			t.Fatalf("%q: got %d %q keep %v body %q date %q / net/http %d %q keep %v body %q date %q",
				data, stA, idA, keepA, rbA.buf.Bytes(), rbA.date, stB, idB, keepB, rbB.buf.Bytes(), rbB.date)
		}
		restA, _ := io.ReadAll(brA)
		restB, _ := io.ReadAll(brB)
		if !bytes.Equal(restA, restB) {
			t.Fatalf("%q: left %q / net/http left %q", data, restA, restB)
		}
	})
}

// TestReadReplyTakesPlainReplies: MNS's own reply form is read in place
// (the fast path is taken, not only correct when taken), and the forms it
// is not are read by net/http as before.
func TestReadReplyTakesPlainReplies(t *testing.T) {
	for i, s := range replySeeds {
		_, ok := readPlainHead(readerOf(s, false))
		if want := i < 6; ok != want {
			t.Errorf("%q: read in place %v, want %v", s, ok, want)
		}
	}
	var rb replyBuf
	st, id, keep, err := readReply(readerOf(replySeeds[1], true), &rb)
	if err != nil || st != 200 || id != "656E6F4A3A4F2D4B" || !keep || rb.buf.String() != "abc" {
		t.Errorf("got %d %q keep %v body %q, %v", st, id, keep, rb.buf.String(), err)
	}
	// A refusal's Date (MNS's clock, for a TimeExpired) is kept, the first
	// one as net/http's Get gives it.
	if st, _, _, err := readReply(readerOf(replySeeds[3], true), &rb); err != nil || st != 404 || rb.date != "Mon, 23 Nov 2026 01:00:00 GMT" {
		t.Errorf("a 404's date: %d %q, %v", st, rb.date, err)
	}
}

// TestReadReplyAllocations: reading a reply of MNS's form allocates its
// request id's string and nothing else (http.ReadResponse made about 12
// objects a reply).
func TestReadReplyAllocations(t *testing.T) {
	reply := replySeeds[1]
	src := strings.NewReader(reply)
	br := bufio.NewReaderSize(src, 4<<10)
	var rb replyBuf
	rb.buf.Grow(64)
	if n := testing.AllocsPerRun(100, func() {
		src.Reset(reply)
		br.Reset(src)
		if st, id, _, err := readReply(br, &rb); err != nil || st != 200 || id == "" {
			t.Fatalf("%d %q %v", st, id, err)
		}
	}); n > 1 {
		t.Errorf("reading a reply allocates %.1f objects, want 1", n)
	}
}
