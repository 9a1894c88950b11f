package mns

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"testing"
)

// cannedMNS answers every BatchSendMessage on a connection with the reply
// it made for the first one (the MD5s of its bodies), reading requests into
// one buffer: after the first request it allocates nothing, so a count of
// the process's allocations is the client's.
func cannedMNS(tb testing.TB) string {
	return "http://" + serveLoopback(tb, serveCanned)
}

// serveLoopback runs serve for every connection to a loopback listener,
// closed when tb ends, and returns its address.
func serveLoopback(tb testing.TB, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func serveCanned(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	var reply []byte
	have := 0
	for {
		end := bytes.Index(buf[:have], []byte("\r\n\r\n"))
		if end < 0 {
			n, err := c.Read(buf[have:])
			if err != nil {
				return
			}
			have += n
			continue
		}
		head := buf[:end]
		length := 0
		if i := bytes.Index(head, []byte("Content-Length: ")); i >= 0 {
			v := head[i+len("Content-Length: "):]
			if j := bytes.IndexByte(v, '\r'); j >= 0 {
				v = v[:j]
			}
			length, _ = strconv.Atoi(string(v))
		}
		total := end + 4 + length
		for have < total {
			n, err := c.Read(buf[have:])
			if err != nil {
				return
			}
			have += n
		}
		if reply == nil {
			reply = cannedReply(buf[end+4 : total])
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
		have = copy(buf, buf[total:have])
	}
}

func cannedReply(body []byte) []byte {
	var x bytes.Buffer
	x.WriteString(`<?xml version="1.0" encoding="UTF-8"?><Messages xmlns="http://mns.aliyuncs.com/doc/v1/">`)
	for i := 0; ; i++ {
		_, after, ok := bytes.Cut(body, []byte("<MessageBody>"))
		if !ok {
			break
		}
		text, rest, _ := bytes.Cut(after, []byte("</MessageBody>"))
		sum := md5.Sum(text)
		fmt.Fprintf(&x, "<Message><MessageId>5F290C926D472878-2-14D9529%04X-0000000%d</MessageId><MessageBodyMD5>%s</MessageBodyMD5></Message>",
			i, i, hex.EncodeToString(sum[:]))
		body = rest
	}
	x.WriteString("</Messages>")
	return fmt.Appendf(nil, "HTTP/1.1 201 Created\r\nServer: AliyunMNS\r\nContent-Type: text/xml;charset=utf-8\r\nContent-Length: %d\r\nConnection: keep-alive\r\nx-mns-request-id: 656E6F4A3A4F2D4B00000001\r\nx-mns-version: 2015-06-06\r\n\r\n%s", x.Len(), x.Bytes())
}

// BenchmarkBatchRequest is one BatchSendMessage of n messages of 256 bytes
// from one sender, against a server that allocates nothing: allocs/op and
// B/op are the client's whole request (the XML, the signature, the
// exchange, the reply). n 1 is a request at a low rate (a message a
// request); 16 is a full batch.
func BenchmarkBatchRequest(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			send := cannedBatch(b, n)
			b.ReportAllocs()
			for b.Loop() {
				send()
			}
		})
	}
}

// cannedBatch returns a function that sends a batch of n messages of 256
// bytes to cannedMNS, failing tb if any send fails.
func cannedBatch(tb testing.TB, n int) func() {
	c, err := newClient(Config{Endpoint: cannedMNS(tb), AccessKeyID: "ak", AccessKeySecret: "sk", MaxConns: 1})
	if err != nil {
		tb.Fatal(err)
	}
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = bytes.Repeat([]byte{byte('a' + i)}, 256)
	}
	return func() {
		if _, errs := c.BatchSendMessage(context.Background(), "q", bodies); errs[0] != nil {
			tb.Fatal(errs[0])
		}
	}
}

// TestBatchRequestAllocations pins what a whole BatchSendMessage of 16
// messages allocates on the client's own exchange (BenchmarkBatchRequest):
// 49 objects before the signing state was kept between requests and the
// reply head was read in place (96936b6, 2a0708e).
func TestBatchRequestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("not counting allocations under the race detector (sync.Pool drops items there)")
	}
	if n := testing.AllocsPerRun(50, cannedBatch(t, MaxBatchCount)); n > 26 {
		t.Errorf("a request of 16 messages allocates %.0f objects, want at most 26", n)
	}
}
