package mns

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// MaxNameLen is the longest MNS queue or topic name.
const MaxNameLen = 120

// NameRules are the MNS rules for queue and topic names, message tags and
// property names, as the router applies them to route templates and rendered
// routes. They live here only: the router, the config validation and the
// client take them from here.
var NameRules = bridge.NameRules{Name: ValidName, Tag: ValidTag, Property: ValidPropertyName}

// ValidName reports whether name is a valid MNS queue or topic name: 1 to
// 120 characters, ASCII letters, digits and '-', starting with a letter or a
// digit. The error is the reason only ("it must start with a letter or
// digit"): callers name the field and quote the name.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("it is empty: MNS queue and topic names have 1 to %d characters", MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("it is %d characters long, the limit is %d", utf8.RuneCountInString(name), MaxNameLen)
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		case c == '-':
			return errors.New("it must start with a letter or digit")
		default:
			return fmt.Errorf("letters, digits and '-' only, not %q", c)
		}
	}
	return nil
}

// ValidTag reports whether tag is a valid MNS message tag: valid UTF-8, at
// most MaxTagLen characters, no control characters and none that XML 1.0
// cannot carry (the request writes the tag as XML text); "" is no tag. It
// is the one tag rule: the router applies it to routes (NameRules) and the
// client to every message it publishes. The error is the reason only
// (callers name the field and quote the tag); a tag too long is
// ErrTagTooLong (errors.Is).
func ValidTag(tag string) error {
	if !utf8.ValidString(tag) {
		return errors.New("it is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(tag); n > MaxTagLen {
		return tagTooLong(n)
	}
	for _, c := range tag {
		if unicode.IsControl(c) {
			return fmt.Errorf("it must not contain control characters, has %q", c)
		}
		if !isXMLChar(c) {
			return fmt.Errorf("it has %q, which XML 1.0 cannot carry", c)
		}
	}
	return nil
}

// tagTooLong is ValidTag's reason for a tag of that many characters, over
// MaxTagLen; it is ErrTagTooLong.
type tagTooLong int

func (n tagTooLong) Error() string {
	return fmt.Sprintf("it is %d characters long, the limit is %d", int(n), MaxTagLen)
}

func (tagTooLong) Is(target error) bool { return target == ErrTagTooLong }

// MaxPropertyNameLen is the longest MNS property name.
const MaxPropertyNameLen = 256

// ValidPropertyName reports whether n is a valid MNS message property name: 1
// to 256 characters of A-Z a-z 0-9 _ . -, not starting or ending with '.',
// no "..". It is the one property-name rule: the router applies it to route
// properties (NameRules), the config to the platform properties' names and
// the client to every message it sends. Unlike ValidName's, its error names
// the property ("property name \"a..b\" contains \"..\"").
func ValidPropertyName(n string) error {
	switch {
	case n == "":
		return errors.New("property name is empty")
	case len(n) > MaxPropertyNameLen:
		return fmt.Errorf("property name %.20q... is %d characters; MNS allows at most %d", n, len(n), MaxPropertyNameLen)
	case n[0] == '.' || n[len(n)-1] == '.':
		return fmt.Errorf("property name %q starts or ends with '.'", n)
	case strings.Contains(n, ".."):
		return fmt.Errorf("property name %q contains \"..\"", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("property name %q has %q: MNS allows letters, digits, '_', '.' and '-'", n, c)
		}
	}
	return nil
}
