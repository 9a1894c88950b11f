package amqpsrc

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
)

func TestToMessageBody(t *testing.T) {
	tests := []struct {
		name    string
		msg     *amqp10.Message
		body    string
		invalid string // substring of Message.Invalid; "" means valid
	}{
		{"one data section", &amqp10.Message{Data: [][]byte{[]byte(`{"a":1}`)}}, `{"a":1}`, ""},
		{"data sections concatenated", &amqp10.Message{Data: [][]byte{[]byte("ab"), []byte("c"), nil, []byte("d")}}, "abcd", ""},
		{"binary data kept", &amqp10.Message{Data: [][]byte{{0x00, 0xff, 0x10}}}, "\x00\xff\x10", ""},
		{"string value", &amqp10.Message{Value: "hello"}, "hello", ""},
		{"binary value", &amqp10.Message{Value: []byte{1, 2}}, "\x01\x02", ""},
		{"symbol value", &amqp10.Message{Value: amqp10.Symbol("sym")}, "sym", ""},
		{"no body", &amqp10.Message{}, "", ""},
		{"map value", &amqp10.Message{Value: amqp10.Map{{Key: "k", Value: "v"}}, HasValue: true}, "map[k:v]", "amqp-value of type map"},
		{"integer value", &amqp10.Message{Value: int64(7)}, "7", "amqp-value of type int64"},
		{"sequence", &amqp10.Message{Sequence: [][]any{{"a", int32(1)}}}, "[[a 1]]", "amqp-sequence"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := toMessage(tc.msg)
			if string(m.Body) != tc.body {
				t.Errorf("Body = %q, want %q", m.Body, tc.body)
			}
			switch {
			case tc.invalid == "" && m.Invalid != "":
				t.Errorf("Invalid = %q, want valid", m.Invalid)
			case tc.invalid != "" && !strings.Contains(m.Invalid, tc.invalid):
				t.Errorf("Invalid = %q, want it to mention %q", m.Invalid, tc.invalid)
			}
		})
	}
}

func TestToMessageProperties(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)
	uuid := amqp10.UUID{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8}
	tests := []struct {
		name  string
		props map[string]any
		msgID any // AMQP properties message-id, nil for none
		want  bridge.Message
	}{
		{
			name:  "platform types: strings and int64",
			props: map[string]any{"topic": "/pk/dn/user/up", "messageId": "1780000000000000001", "generateTime": int64(1700000000123)},
			want:  bridge.Message{Topic: "/pk/dn/user/up", MessageID: "1780000000000000001", GenerateTime: 1700000000123},
		},
		{
			name:  "messageId int64, generateTime digits",
			props: map[string]any{"topic": "/as/mqtt/status/pk/dn", "messageId": int64(1780000000000000002), "generateTime": "1700000000456"},
			want:  bridge.Message{Topic: "/as/mqtt/status/pk/dn", MessageID: "1780000000000000002", GenerateTime: 1700000000456},
		},
		{
			name:  "messageId uint64 and generateTime uint64",
			props: map[string]any{"messageId": uint64(math.MaxUint64), "generateTime": uint64(1700000000789)},
			want:  bridge.Message{MessageID: "18446744073709551615", GenerateTime: 1700000000789},
		},
		{
			name:  "int32, uint32, int16, uint16, int8, uint8",
			props: map[string]any{"messageId": int32(-5), "generateTime": uint32(4000000000), "a": int16(-3), "b": uint16(3), "c": int8(-1), "d": uint8(255)},
			want:  bridge.Message{MessageID: "-5", GenerateTime: 4000000000, Properties: map[string]string{"a": "-3", "b": "3", "c": "-1", "d": "255"}},
		},
		{
			name:  "generateTime int32 and binary topic",
			props: map[string]any{"topic": []byte("/pk/dn/thing/event/property/post"), "generateTime": int32(12345)},
			want:  bridge.Message{Topic: "/pk/dn/thing/event/property/post", GenerateTime: 12345},
		},
		{
			name:  "generateTime as timestamp and integral double",
			props: map[string]any{"generateTime": ts, "x": float64(2.5)},
			want:  bridge.Message{GenerateTime: ts.UnixMilli(), Properties: map[string]string{"x": "2.5"}},
		},
		{
			name:  "generateTime integral double",
			props: map[string]any{"generateTime": float64(1700000000000)},
			want:  bridge.Message{GenerateTime: 1700000000000},
		},
		{
			name:  "unreadable generateTime kept as a property",
			props: map[string]any{"generateTime": "yesterday"},
			want:  bridge.Message{Properties: map[string]string{"generateTime": "yesterday"}},
		},
		{
			name:  "uint64 generateTime over int64 kept as a property",
			props: map[string]any{"generateTime": uint64(math.MaxUint64)},
			want:  bridge.Message{Properties: map[string]string{"generateTime": "18446744073709551615"}},
		},
		{
			name:  "fractional double generateTime kept as a property",
			props: map[string]any{"generateTime": float64(1700000000000.5)},
			want:  bridge.Message{Properties: map[string]string{"generateTime": "1.7000000000005e+12"}},
		},
		{
			name:  "generateTime int16",
			props: map[string]any{"generateTime": int16(-7)},
			want:  bridge.Message{GenerateTime: -7},
		},
		{
			name:  "generateTime uint8",
			props: map[string]any{"generateTime": uint8(200)},
			want:  bridge.Message{GenerateTime: 200},
		},
		{
			name: "other properties as text",
			props: map[string]any{
				"qos": int32(1), "flag": true, "when": ts, "id": uuid, "bin": []byte{0xff, 0xfe},
				"sym": amqp10.Symbol("s"), "f32": float32(1.5), "null": nil,
			},
			want: bridge.Message{Properties: map[string]string{
				"qos": "1", "flag": "true", "when": "2024-05-06T07:08:09.123Z", "id": "12345678-9abc-def0-0102-030405060708",
				"bin": "//4=", "sym": "s", "f32": "1.5", "null": "",
			}},
		},
		{
			name:  "message-id from the properties section when the application property is absent",
			props: map[string]any{"topic": "/t"},
			msgID: uint64(42),
			want:  bridge.Message{Topic: "/t", MessageID: "42"},
		},
		{
			name:  "application property wins over the properties section",
			props: map[string]any{"messageId": "app"},
			msgID: "section",
			want:  bridge.Message{MessageID: "app"},
		},
		{
			name: "no properties at all",
			want: bridge.Message{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := &amqp10.Message{}
			for k, v := range tc.props {
				in.ApplicationProperties = append(in.ApplicationProperties, amqp10.KV{Key: k, Value: v})
			}
			if tc.msgID != nil {
				in.Properties = []any{tc.msgID}
			}
			got := toMessage(in)
			got.Body = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("toMessage = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestToMessageWireTypes sends properties through go-amqp's encoding (an
// independent peer) and the own decoder, so the types are the ones a
// receiver really sees.
func TestToMessageWireTypes(t *testing.T) {
	in := &amqp.Message{
		Data: [][]byte{[]byte("part1-"), []byte("part2")},
		ApplicationProperties: map[string]any{
			"topic": "/pk/dn/user/up", "messageId": int64(99), "generateTime": int64(1700000000001), "qos": int32(0),
		},
	}
	wire, err := in.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := amqp10.DecodeMessage(wire)
	if err != nil {
		t.Fatal(err)
	}
	got := toMessage(out)
	want := bridge.Message{
		Topic: "/pk/dn/user/up", MessageID: "99", GenerateTime: 1700000000001,
		Body: []byte("part1-part2"), Properties: map[string]string{"qos": "0"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("toMessage = %+v\nwant %+v", got, want)
	}
}

// TestMalformedMessageIsInvalid: a delivery whose message did not decode
// goes on as its bytes, Invalid with the reason (dead-lettered and settled
// by the pipeline), not as an error that would drop the connection; a good
// delivery is toMessage of its message.
func TestMalformedMessageIsInvalid(t *testing.T) {
	bad := &amqp10.Delivery{ID: 7, Malformed: errors.New("delivery 7: message section 0x75 is a string"), Raw: []byte{0, 0x53, 0x75}}
	got := deliveryMessage(bad)
	if string(got.Body) != string(bad.Raw) || !strings.Contains(got.Invalid, "AMQP message does not decode") ||
		!strings.Contains(got.Invalid, "section 0x75") {
		t.Errorf("malformed delivery: %+v, want its bytes, invalid with the reason", got)
	}
	good := &amqp10.Delivery{ID: 8, Message: amqp10.Message{Data: [][]byte{[]byte("b")}}}
	if got := deliveryMessage(good); string(got.Body) != "b" || got.Invalid != "" {
		t.Errorf("good delivery: %+v", got)
	}
}

// TestOddTextIsItsBytes: a string that is not UTF-8 or a symbol that is not
// ASCII (which go-amqp, the bridge's earlier client, took as they came) does
// not make the message invalid: it decodes, and the property carries its
// bytes as go-amqp's path gave them. MNS gets such a property only when
// platform_properties names it, and then the MNS sink's rule for a value
// XML cannot carry dead-letters the message with the property's name.
func TestOddTextIsItsBytes(t *testing.T) {
	raw, err := amqp10.AppendMessage(nil, &amqp10.Message{ApplicationProperties: amqp10.Map{
		{Key: "topic", Value: "/pk/dn\xff/user/up"}, {Key: "messageId", Value: "odd"},
		{Key: "kind", Value: amqp10.Symbol("caf\xe9")}},
		Data: [][]byte{[]byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := amqp10.DecodeMessage(raw)
	if err != nil {
		t.Fatalf("decode: %v; want the odd text taken as its bytes", err)
	}
	got := deliveryMessage(&amqp10.Delivery{Message: *m})
	if got.Invalid != "" || got.Topic != "/pk/dn\xff/user/up" || got.MessageID != "odd" ||
		got.Properties["kind"] != "caf\xe9" || string(got.Body) != "b" {
		t.Errorf("toMessage = %+v, want it valid with every value as its bytes", got)
	}
}
