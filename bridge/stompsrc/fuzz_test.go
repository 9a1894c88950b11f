package stompsrc

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
)

// FuzzMessageFrame feeds arbitrary bytes through the source's frame reader (wire) and
// toMessage, as a MESSAGE frame from the platform would go: nothing may
// panic, a base64 body is decoded exactly, and a body that is not base64 is
// marked Invalid and kept as received.
func FuzzMessageFrame(f *testing.F) {
	f.Add([]byte("MESSAGE\ndestination:/topic/#\ntopic:/pk/dev/user/t\nmessageId:1\ngenerateTime:1700000000000\nsubscription:0\n\naGVsbG8=\x00"), true)
	f.Add([]byte("MESSAGE\ndestination:/topic/a\nmessage-id:T_1\ncontent-length:3\n\n\x00\x01\x02\x00"), false)
	f.Add([]byte("MESSAGE\ntopic:/p\xff/d/user/x\ngenerateTime:soon\ntopic:again\n\n!!notbase64\x00"), true)
	f.Add([]byte("MESSAGE\n\n\x00"), true)
	f.Fuzz(func(t *testing.T, raw []byte, decode bool) {
		fr, err := readerWire(raw).read()
		if err != nil || fr == nil {
			return
		}
		m := toMessage(fr.Header, fr.Body, decode)
		if !decode {
			if !bytes.Equal(m.Body, fr.Body) || m.Invalid != "" {
				t.Fatalf("plain body changed: %q → %q (invalid %q)", fr.Body, m.Body, m.Invalid)
			}
			return
		}
		want, err := base64.StdEncoding.DecodeString(string(fr.Body))
		if err != nil {
			if m.Invalid == "" || !bytes.Equal(m.Body, fr.Body) {
				t.Fatalf("invalid base64 %q not flagged or not kept: %+v", fr.Body, m)
			}
			return
		}
		if m.Invalid != "" || !bytes.Equal(m.Body, want) {
			t.Fatalf("base64 %q decoded to %q, want %q (invalid %q)", fr.Body, m.Body, want, m.Invalid)
		}
	})
}

// FuzzWireMatchesGoStomp: where go-stomp's frame reader and the source's own
// (wire) both read a frame, they read the same command, headers and body.
func FuzzWireMatchesGoStomp(f *testing.F) {
	f.Add([]byte("MESSAGE\ndestination:/topic/#\ntopic:/pk/dev/user/t\nmessageId:1\n\naGVsbG8=\x00"))
	f.Add([]byte("MESSAGE\nk\\cx:a\\nb\ncontent-length:3\n\n\x00\x01\x02\x00"))
	f.Add([]byte("\n\r\nERROR\nmessage:bad\n\ndetails\x00"))
	f.Add([]byte("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\x00"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		want, err := frame.NewReader(bufio.NewReader(bytes.NewReader(raw))).Read()
		if err != nil || want == nil {
			return
		}
		got, err := readerWire(raw).read()
		if err != nil {
			return // refused: an unknown command, a size limit, an escape CONNECTED does not use
		}
		if got.Command == "CONNECTED" && bytes.ContainsRune(raw, '\\') {
			// STOMP 1.2: CONNECT and CONNECTED headers are not escaped, so
			// a backslash there is literal; go-stomp unescapes it anyway.
			return
		}
		if got.Command != want.Command || !bytes.Equal(got.Body, want.Body) || got.Header.Len() != want.Header.Len() {
			t.Fatalf("wire read %s %q %q, go-stomp %s %q %q", got.Command, got.Header, got.Body, want.Command, want.Header, want.Body)
		}
		for i := range got.Header.Len() {
			gk, gv := got.Header.GetAt(i)
			wk, wv := want.Header.GetAt(i)
			if gk != wk || gv != wv {
				t.Fatalf("header %d: wire %q:%q, go-stomp %q:%q", i, gk, gv, wk, wv)
			}
		}
	})
}
