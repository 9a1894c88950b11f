package mns

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
)

// readReply reads one reply from br, its body whole into rb.buf (at most
// maxReplySize bytes). keepable says whether the connection may carry
// another request as far as the reply goes: it did not ask to close and
// its body was read to its end.
//
// MNS answers with a short head and a Content-Length; such a head is read
// in place (readPlainHead: no allocation but the request id's string).
// Every other form (chunked, close-delimited, HTTP/1.0, a folded or
// unusual header, a head longer than br's buffer) goes to net/http's
// parser from the same bytes: http.ReadResponse made about 12 objects a
// request (the Response, its Header map, a string per header) and canonical
// names for every header. FuzzReadReplyMatchesNetHTTP checks that both
// read the same from what the plain reader takes.
func readReply(br *bufio.Reader, rb *replyBuf) (status int, serverID string, keepable bool, err error) {
	rb.buf.Reset()
	h, ok := readPlainHead(br)
	if !ok {
		return readReplyNetHTTP(br, rb)
	}
	// The id first: it is in br's buffer, which reading the body refills;
	// the date of a refusal too (a success's is not kept: no allocation).
	serverID = string(h.requestID)
	keepDate(rb, h.status, h.date)
	br.Discard(h.size) // peeked: it is in the buffer
	if h.length > 0 {
		rb.buf.Grow(h.length)
		b := rb.buf.AvailableBuffer()[:h.length]
		if _, err := io.ReadFull(br, b); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // as net/http's body reader says it
			}
			return 0, "", false, fmt.Errorf("read reply: %w", err)
		}
		rb.buf.Write(b)
	}
	return h.status, serverID, !h.close, nil
}

// readReplyNetHTTP is readReply through http.ReadResponse.
func readReplyNetHTTP(br *bufio.Reader, rb *replyBuf) (status int, serverID string, keepable bool, err error) {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", false, fmt.Errorf("read reply: %w", err)
	}
	serverID = resp.Header.Get("X-Mns-Request-Id")
	keepDate(rb, resp.StatusCode, resp.Header.Get("Date"))
	if resp.ContentLength > 0 && resp.ContentLength <= maxReplySize {
		rb.buf.Grow(int(resp.ContentLength))
	}
	n, err := rb.buf.ReadFrom(io.LimitReader(resp.Body, maxReplySize))
	if err != nil {
		return 0, "", false, fmt.Errorf("read reply: %w", err)
	}
	// A reply cut at maxReplySize leaves the rest on the connection.
	return resp.StatusCode, serverID, !resp.Close && n < maxReplySize, nil
}

// keepDate keeps in rb.date the Date header of a refusal (status 400 or
// more: MNS's clock, against which a TimeExpired says how far this
// machine's is off), "" for a success, whose Date is not converted (the
// plain path allocates nothing for it).
func keepDate[T string | []byte](rb *replyBuf, status int, date T) {
	rb.date = ""
	if status >= 400 {
		rb.date = string(date)
	}
}

// plainHead is a reply head readPlainHead took: its length in br, the
// status, the Content-Length, whether it asked to close, and the
// x-mns-request-id and Date values (in br's buffer: copy them before br
// moves on).
type plainHead struct {
	size, status, length int
	close                bool
	requestID, date      []byte
}

// readPlainHead looks at the reply head at the start of br without taking
// it. ok is true for the plain form only: "HTTP/1.1 NNN ..." with a
// status of 200 to 599 but 204 and 304, lines ended by CRLF, header names
// of token characters and values of visible text, one Content-Length
// below maxReplySize, no Transfer-Encoding, a Connection of "close" or
// "keep-alive" alone, and the head within br's buffer. Anything else,
// including a head that is not whole when br's reader fails, is !ok, for
// net/http's parser to read (and name what is wrong) from the same bytes.
func readPlainHead(br *bufio.Reader) (h plainHead, ok bool) {
	// Peek until the first empty line (where net/http ends the head), or
	// until the buffer is full.
	var head []byte
	for n := 1; ; {
		p, err := br.Peek(n)
		if b := br.Buffered(); b > len(p) {
			p, _ = br.Peek(b)
		}
		end := headEnd(p)
		if end == -2 || end == -1 && (err != nil || len(p) >= br.Size()) {
			return h, false
		}
		if end >= 0 {
			head = p[:end]
			h.size = end + 2 // and the empty line
			break
		}
		n = len(p) + 1
	}
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	const proto = "HTTP/1.1 "
	if len(line) < len(proto)+3 || string(line[:len(proto)]) != proto || len(line) > len(proto)+3 && line[len(proto)+3] != ' ' {
		return h, false
	}
	for _, c := range line[len(proto) : len(proto)+3] {
		if c < '0' || c > '9' {
			return h, false
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 200 || h.status > 599 || h.status == 204 || h.status == 304 {
		return h, false
	}
	seenLength := false
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found || len(name) == 0 || !tokenOnly(name) {
			return h, false
		}
		value = bytes.Trim(value, " \t")
		if !visibleText(value) {
			return h, false
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if seenLength || len(value) == 0 || len(value) > 8 {
				return h, false
			}
			seenLength = true
			for _, c := range value {
				if c < '0' || c > '9' {
					return h, false
				}
				h.length = h.length*10 + int(c-'0')
			}
			if h.length >= maxReplySize {
				return h, false
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			return h, false
		case asciiEqualFold(name, "Connection"):
			switch {
			case asciiEqualFold(value, "close"):
				h.close = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return h, false
			}
		case asciiEqualFold(name, "X-Mns-Request-Id"):
			if h.requestID == nil {
				h.requestID = value
			}
		case asciiEqualFold(name, "Date"):
			if h.date == nil {
				h.date = value
			}
		}
	}
	return h, seenLength
}

// headEnd returns the length of the head at the start of p, up to and
// with the CRLF of its last line, when p holds the empty line that ends
// it; -1 when it does not yet; -2 when a line ends in a bare LF (not the
// plain form).
func headEnd(p []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			return -1
		}
		if j == 0 || p[i+j-1] != '\r' {
			return -2
		}
		if j == 1 {
			return i
		}
		i += j + 1
	}
}

func tokenOnly(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return true
}

func visibleText(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether b is s, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
