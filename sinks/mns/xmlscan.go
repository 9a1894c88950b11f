package mns

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// This file is a deliberately small XML tokenizer for the shapes MNS uses:
// an optional declaration, elements with an optional default-namespace
// attribute, and ASCII text with the five predefined entities and character
// references. Anything else (comments, CDATA, prefixes, other attributes,
// non-ASCII or control characters, CR) makes it give up with errUnusual, and
// the caller falls back to encoding/xml, which handles XML in full. It never
// accepts a document that encoding/xml would read differently.

var errUnusual = errors.New("xml: outside the fast path")

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokStart
	tokEnd
	tokText
)

type token struct {
	kind  tokKind
	name  []byte // element name (start, end)
	text  []byte // unescaped text; may alias the input
	ns    []byte // value of xmlns on a start tag
	hasNS bool
	empty bool // a self-closing start tag; no end token follows
}

type scanner struct {
	b []byte
	i int
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// next reads one token into t.
func (s *scanner) next(t *token) error {
	*t = token{}
	b := s.b
	if s.i >= len(b) {
		t.kind = tokEOF
		return nil
	}
	if b[s.i] != '<' {
		j := bytes.IndexByte(b[s.i:], '<')
		var raw []byte
		if j < 0 {
			raw, s.i = b[s.i:], len(b)
		} else {
			raw, s.i = b[s.i:s.i+j], s.i+j
		}
		txt, err := unescape(raw)
		t.kind, t.text = tokText, txt
		return err
	}
	if s.i+1 >= len(b) {
		return errUnusual
	}
	switch b[s.i+1] {
	case '?':
		if s.i != 0 {
			return errUnusual
		}
		j := bytes.Index(b[s.i:], []byte("?>"))
		if j < 0 {
			return errUnusual
		}
		s.i += j + 2
		return s.next(t)
	case '!':
		return errUnusual
	case '/':
		name, i := scanName(b, s.i+2)
		i = skipSpace(b, i)
		if len(name) == 0 || i >= len(b) || b[i] != '>' {
			return errUnusual
		}
		t.kind, t.name = tokEnd, name
		s.i = i + 1
		return nil
	}
	name, i := scanName(b, s.i+1)
	if len(name) == 0 {
		return errUnusual
	}
	t.name = name
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return errUnusual
		}
		if b[i] == '>' {
			i++
			break
		}
		if b[i] == '/' {
			if i+1 < len(b) && b[i+1] == '>' {
				t.empty = true
				i += 2
				break
			}
			return errUnusual
		}
		var an []byte
		an, i = scanName(b, i)
		i = skipSpace(b, i)
		if string(an) != "xmlns" || t.hasNS || i >= len(b) || b[i] != '=' {
			return errUnusual
		}
		i = skipSpace(b, i+1)
		if i >= len(b) || (b[i] != '"' && b[i] != '\'') {
			return errUnusual
		}
		q := b[i]
		i++
		j := bytes.IndexByte(b[i:], q)
		if j < 0 {
			return errUnusual
		}
		v := b[i : i+j]
		if bytes.IndexByte(v, '&') >= 0 || bytes.IndexByte(v, '<') >= 0 {
			return errUnusual
		}
		t.ns, t.hasNS = v, true
		i += j + 1
	}
	t.kind = tokStart
	s.i = i
	return nil
}

// scanName returns the name that starts at b[i] (empty when none does) and
// the index after it.
func scanName(b []byte, i int) ([]byte, int) {
	st := i
	for i < len(b) && isNameByte(b[i]) {
		i++
	}
	return b[st:i], i
}

// skipSpace returns the index of the first byte at or after i that is not
// XML white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// unescape returns raw with entity and character references replaced. It
// returns raw itself when there is nothing to replace.
func unescape(raw []byte) ([]byte, error) {
	amp := false
	for _, c := range raw {
		switch {
		case c == '&':
			amp = true
		case c >= 0x80, c == '\r', c < 0x20 && c != '\t' && c != '\n', c == '>':
			// '>' is legal but "]]>" is not; leave both to encoding/xml.
			return nil, errUnusual
		}
	}
	if !amp {
		return raw, nil
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '&' {
			out = append(out, c)
			i++
			continue
		}
		j := bytes.IndexByte(raw[i:], ';')
		if j < 0 {
			return nil, errUnusual
		}
		ent := raw[i+1 : i+j]
		i += j + 1
		switch string(ent) {
		case "lt":
			out = append(out, '<')
		case "gt":
			out = append(out, '>')
		case "amp":
			out = append(out, '&')
		case "quot":
			out = append(out, '"')
		case "apos":
			out = append(out, '\'')
		default:
			if len(ent) < 2 || ent[0] != '#' {
				return nil, errUnusual
			}
			var n uint64
			var err error
			if ent[1] == 'x' {
				n, err = strconv.ParseUint(string(ent[2:]), 16, 32)
			} else {
				n, err = strconv.ParseUint(string(ent[1:]), 10, 32)
			}
			if err != nil || !isXMLChar(rune(n)) {
				return nil, errUnusual
			}
			out = utf8.AppendRune(out, rune(n))
		}
	}
	return out, nil
}

// isXMLChar reports whether r is a Char of XML 1.0.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// nextSignificant reads the next token that is not whitespace-only text.
func (s *scanner) nextSignificant(t *token) error {
	for {
		if err := s.next(t); err != nil {
			return err
		}
		if t.kind != tokText || len(bytes.TrimLeft(t.text, " \t\n")) != 0 {
			return nil
		}
	}
}

// leaves calls f with the name and text of each child of the current
// element until it ends (with name end); each child must be a leaf.
func (s *scanner) leaves(end string, f func(name, text []byte)) error {
	for {
		name, text, done, err := s.leaf(end)
		if err != nil || done {
			return err
		}
		f(name, text)
	}
}

// leaf reads the next child of the current element. It returns done when
// the current element ends (with name end). A child must be a leaf: a start
// tag, optional text, its end tag.
func (s *scanner) leaf(end string) (name, text []byte, done bool, err error) {
	var t token
	if err := s.nextSignificant(&t); err != nil {
		return nil, nil, false, err
	}
	switch t.kind {
	case tokEnd:
		if string(t.name) != end {
			return nil, nil, false, errUnusual
		}
		return nil, nil, true, nil
	case tokStart:
	default:
		return nil, nil, false, errUnusual
	}
	name = t.name
	if t.empty {
		return name, nil, false, nil
	}
	if err := s.next(&t); err != nil {
		return nil, nil, false, err
	}
	if t.kind == tokText {
		text = t.text
		if err := s.next(&t); err != nil {
			return nil, nil, false, err
		}
	}
	if t.kind != tokEnd || !bytes.Equal(t.name, name) {
		return nil, nil, false, errUnusual
	}
	return name, text, false, nil
}
