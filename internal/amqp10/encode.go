package amqp10

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// appendUnsigned appends v in the shortest encoding its type has: the zero
// code, the small code with one byte, or the full code (a uint's four bytes,
// a ulong's eight).
func appendUnsigned(b []byte, v uint64, zero, small, full byte) []byte {
	switch {
	case v == 0:
		return append(b, zero)
	case v < 256:
		return append(b, small, byte(v))
	case full == codeUint:
		return binary.BigEndian.AppendUint32(append(b, full), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, full), v)
}

// Append appends the encoding of v to b. It fails only for a Go type the
// package does not map (see the package comment) or an array that is not
// homogeneous.
func Append(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, codeNull), nil
	case bool:
		if v {
			return append(b, codeTrue), nil
		}
		return append(b, codeFalse), nil
	case uint8:
		return append(b, codeUbyte, v), nil
	case uint16:
		return binary.BigEndian.AppendUint16(append(b, codeUshort), v), nil
	case uint32:
		return appendUnsigned(b, uint64(v), codeUint0, codeSmallUint, codeUint), nil
	case uint64:
		return appendUnsigned(b, v, codeUlong0, codeSmallUlong, codeUlong), nil
	case int8:
		return append(b, codeByte, byte(v)), nil
	case int16:
		return binary.BigEndian.AppendUint16(append(b, codeShort), uint16(v)), nil
	case int32:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallInt, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint32(append(b, codeInt), uint32(v)), nil
	case int64:
		if v >= -128 && v <= 127 {
			return append(b, codeSmallLong, byte(int8(v))), nil
		}
		return binary.BigEndian.AppendUint64(append(b, codeLong), uint64(v)), nil
	case int:
		return Append(b, int64(v))
	case float32:
		return binary.BigEndian.AppendUint32(append(b, codeFloat), math.Float32bits(v)), nil
	case float64:
		return binary.BigEndian.AppendUint64(append(b, codeDouble), math.Float64bits(v)), nil
	case Char:
		return binary.BigEndian.AppendUint32(append(b, codeChar), uint32(v)), nil
	case time.Time:
		return binary.BigEndian.AppendUint64(append(b, codeTimestamp), uint64(v.UnixMilli())), nil
	case UUID:
		return append(append(b, codeUUID), v[:]...), nil
	case []byte:
		return appendVar(b, codeVbin8, codeVbin32, v), nil
	case string:
		return appendVar(b, codeStr8, codeStr32, []byte(v)), nil
	case Symbol:
		return appendVar(b, codeSym8, codeSym32, []byte(v)), nil
	case []any:
		return appendList(b, v)
	case Map:
		return appendMap(b, v)
	case Array:
		return appendArray(b, v)
	case Described:
		b = append(b, codeDescribed)
		b, err := Append(b, v.Descriptor)
		if err != nil {
			return b, err
		}
		return Append(b, v.Value)
	case *Described:
		if v == nil {
			return append(b, codeNull), nil
		}
		return Append(b, *v)
	}
	return b, fmt.Errorf("amqp10: cannot encode Go type %T", v)
}

func appendVar(b []byte, c8, c32 byte, v []byte) []byte {
	if len(v) < 256 {
		b = append(b, c8, byte(len(v)))
	} else {
		b = binary.BigEndian.AppendUint32(append(b, c32), uint32(len(v)))
	}
	return append(b, v...)
}

// appendCompound writes code, size and count around the already encoded
// items, choosing the 8-bit form when it fits.
func appendCompound(b []byte, c8, c32 byte, count int, items []byte) []byte {
	if len(items)+1 < 256 && count < 256 {
		b = append(b, c8, byte(len(items)+1), byte(count))
	} else {
		b = binary.BigEndian.AppendUint32(append(b, c32), uint32(len(items)+4))
		b = binary.BigEndian.AppendUint32(b, uint32(count))
	}
	return append(b, items...)
}

func appendList(b []byte, l []any) ([]byte, error) {
	if len(l) == 0 {
		return append(b, codeList0), nil
	}
	var items []byte
	for i, v := range l {
		var err error
		if items, err = Append(items, v); err != nil {
			return b, fmt.Errorf("list item %d: %w", i, err)
		}
	}
	return appendCompound(b, codeList8, codeList32, len(l), items), nil
}

func appendMap(b []byte, m Map) ([]byte, error) {
	var items []byte
	for _, kv := range m {
		var err error
		if items, err = Append(items, kv.Key); err != nil {
			return b, fmt.Errorf("map key: %w", err)
		}
		if items, err = Append(items, kv.Value); err != nil {
			return b, fmt.Errorf("map value of %v: %w", kv.Key, err)
		}
	}
	return appendCompound(b, codeMap8, codeMap32, 2*len(m), items), nil
}

// appendArray encodes every element with the constructor of the first,
// using the wide form of variable-width types so all share one constructor.
func appendArray(b []byte, a Array) ([]byte, error) {
	if len(a) == 0 {
		return appendCompound(b, codeArray8, codeArray32, 0, []byte{codeSym8}), nil
	}
	var items []byte
	var ctor byte
	for i, v := range a {
		enc, err := Append(nil, v)
		if err != nil {
			return b, fmt.Errorf("array item %d: %w", i, err)
		}
		c, payload, err := widen(enc)
		if err != nil {
			return b, fmt.Errorf("array item %d: %w", i, err)
		}
		if i == 0 {
			ctor = c
			items = append(items, c)
		} else if c != ctor {
			return b, fmt.Errorf("array item %d: type %s differs from the first item's %s", i, typeName(c), typeName(ctor))
		}
		items = append(items, payload...)
	}
	return appendCompound(b, codeArray8, codeArray32, len(a), items), nil
}

// widen re-encodes one encoded value with a fixed constructor: the 32-bit
// forms of variable-width and compact types, so every element of an array
// can share it. It returns the constructor and the bytes after it.
func widen(enc []byte) (byte, []byte, error) {
	c := enc[0]
	switch c {
	case codeVbin8, codeStr8, codeSym8:
		n := int(enc[1])
		out := binary.BigEndian.AppendUint32(nil, uint32(n))
		return c + 0x10, append(out, enc[2:]...), nil
	case codeUint0:
		return codeUint, []byte{0, 0, 0, 0}, nil
	case codeSmallUint:
		return codeUint, []byte{0, 0, 0, enc[1]}, nil
	case codeUlong0:
		return codeUlong, make([]byte, 8), nil
	case codeSmallUlong:
		return codeUlong, []byte{0, 0, 0, 0, 0, 0, 0, enc[1]}, nil
	case codeSmallInt:
		return codeInt, binary.BigEndian.AppendUint32(nil, uint32(int32(int8(enc[1])))), nil
	case codeSmallLong:
		return codeLong, binary.BigEndian.AppendUint64(nil, uint64(int64(int8(enc[1])))), nil
	case codeTrue:
		return codeBool, []byte{1}, nil
	case codeFalse:
		return codeBool, []byte{0}, nil
	case codeList0:
		return codeList32, []byte{0, 0, 0, 4, 0, 0, 0, 0}, nil
	case codeList8, codeMap8, codeArray8:
		size, count := int(enc[1]), int(enc[2])
		out := binary.BigEndian.AppendUint32(nil, uint32(size+3))
		out = binary.BigEndian.AppendUint32(out, uint32(count))
		return c + 0x10, append(out, enc[3:]...), nil
	case codeDescribed, codeNull:
		return c, nil, fmt.Errorf("%s values cannot be array elements here", typeName(c))
	}
	return c, enc[1:], nil
}
