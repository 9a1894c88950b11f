package amqpsrc

import (
	"encoding/base64"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
)

// Application property names the platform sets on every message.
const (
	propTopic        = "topic"
	propMessageID    = "messageId"
	propGenerateTime = "generateTime"
)

// deliveryMessage is toMessage of a delivery's message, or, for a message
// whose sections did not decode, its bytes as they came, Invalid with the
// reason: the pipeline dead-letters and settles it, where ending the
// connection would have the platform push it again, for ever.
func deliveryMessage(d *amqp10.Delivery) bridge.Message {
	if d.Malformed != nil {
		return bridge.Message{Body: d.Raw, Invalid: "AMQP message does not decode: " + d.Malformed.Error()}
	}
	return toMessage(&d.Message)
}

// toMessage maps an AMQP message onto the bridge's model. It never fails:
// a body that cannot be forwarded sets Message.Invalid with the reason, so
// that the pipeline dead-letters it.
//
// The body is the concatenation of the data sections, or an amqp-value that
// is a string or binary. topic, messageId and generateTime are read from the
// application properties whatever their AMQP type; the other application
// properties are kept as text. A missing messageId falls back to the
// message-id of the AMQP properties section.
func toMessage(m *amqp10.Message) bridge.Message {
	var out bridge.Message
	out.Body, out.Invalid = body(m)

	for _, kv := range m.ApplicationProperties {
		k, _ := kv.Key.(string) // the decoder refuses other keys
		v := kv.Value
		switch k {
		case propTopic:
			out.Topic = text(v)
		case propMessageID:
			out.MessageID = text(v)
		case propGenerateTime:
			ms, ok := millis(v)
			if ok {
				out.GenerateTime = ms
				continue
			}
			// Keep what we could not read, for the operator to see.
			setProp(&out, k, text(v))
		default:
			setProp(&out, k, text(v))
		}
	}
	if out.MessageID == "" && len(m.Properties) > 0 && m.Properties[0] != nil {
		out.MessageID = text(m.Properties[0]) // the properties section's message-id
	}
	return out
}

func setProp(m *bridge.Message, k, v string) {
	if m.Properties == nil {
		m.Properties = make(map[string]string)
	}
	m.Properties[k] = v
}

// body returns the payload, or the reason it cannot be forwarded together
// with a textual form of what arrived.
func body(m *amqp10.Message) ([]byte, string) {
	switch {
	case len(m.Data) == 1:
		return m.Data[0], ""
	case len(m.Data) > 1:
		n := 0
		for _, d := range m.Data {
			n += len(d)
		}
		b := make([]byte, 0, n)
		for _, d := range m.Data {
			b = append(b, d...)
		}
		return b, ""
	case len(m.Sequence) > 0:
		return []byte(fmt.Sprint(m.Sequence)), "AMQP body is an amqp-sequence section; only data sections or a string or binary amqp-value can be forwarded"
	}
	switch v := m.Value.(type) {
	case nil:
		return nil, ""
	case string:
		return []byte(v), ""
	case []byte:
		return v, ""
	case amqp10.Symbol:
		return []byte(v), ""
	default:
		return []byte(text(v)), fmt.Sprintf("AMQP body is an amqp-value of type %s; only data sections or a string or binary amqp-value can be forwarded", typeOf(v))
	}
}

// text renders an AMQP simple value as text: strings as they are, integers
// in decimal, binary as UTF-8 when it is, else base64, timestamps in
// RFC 3339 with milliseconds.
func text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case amqp10.Symbol:
		return string(v)
	case []byte:
		if utf8.Valid(v) {
			return string(v)
		}
		return base64.StdEncoding.EncodeToString(v)
	case time.Time:
		return v.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	case amqp10.Map:
		var b strings.Builder
		b.WriteString("map[")
		for i, kv := range v {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(text(kv.Key) + ":" + text(kv.Value))
		}
		b.WriteByte(']')
		return b.String()
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprint(v)
}

// typeOf names the type of an amqp-value body for the operator: the AMQP
// name of a compound, else the Go type it decoded to.
func typeOf(v any) string {
	switch v.(type) {
	case amqp10.Map:
		return "map"
	case amqp10.Array:
		return "array"
	case []any:
		return "list"
	case amqp10.Described:
		return "described"
	}
	return fmt.Sprintf("%T", v)
}

// millis reads a generateTime in epoch milliseconds from any integer type,
// an integral float64, a timestamp, or a string of digits.
func millis(v any) (int64, bool) {
	switch v := v.(type) {
	case time.Time:
		return v.UnixMilli(), true
	case string:
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	case []byte:
		n, err := strconv.ParseInt(string(v), 10, 64)
		return n, err == nil
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return r.Int(), true
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u := r.Uint(); u <= math.MaxInt64 {
			return int64(u), true
		}
	case reflect.Float64:
		if f := r.Float(); f == math.Trunc(f) && f >= math.MinInt64 && f < math.MaxInt64 {
			return int64(f), true
		}
	}
	return 0, false
}
