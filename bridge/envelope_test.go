package bridge

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// decodedEnvelope is the JSON envelope as a consumer reads it.
type decodedEnvelope struct {
	Topic           *string         `json:"topic"`
	MessageID       *string         `json:"messageId"`
	GenerateTime    *int64          `json:"generateTime"`
	ProductKey      *string         `json:"productKey"`
	DeviceName      *string         `json:"deviceName"`
	PayloadEncoding string          `json:"payloadEncoding"`
	Payload         json.RawMessage `json:"payload"`
	PayloadBase64   *string         `json:"payloadBase64"`
}

// jsonRoundTrip is what encoding/json makes of s after a round trip (invalid
// UTF-8 becomes U+FFFD): the reference for the hand-written escaping.
func jsonRoundTrip(t testing.TB, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkEnvelope decodes out and checks every field against m.
func checkEnvelope(t testing.TB, m *Message, out []byte) decodedEnvelope {
	t.Helper()
	if !json.Valid(out) || !utf8.Valid(out) {
		t.Fatalf("envelope is not valid JSON in UTF-8: %q", out)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(out, &keys); err != nil {
		t.Fatalf("envelope is not a JSON object: %v: %q", err, out)
	}
	var e decodedEnvelope
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode envelope: %v: %q", err, out)
	}
	if e.Topic == nil || *e.Topic != jsonRoundTrip(t, m.Topic) {
		t.Errorf("topic = %v, want %q", e.Topic, m.Topic)
	}
	if e.MessageID == nil || *e.MessageID != jsonRoundTrip(t, m.MessageID) {
		t.Errorf("messageId = %v, want %q", e.MessageID, m.MessageID)
	}
	if m.GenerateTime == 0 {
		if e.GenerateTime != nil {
			t.Errorf("generateTime present for 0: %d", *e.GenerateTime)
		}
	} else if e.GenerateTime == nil || *e.GenerateTime != m.GenerateTime {
		t.Errorf("generateTime = %v, want %d", e.GenerateTime, m.GenerateTime)
	}
	pk, dn := DeviceFromTopic(m.Topic)
	for _, f := range []struct {
		name string
		got  *string
		want string
	}{{"productKey", e.ProductKey, pk}, {"deviceName", e.DeviceName, dn}} {
		switch {
		case f.want == "" && f.got != nil:
			t.Errorf("%s present for an empty value: %q", f.name, *f.got)
		case f.want != "" && (f.got == nil || *f.got != jsonRoundTrip(t, f.want)):
			t.Errorf("%s = %v, want %q", f.name, f.got, f.want)
		}
	}
	switch e.PayloadEncoding {
	case "json":
		if _, ok := keys["payloadBase64"]; ok {
			t.Errorf("both payload and payloadBase64 present")
		}
		if want := bytes.Trim(m.Body, " \t\r\n"); !bytes.Equal(e.Payload, want) {
			t.Errorf("payload = %q, want %q", e.Payload, want)
		}
	case "base64":
		if _, ok := keys["payload"]; ok {
			t.Errorf("both payload and payloadBase64 present")
		}
		if e.PayloadBase64 == nil {
			t.Fatalf("payloadBase64 missing: %q", out)
		}
		body, err := base64.StdEncoding.DecodeString(*e.PayloadBase64)
		if err != nil || !bytes.Equal(body, m.Body) {
			t.Errorf("payloadBase64 decodes to %q (%v), want %q", body, err, m.Body)
		}
	default:
		t.Errorf("payloadEncoding = %q, want json or base64", e.PayloadEncoding)
	}
	return e
}

func TestAppendEnvelopeJSON(t *testing.T) {
	tests := []struct {
		name     string
		m        Message
		encoding string
	}{
		{"json object body", Message{Topic: "/a1/dev-01/user/t", MessageID: "1234", GenerateTime: 1700000000123,
			Body: []byte(`{"temp":21.5,"ok":true}`)}, "json"},
		{"json body with spaces", Message{Topic: "/a1/dev-01/user/t", Body: []byte(" [1, 2]\n")}, "json"},
		{"json string body", Message{Topic: "/a1/d/user/t", Body: []byte(`"hello"`)}, "json"},
		{"json number body", Message{Topic: "/a1/d/user/t", Body: []byte(`42`)}, "json"},
		{"text body", Message{Topic: "/a1/d/user/t", Body: []byte("hello world")}, "base64"},
		{"binary body", Message{Topic: "/a1/d/user/t", Body: []byte{0, 1, 2, 0xff, 0xfe}}, "base64"},
		{"empty body", Message{Topic: "/a1/d/user/t"}, "base64"},
		{"truncated json", Message{Topic: "/a1/d/user/t", Body: []byte(`{"a":`)}, "base64"},
		{"json with invalid UTF-8 in a string", Message{Topic: "/a1/d/user/t", Body: []byte("{\"a\":\"\xff\"}")}, "base64"},
		{"status topic", Message{Topic: "/as/mqtt/status/a1/dev-01", Body: []byte(`{"status":"online"}`)}, "json"},
		{"sys topic", Message{Topic: "/sys/a1/dev-01/thing/event/property/post", Body: []byte(`{}`)}, "json"},
		{"empty topic", Message{MessageID: "x", Body: []byte(`{}`)}, "json"},
		{"negative generateTime", Message{Topic: "/t", GenerateTime: -5, Body: []byte(`{}`)}, "json"},
		{"topic needing escapes", Message{Topic: "/a\"b\\c/d\n\t\r\x00\x1f/e\u2028\u2029</>&", MessageID: "id\"\\", Body: []byte(`1`)}, "json"},
		{"topic with invalid UTF-8", Message{Topic: "/a\xff\xfe/d\xc3/user/é", MessageID: "\xff", Body: []byte(`1`)}, "json"},
		{"non-ASCII topic", Message{Topic: "/产品/设备/user/温度", Body: []byte(`{"温度":1}`)}, "json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			out, err := AppendEnvelope(prefix, EnvelopeJSON, &tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("AppendEnvelope did not append to dst: %q", out)
			}
			e := checkEnvelope(t, &tt.m, out[len(prefix):])
			if e.PayloadEncoding != tt.encoding {
				t.Errorf("payloadEncoding = %q, want %q", e.PayloadEncoding, tt.encoding)
			}
		})
	}
}

func TestAppendEnvelopeGolden(t *testing.T) {
	m := Message{Topic: "/a1/dev-01/user/t", MessageID: "42", GenerateTime: 1700000000000, Body: []byte(`{"v":1}`)}
	out, err := AppendEnvelope(nil, EnvelopeJSON, &m)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"topic":"/a1/dev-01/user/t","messageId":"42","generateTime":1700000000000,"productKey":"a1","deviceName":"dev-01","payloadEncoding":"json","payload":{"v":1}}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	m = Message{Topic: "/x", MessageID: "7", Body: []byte("hi")}
	out, _ = AppendEnvelope(nil, EnvelopeJSON, &m)
	want = `{"topic":"/x","messageId":"7","payloadEncoding":"base64","payloadBase64":"aGk="}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
}

func TestAppendEnvelopeRaw(t *testing.T) {
	m := Message{Topic: "/a/b/user/c", MessageID: "1", Body: []byte{0xff, 'x', 0}}
	for _, mode := range []string{EnvelopeRaw, ""} {
		out, err := AppendEnvelope([]byte("p"), mode, &m)
		if err != nil {
			t.Fatalf("mode %q: %v", mode, err)
		}
		if want := append([]byte("p"), m.Body...); !bytes.Equal(out, want) {
			t.Errorf("mode %q: got %q, want %q", mode, out, want)
		}
	}
}

func TestAppendEnvelopeUnknownMode(t *testing.T) {
	out, err := AppendEnvelope([]byte("p"), "xml", &Message{Body: []byte("b")})
	if err == nil || !strings.Contains(err.Error(), `unknown mode "xml"`) {
		t.Fatalf("err = %v, want unknown mode", err)
	}
	if string(out) != "p" {
		t.Errorf("dst changed on error: %q", out)
	}
}

// TestAppendJSONStringMatchesEncodingJSON compares the escaping with
// encoding/json's decoding of it, byte by byte over every single byte and
// some multi-byte cases.
func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	var inputs []string
	for c := 0; c < 256; c++ {
		inputs = append(inputs, string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"b")
	}
	inputs = append(inputs, "\u2028\u2029", "é", "\xe2\x80", "\xed\xa0\x80", "\U0001F600", "\xf0\x9f\x98")
	for _, s := range inputs {
		out := appendJSONString(nil, s)
		if !utf8.Valid(out) {
			t.Errorf("appendJSONString(%q) = %q: not valid UTF-8", s, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %q: not a JSON string: %v", s, out, err)
		}
		if want := jsonRoundTrip(t, s); got != want {
			t.Errorf("appendJSONString(%q) decodes to %q, encoding/json gives %q", s, got, want)
		}
	}
}

// FuzzEnvelope checks that the JSON envelope is always valid JSON and that
// the metadata and payload round-trip.
func FuzzEnvelope(f *testing.F) {
	f.Add("/a1/dev-01/user/t", "id-1", int64(1700000000000), []byte(`{"a":[1,2,{"b":null}]}`))
	f.Add("/sys/a1/d/thing/event/property/post", "", int64(0), []byte("not json"))
	f.Add("/as/mqtt/status/a1/\xff", "\"\\", int64(-1), []byte{0xff, 0})
	f.Add("", "\u2028", int64(1), []byte(" \"str\" "))
	f.Fuzz(func(t *testing.T, topic, id string, gen int64, body []byte) {
		m := Message{Topic: topic, MessageID: id, GenerateTime: gen, Body: body}
		out, err := AppendEnvelope(nil, EnvelopeJSON, &m)
		if err != nil {
			t.Fatal(err)
		}
		checkEnvelope(t, &m, out)
	})
}

// BenchmarkAppendEnvelope reports the cost of the JSON envelope for a
// typical 200-byte JSON body and a binary one, reusing the buffer.
func BenchmarkAppendEnvelope(b *testing.B) {
	jsonBody := []byte(`{"iotId":"4z819VQHk6VSLmmBJfrf00107ee200","productKey":"a1b2c3","deviceName":"dev-01","gmtCreate":1700000000000,"items":{"Temperature":{"value":21.5,"time":1700000000000}}}`)
	binBody := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 50)
	for _, bc := range []struct {
		name string
		mode string
		body []byte
	}{{"json/json-body", EnvelopeJSON, jsonBody}, {"json/binary-body", EnvelopeJSON, binBody}, {"raw", EnvelopeRaw, jsonBody}} {
		b.Run(bc.name, func(b *testing.B) {
			m := Message{Topic: "/a1b2c3/dev-01/user/telemetry", MessageID: "1700000000000123456", GenerateTime: 1700000000000, Body: bc.body}
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				var err error
				buf, err = AppendEnvelope(buf[:0], bc.mode, &m)
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
