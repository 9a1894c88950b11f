package mns

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The fast scanner and the encoding/xml fallback read every reply the same
// way; the scanner gives up on what it does not handle.
func TestParseReplyMatchesEncodingXML(t *testing.T) {
	tests := []struct {
		name string
		in   string
		fast bool // the scanner handles it
	}{
		{"batch", `<?xml version="1.0" encoding="UTF-8"?>
<Messages xmlns="http://mns.aliyuncs.com/doc/v1/">
  <Message><MessageId>ID1</MessageId><MessageBodyMD5>ABC</MessageBodyMD5></Message>
  <Message><ErrorCode>InternalError</ErrorCode><ErrorMessage>a &amp; b &lt;c&gt;</ErrorMessage></Message>
</Messages>`, true},
		{"batch plain", `<Messages><Message><MessageId>ID1</MessageId><MessageBodyMD5>ABC</MessageBodyMD5><ReceiptHandle>1-x==</ReceiptHandle></Message><Message><ErrorCode>E</ErrorCode><ErrorMessage>m &#65;&#x42;</ErrorMessage></Message></Messages>`, true},
		{"single", `<Message xmlns='http://mns.aliyuncs.com/doc/v1/'><MessageId>X</MessageId><MessageBodyMD5/></Message>`, true},
		{"error", `<?xml version="1.0"?><Error xmlns="http://mns.aliyuncs.com/doc/v1/"><Code>QueueNotExist</Code><Message>The queue name you provided is not exist.</Message><RequestId>R1</RequestId><HostId>http://h</HostId></Error>`, true},
		{"comment", `<Error><!-- c --><Code>X</Code></Error>`, false},
		{"cdata", `<Error><Code><![CDATA[X]]></Code></Error>`, false},
		{"prefix", `<m:Error xmlns:m="http://mns.aliyuncs.com/doc/v1/"><m:Code>X</m:Code></m:Error>`, false},
		{"utf8", `<Error><Code>X</Code><Message>队列不存在</Message></Error>`, false},
		{"crlf", "<Error><Code>X</Code><Message>a\r\nb</Message></Error>", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fast, slow reply
			ferr := scanReply([]byte(tt.in), &fast, new(idText))
			if (ferr == nil) != tt.fast {
				t.Fatalf("scanReply err = %v, want fast=%v", ferr, tt.fast)
			}
			if err := decodeReply([]byte(tt.in), &slow); err != nil {
				t.Fatal(err)
			}
			if ferr == nil && !reflect.DeepEqual(fast, slow) {
				t.Errorf("scanner %+v\nencoding/xml %+v", fast, slow)
			}
			var got reply
			if err := parseReply([]byte(tt.in), &got, new(idText)); err != nil || !reflect.DeepEqual(got, slow) {
				t.Errorf("parseReply = %+v, %v; want %+v", got, err, slow)
			}
		})
	}
	for _, bad := range []string{"", "<Messages>", "not xml", "<Other/>", "<Error><Code>X</Code>"} {
		var r reply
		if err := parseReply([]byte(bad), &r, new(idText)); err == nil {
			t.Errorf("parseReply(%q) accepted: %+v", bad, r)
		}
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(`<Messages><Message><MessageId>ID1</MessageId></Message></Messages>`)
	f.Add(`<Error><Code>X</Code><Message>a &amp; b</Message></Error>`)
	f.Fuzz(func(t *testing.T, in string) {
		var fast, slow reply
		if scanReply([]byte(in), &fast, new(idText)) != nil {
			return
		}
		if err := decodeReply([]byte(in), &slow); err != nil {
			t.Fatalf("scanner accepted what encoding/xml refuses (%v): %q", err, in)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("differ on %q:\n%+v\n%+v", in, fast, slow)
		}
	})
}

// A batch reply's MessageIds and MessageBodyMD5s share one string: parsing
// the reply of a full batch allocates once, not once a message.
func TestParseBatchReplyAllocatesOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?><Messages xmlns="http://mns.aliyuncs.com/doc/v1/">`)
	for i := range MaxBatchCount {
		fmt.Fprintf(&b, `<Message><MessageId>5F8F2E1A9C3B4D6E-1-1%02d</MessageId><MessageBodyMD5>C5DD56A39F5F7BB8B3337C6D11B6D8%02d</MessageBodyMD5></Message>`, i, i)
	}
	b.WriteString(`</Messages>`)
	data := []byte(b.String())
	var r reply
	var ids idText
	if err := parseReply(data, &r, &ids); err != nil || len(r.entries) != MaxBatchCount {
		t.Fatalf("parseReply: %v, %d entries", err, len(r.entries))
	}
	if e := r.entries[7]; e.MessageID != "5F8F2E1A9C3B4D6E-1-107" || e.BodyMD5 != "C5DD56A39F5F7BB8B3337C6D11B6D807" {
		t.Fatalf("entry 7 = %+v", e)
	}
	if n := testing.AllocsPerRun(100, func() { _ = parseReply(data, &r, &ids) }); n > 1 {
		t.Errorf("parsing a reply of %d messages allocates %v times, want 1", MaxBatchCount, n)
	}
}
