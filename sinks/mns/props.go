package mns

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// MNS message property limits (help doc "message properties"): the client
// refuses a message that breaks one before sending it, naming the message.
const (
	// MaxProperties is the most user properties on one message.
	MaxProperties = 50
	// MaxPropertyValueLen is the most characters of one value (for BINARY,
	// of its base64 text).
	MaxPropertyValueLen = 4096
	// MaxMessageSize is the most bytes of one message: the MessageBody text
	// plus every property's name, type and value.
	MaxMessageSize = 65536
)

// systemPropertyNames are the system properties a client may set (W3C
// trace context and baggage); the DLQ ones are the server's.
var systemPropertyNames = map[string]bool{"traceparent": true, "tracestate": true, "baggage": true}

// ErrPropertyInvalid is wrapped by the error for a message whose
// properties or MessageGroupId MNS would refuse. Such a message is never
// sent.
var ErrPropertyInvalid = errors.New("message property refused by the MNS rules")

// ErrMessageTooLarge is wrapped by the error for a message whose body text
// and properties together are over MaxMessageSize. Such a message is never
// sent.
var ErrMessageTooLarge error = &tooLargeError{"message body and properties over the MNS limit of 65536 bytes"}

// checkProps checks a message's properties and group id and returns the
// bytes they count toward the message size and the bytes they take in the
// XML request.
func checkProps(m *bridge.Outgoing) (size, xmlLen int, err error) {
	if len(m.Properties) > MaxProperties {
		return 0, 0, fmt.Errorf("%d user properties, MNS allows at most %d: %w", len(m.Properties), MaxProperties, ErrPropertyInvalid)
	}
	for i, p := range m.Properties {
		if err := ValidPropertyName(p.Name); err != nil {
			return 0, 0, fmt.Errorf("%v: %w", err, ErrPropertyInvalid)
		}
		for _, q := range m.Properties[:i] { // at most 50: a scan beats a map
			if q.Name == p.Name {
				return 0, 0, fmt.Errorf("property %q is set twice: %w", p.Name, ErrPropertyInvalid)
			}
		}
		xl, err := checkValue(p)
		if err != nil {
			return 0, 0, err
		}
		size += len(p.Name) + len(p.Value) + len(p.Type)
		xmlLen += xl + len(p.Name) + len(p.Type) + len("<PropertyValue><Name></Name><Value></Value><Type></Type></PropertyValue>")
	}
	for _, p := range m.SystemProperties {
		if !systemPropertyNames[p.Name] {
			return 0, 0, fmt.Errorf("system property %q: MNS takes only traceparent, tracestate and baggage from clients: %w", p.Name, ErrPropertyInvalid)
		}
		if p.Type != bridge.PropString {
			return 0, 0, fmt.Errorf("system property %q has type %q; system properties are STRING: %w", p.Name, p.Type, ErrPropertyInvalid)
		}
		xl, err := checkValue(p)
		if err != nil {
			return 0, 0, err
		}
		size += len(p.Name) + len(p.Value) + len(p.Type)
		xmlLen += xl + len(p.Name) + len(p.Type) + len("<SystemPropertyValue><Name></Name><Value></Value><Type></Type></SystemPropertyValue>")
	}
	if len(m.Properties) > 0 {
		xmlLen += len("<UserProperties></UserProperties>")
	}
	if len(m.SystemProperties) > 0 {
		xmlLen += len("<SystemProperties></SystemProperties>")
	}
	if m.GroupID != "" {
		_, xl, err := bodyText([]byte(m.GroupID), true)
		if err != nil {
			return 0, 0, fmt.Errorf("MessageGroupId %q is not XML text: %w", m.GroupID, ErrPropertyInvalid)
		}
		xmlLen += xl + len("<MessageGroupId></MessageGroupId>")
	}
	return size, xmlLen, nil
}

// checkValue checks a property value against its type and returns its
// escaped length.
func checkValue(p bridge.Property) (int, error) {
	bad := func(why string) error {
		return fmt.Errorf("property %q: %s: %w", p.Name, why, ErrPropertyInvalid)
	}
	if n := utf8.RuneCountInString(p.Value); n > MaxPropertyValueLen {
		return 0, bad(fmt.Sprintf("value is %d characters, MNS allows at most %d", n, MaxPropertyValueLen))
	}
	switch p.Type {
	case bridge.PropString:
	case bridge.PropNumber:
		if _, err := strconv.ParseFloat(p.Value, 64); err != nil {
			return 0, bad(fmt.Sprintf("NUMBER value %q is not a decimal number", p.Value))
		}
	case bridge.PropBoolean:
		if p.Value != "true" && p.Value != "false" {
			return 0, bad(fmt.Sprintf("BOOLEAN value %q is neither true nor false", p.Value))
		}
	case bridge.PropBinary:
		if _, err := base64.StdEncoding.DecodeString(p.Value); err != nil {
			return 0, bad("BINARY value is not standard padded base64")
		}
	default:
		return 0, bad(fmt.Sprintf("type %q is not STRING, NUMBER, BOOLEAN or BINARY", p.Type))
	}
	_, xl, err := bodyText([]byte(p.Value), true)
	if err != nil {
		return 0, bad("value is not text that XML 1.0 can carry")
	}
	return xl, nil
}

// appendProps appends the UserProperties, SystemProperties and
// MessageGroupId elements of m (each only when set).
func appendProps(dst []byte, m *bridge.Outgoing) []byte {
	if len(m.Properties) > 0 {
		dst = append(dst, "<UserProperties>"...)
		for _, p := range m.Properties {
			dst = appendProp(dst, "PropertyValue", p)
		}
		dst = append(dst, "</UserProperties>"...)
	}
	if len(m.SystemProperties) > 0 {
		dst = append(dst, "<SystemProperties>"...)
		for _, p := range m.SystemProperties {
			dst = appendProp(dst, "SystemPropertyValue", p)
		}
		dst = append(dst, "</SystemProperties>"...)
	}
	if m.GroupID != "" {
		dst = append(dst, "<MessageGroupId>"...)
		dst = appendText(dst, []byte(m.GroupID))
		dst = append(dst, "</MessageGroupId>"...)
	}
	return dst
}

func appendProp(dst []byte, elem string, p bridge.Property) []byte {
	dst = append(dst, '<')
	dst = append(dst, elem...)
	dst = append(dst, "><Name>"...)
	dst = append(dst, p.Name...) // checked: [A-Za-z0-9_.-]
	dst = append(dst, "</Name><Value>"...)
	dst = appendText(dst, []byte(p.Value))
	dst = append(dst, "</Value><Type>"...)
	dst = append(dst, p.Type...)
	dst = append(dst, "</Type></"...)
	dst = append(dst, elem...)
	return append(dst, '>')
}
