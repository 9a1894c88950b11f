package mns

import (
	"reflect"
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
			ferr := scanReply([]byte(tt.in), &fast)
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
			if err := parseReply([]byte(tt.in), &got); err != nil || !reflect.DeepEqual(got, slow) {
				t.Errorf("parseReply = %+v, %v; want %+v", got, err, slow)
			}
		})
	}
	for _, bad := range []string{"", "<Messages>", "not xml", "<Other/>", "<Error><Code>X</Code>"} {
		var r reply
		if err := parseReply([]byte(bad), &r); err == nil {
			t.Errorf("parseReply(%q) accepted: %+v", bad, r)
		}
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(`<Messages><Message><MessageId>ID1</MessageId></Message></Messages>`)
	f.Add(`<Error><Code>X</Code><Message>a &amp; b</Message></Error>`)
	f.Fuzz(func(t *testing.T, in string) {
		var fast, slow reply
		if scanReply([]byte(in), &fast) != nil {
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
