package bridge

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Envelope modes: the shape of the body written to MNS.
const (
	// EnvelopeRaw writes the device payload as it is.
	EnvelopeRaw = "raw"
	// EnvelopeJSON wraps the payload in a JSON object with the message's
	// metadata, which a raw body loses.
	EnvelopeJSON = "json"
)

// AppendEnvelope appends the outgoing body for m to dst and returns the
// extended slice. mode "raw" (or "") appends the body as it is; mode "json"
// appends one JSON object:
//
//	{"topic":"/a1/dev-01/user/t","messageId":"123","generateTime":1700000000000,
//	 "productKey":"a1","deviceName":"dev-01","payloadEncoding":"json","payload":{...}}
//
// "topic" and "messageId" are always present; "generateTime" is omitted when
// 0; "productKey" and "deviceName" (from DeviceFromTopic) are omitted when
// empty. A body that is valid JSON in valid UTF-8 is inlined as "payload"
// with "payloadEncoding":"json"; any other body (including an empty one) is
// written as "payloadBase64" (standard encoding, padded) with
// "payloadEncoding":"base64". Strings are escaped as encoding/json does
// (invalid UTF-8 becomes U+FFFD), so the output is always valid JSON.
//
// It is safe for concurrent use and does not retain m. The only error is an
// unknown mode.
func AppendEnvelope(dst []byte, mode string, m *Message) ([]byte, error) {
	switch mode {
	case EnvelopeRaw, "":
		return append(dst, m.Body...), nil
	case EnvelopeJSON:
	default:
		return dst, fmt.Errorf("envelope: unknown mode %q: use %q or %q", mode, EnvelopeRaw, EnvelopeJSON)
	}
	return planEnvelope(m).append(dst, m), nil
}

// jsonEnvelope is the plan of m's JSON envelope: whether the payload is
// inlined and how long the envelope is. The pipeline keeps the plan of a
// held message, not the envelope, and writes the envelope only for each
// request: a held message then costs its payload, not its payload and its
// envelope.
type jsonEnvelope struct {
	inline bool // the payload is valid JSON in valid UTF-8
	size   int  // len of the envelope
}

// planEnvelope scans m's body once and returns its JSON envelope's plan.
func planEnvelope(m *Message) jsonEnvelope {
	e := jsonEnvelope{inline: utf8.Valid(m.Body) && json.Valid(m.Body)}
	var scratch [256]byte
	head := e.appendHead(scratch[:0], m)
	if e.inline {
		e.size = len(head) + len(m.Body) + 1
	} else {
		e.size = len(head) + base64.StdEncoding.EncodedLen(len(m.Body)) + 2
	}
	return e
}

// append appends m's JSON envelope (as AppendEnvelope describes it) to dst.
func (e jsonEnvelope) append(dst []byte, m *Message) []byte {
	dst = e.appendHead(dst, m)
	if e.inline {
		dst = append(dst, m.Body...)
	} else {
		dst = base64.StdEncoding.AppendEncode(dst, m.Body)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// appendHead appends everything before the payload.
func (e jsonEnvelope) appendHead(dst []byte, m *Message) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendJSONString(dst, m.Topic)
	dst = append(dst, `,"messageId":`...)
	dst = appendJSONString(dst, m.MessageID)
	if m.GenerateTime != 0 {
		dst = append(dst, `,"generateTime":`...)
		dst = strconv.AppendInt(dst, m.GenerateTime, 10)
	}
	pk, dn := DeviceFromTopic(m.Topic)
	if pk != "" {
		dst = append(dst, `,"productKey":`...)
		dst = appendJSONString(dst, pk)
	}
	if dn != "" {
		dst = append(dst, `,"deviceName":`...)
		dst = appendJSONString(dst, dn)
	}
	if e.inline {
		return append(dst, `,"payloadEncoding":"json","payload":`...)
	}
	return append(dst, `,"payloadEncoding":"base64","payloadBase64":"`...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a quoted JSON string: '"', '\\' and control
// characters are escaped, as are U+2028 and U+2029 (for JavaScript
// consumers); each byte of invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
