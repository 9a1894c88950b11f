package amqp10

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// maxDepth bounds the nesting of compound and described values, so that a
// hostile input cannot exhaust the stack.
const maxDepth = 32

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed AMQP data")

// The items one input may decode to: minItems, plus one for every
// bytesPerItem bytes of the input. An item is a value at the top of the
// input, an element of a list, map or array, or a described value; each
// costs the decoder at most a few tens of bytes of memory (its slot, its
// boxed value), so that an input costs a small multiple of its bytes
// whatever its shape. Without it, a 64 MiB message of one-byte items (an
// array of nulls even takes none) would cost gigabytes. A legitimate
// platform message holds a few properties and a data section; an input
// with more, smaller items is refused as malformed (a message is then
// dead-lettered with its bytes).
const (
	minItems     = 4096
	bytesPerItem = 16
)

// emptyList is every empty list decoded: boxing a new one would cost 24
// bytes for the one byte of a list0 (its capacity is 0, so that appending
// to it copies).
var emptyList any = []any{}

// newDecoder returns a decoder of b with its budget of items.
func newDecoder(b []byte, anyText bool) decoder {
	return decoder{b: b, anyText: anyText, items: minItems + len(b)/bytesPerItem}
}

// Decode decodes one value from the start of b and returns it with the
// number of bytes it took.
func Decode(b []byte) (any, int, error) {
	d := newDecoder(b, false)
	v, err := d.item(0)
	return v, d.pos, err
}

// DecodeAll decodes b as a sequence of values until it ends.
func DecodeAll(b []byte) ([]any, error) {
	d := newDecoder(b, false)
	var out []any
	for d.pos < len(b) {
		v, err := d.item(0)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}

type decoder struct {
	b   []byte
	pos int
	// anyText takes a string that is not UTF-8 and a symbol that is not
	// ASCII as their bytes instead of refusing them (a message's sections,
	// as go-amqp did: one odd property must not refuse the whole message).
	anyText bool
	// items is how many more items the input may decode to (minItems).
	items int
}

// take charges n items to the input's budget, or refuses them: what names
// them for the error.
func (d *decoder) take(n int, what string) error {
	if n > d.items {
		return d.errorf("%s of %d items exceeds what the input's size allows (%d items at most, %d + one per %d bytes)",
			what, n, d.items, minItems, bytesPerItem)
	}
	d.items -= n
	return nil
}

// item decodes a value at the top of the input, charged as an item.
func (d *decoder) item(depth int) (any, error) {
	if err := d.take(1, "the input"); err != nil {
		return nil, err
	}
	return d.value(depth)
}

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, d.pos, fmt.Sprintf(format, args...))
}

func (d *decoder) need(n int, what string) ([]byte, error) {
	if n < 0 || len(d.b)-d.pos < n {
		return nil, d.errorf("%s needs %d bytes, %d left", what, n, len(d.b)-d.pos)
	}
	p := d.b[d.pos : d.pos+n]
	d.pos += n
	return p, nil
}

func (d *decoder) byte1(what string) (byte, error) {
	p, err := d.need(1, what)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// fixedWidth holds the types of a fixed width of more than one byte (part
// 1, 1.6): their size and their value from their big-endian bits.
var fixedWidth = map[byte]struct {
	size  int
	value func(u uint64) any
}{
	codeUshort:    {2, func(u uint64) any { return uint16(u) }},
	codeShort:     {2, func(u uint64) any { return int16(u) }},
	codeUint:      {4, func(u uint64) any { return uint32(u) }},
	codeInt:       {4, func(u uint64) any { return int32(u) }},
	codeFloat:     {4, func(u uint64) any { return math.Float32frombits(uint32(u)) }},
	codeChar:      {4, func(u uint64) any { return Char(u) }},
	codeUlong:     {8, func(u uint64) any { return u }},
	codeLong:      {8, func(u uint64) any { return int64(u) }},
	codeDouble:    {8, func(u uint64) any { return math.Float64frombits(u) }},
	codeTimestamp: {8, func(u uint64) any { return msTime(int64(u)) }},
}

// fixed decodes a value of one of the fixedWidth types.
func (d *decoder) fixed(c byte) (any, error) {
	t := fixedWidth[c]
	p, err := d.need(t.size, typeName(c))
	if err != nil {
		return nil, err
	}
	var u uint64
	for _, b := range p {
		u = u<<8 | uint64(b)
	}
	return t.value(u), nil
}

func (d *decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, d.errorf("values nested deeper than %d", maxDepth)
	}
	c, err := d.byte1("type code")
	if err != nil {
		return nil, err
	}
	if c == codeDescribed {
		if err := d.take(1, "a described value"); err != nil {
			return nil, err
		}
		desc, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		switch desc.(type) {
		case uint64, Symbol:
		default:
			return nil, d.errorf("descriptor must be a ulong or a symbol, got %T", desc)
		}
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		return Described{Descriptor: desc, Value: v}, nil
	}
	return d.payload(c, depth)
}

// payload decodes the bytes after constructor c.
func (d *decoder) payload(c byte, depth int) (any, error) {
	switch c {
	case codeNull:
		return nil, nil
	case codeTrue:
		return true, nil
	case codeFalse:
		return false, nil
	case codeUint0:
		return uint32(0), nil
	case codeUlong0:
		return uint64(0), nil
	case codeList0:
		return emptyList, nil
	case codeBool:
		v, err := d.byte1("boolean")
		if err != nil {
			return nil, err
		}
		switch v {
		case 0:
			return false, nil
		case 1:
			return true, nil
		}
		return nil, d.errorf("boolean byte must be 0 or 1, got %d", v)
	case codeUbyte:
		return d.byte1("ubyte")
	case codeSmallUint:
		v, err := d.byte1("smalluint")
		return uint32(v), err
	case codeSmallUlong:
		v, err := d.byte1("smallulong")
		return uint64(v), err
	case codeByte:
		v, err := d.byte1("byte")
		return int8(v), err
	case codeSmallInt:
		v, err := d.byte1("smallint")
		return int32(int8(v)), err
	case codeSmallLong:
		v, err := d.byte1("smalllong")
		return int64(int8(v)), err
	case codeUshort, codeShort, codeUint, codeInt, codeFloat, codeChar, codeUlong, codeLong, codeDouble, codeTimestamp:
		return d.fixed(c)
	case codeUUID:
		p, err := d.need(16, "uuid")
		if err != nil {
			return nil, err
		}
		return UUID(p), nil
	case codeVbin8, codeStr8, codeSym8, codeVbin32, codeStr32, codeSym32:
		p, err := d.variable(c)
		if err != nil {
			return nil, err
		}
		switch c {
		case codeStr8, codeStr32:
			if !d.anyText && !utf8.Valid(p) {
				return nil, d.errorf("string is not valid UTF-8")
			}
			if s, ok := platformName(p); ok {
				return s, nil
			}
			return string(p), nil
		case codeSym8, codeSym32:
			// AMQP 1.0 part 1, 1.6.21: a symbol is seven-bit ASCII.
			for _, b := range p {
				if b >= utf8.RuneSelf && !d.anyText {
					return nil, d.errorf("symbol is not ASCII (byte 0x%02x)", b)
				}
			}
			return Symbol(p), nil
		}
		return append([]byte{}, p...), nil
	case codeList8, codeList32, codeMap8, codeMap32:
		wide := c == codeList32 || c == codeMap32
		body, count, err := d.compound(wide, typeName(c))
		if err != nil {
			return nil, err
		}
		if c == codeMap8 || c == codeMap32 {
			return d.mapItems(body, count, depth)
		}
		sub := decoder{b: body, anyText: d.anyText, items: d.items}
		l := make([]any, 0, count)
		for range count {
			v, err := sub.value(depth + 1)
			if err != nil {
				return nil, d.wrap(err)
			}
			l = append(l, v)
		}
		if sub.pos != len(body) {
			return nil, d.errorf("list of %d items leaves %d bytes unused", count, len(body)-sub.pos)
		}
		d.items = sub.items
		return l, nil
	case codeArray8, codeArray32:
		body, count, err := d.compound(c == codeArray32, "array")
		if err != nil {
			return nil, err
		}
		sub := decoder{b: body, anyText: d.anyText, items: d.items}
		ec, err := sub.byte1("array element constructor")
		if err != nil {
			return nil, d.wrap(err)
		}
		var desc any
		if ec == codeDescribed {
			if desc, err = sub.value(depth + 1); err != nil {
				return nil, d.wrap(err)
			}
			if ec, err = sub.byte1("array element constructor"); err != nil {
				return nil, d.wrap(err)
			}
		}
		if ec == codeDescribed {
			return nil, d.errorf("array element constructor is described twice")
		}
		a := make(Array, 0, count)
		for range count {
			v, err := sub.payload(ec, depth+1)
			if err != nil {
				return nil, d.wrap(err)
			}
			if desc != nil {
				v = Described{Descriptor: desc, Value: v}
			}
			a = append(a, v)
		}
		if sub.pos != len(body) {
			return nil, d.errorf("array of %d items leaves %d bytes unused", count, len(body)-sub.pos)
		}
		d.items = sub.items
		return a, nil
	case codeDecimal32, codeDecimal64, codeDecimal128:
		return nil, d.errorf("decimal values are not supported")
	}
	return nil, d.errorf("unknown type code 0x%02x", c)
}

// variable reads the bytes of a binary, string or symbol of constructor c
// (the caller's to copy: they are the input's).
func (d *decoder) variable(c byte) ([]byte, error) {
	n, err := d.length(c == codeVbin32 || c == codeStr32 || c == codeSym32, typeName(c), "")
	if err != nil {
		return nil, err
	}
	return d.need(n, typeName(c))
}

// mapOf decodes a map of constructor c (map8 or map32).
func (d *decoder) mapOf(c byte, depth int) (Map, error) {
	body, count, err := d.compound(c == codeMap32, typeName(c))
	if err != nil {
		return nil, err
	}
	return d.mapItems(body, count, depth)
}

// mapItems decodes the count items of a map's body (after its count,
// which compound charged).
func (d *decoder) mapItems(body []byte, count, depth int) (Map, error) {
	if count%2 != 0 {
		return nil, d.errorf("map has an odd number of items (%d)", count)
	}
	sub := decoder{b: body, anyText: d.anyText, items: d.items}
	m := make(Map, 0, count/2)
	for range count / 2 {
		k, err := sub.value(depth + 1)
		if err != nil {
			return nil, d.wrap(err)
		}
		v, err := sub.value(depth + 1)
		if err != nil {
			return nil, d.wrap(err)
		}
		m = append(m, KV{k, v})
	}
	if sub.pos != len(body) {
		return nil, d.errorf("map of %d items leaves %d bytes unused", count, len(body)-sub.pos)
	}
	d.items = sub.items
	return m, nil
}

// platformName returns the IoT platform's application property names
// (topic, messageId, generateTime) as constants: a message's keys then
// cost no allocation (issue 16: the reader's allocations per message).
func platformName(p []byte) (any, bool) {
	switch string(p) { // compared without a copy
	case "topic":
		return "topic", true
	case "messageId":
		return "messageId", true
	case "generateTime":
		return "generateTime", true
	}
	return nil, false
}

// wrap places a nested decoder's error in the outer input.
func (d *decoder) wrap(err error) error {
	return fmt.Errorf("inside the value ending at byte %d: %w", d.pos, err)
}

// length reads the length of a variable-width or compound value: what and
// suffix name it for errors only (joined there, so that a length costs no
// allocation).
func (d *decoder) length(wide bool, what, suffix string) (int, error) {
	w := 1
	if wide {
		w = 4
	}
	if len(d.b)-d.pos < w {
		return 0, d.errorf("%s%s length needs %d bytes, %d left", what, suffix, w, len(d.b)-d.pos)
	}
	if !wide {
		n := d.b[d.pos]
		d.pos++
		return int(n), nil
	}
	n := binary.BigEndian.Uint32(d.b[d.pos:])
	d.pos += 4
	if int64(n) > int64(len(d.b)-d.pos) {
		return 0, d.errorf("%s%s length %d exceeds the %d bytes left", what, suffix, n, len(d.b)-d.pos)
	}
	return int(n), nil
}

// compound reads size and count of a list, map or array, charges the count
// to the input's items and returns the bytes after the count. Every item
// takes at least one byte (but for the elements of an array of nulls, say),
// so a count larger than those bytes is refused before anything is
// allocated, and so is a count beyond the input's budget of items.
func (d *decoder) compound(wide bool, what string) ([]byte, int, error) {
	size, err := d.length(wide, what, " size")
	if err != nil {
		return nil, 0, err
	}
	p, err := d.need(size, what)
	if err != nil {
		return nil, 0, err
	}
	w := 1
	if wide {
		w = 4
	}
	if len(p) < w {
		return nil, 0, d.errorf("%s size %d is too small for its count", what, size)
	}
	var count int
	if wide {
		count = int(binary.BigEndian.Uint32(p))
	} else {
		count = int(p[0])
	}
	body := p[w:]
	if count > len(body) && !(what == "array" && len(body) > 0 && zeroWidth(body[0]) && count <= maxZeroWidth) {
		return nil, 0, d.errorf("%s claims %d items in %d bytes", what, count, len(body))
	}
	// Charged before anything is allocated for them: the items of nested
	// compounds, each sized by its count, add up to the budget at most.
	if err := d.take(count, what); err != nil {
		return nil, 0, err
	}
	return body, count, nil
}

// maxZeroWidth bounds the count of an array whose elements take no bytes.
const maxZeroWidth = 1 << 16

// zeroWidth reports whether elements of constructor c take no bytes.
func zeroWidth(c byte) bool {
	switch c {
	case codeNull, codeTrue, codeFalse, codeUint0, codeUlong0, codeList0:
		return true
	}
	return false
}
