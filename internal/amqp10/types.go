// Package amqp10 encodes and decodes the subset of AMQP 1.0 (OASIS AMQP 1.0,
// parts 1 to 5) that the IoT Platform's subscription endpoint uses: the type
// system, frames, the connection, session and link performatives, SASL PLAIN
// and the message sections. It is what iotsim serves AMQP with, and the
// client the bridge receives with (Receiver: one connection, one session,
// one receiving link; see client.go).
//
// Decoding never panics on any input: malformed, truncated or oversized
// data gives an error that says what was wrong and where. Values decode to
// these Go types:
//
//	null → nil; boolean → bool; ubyte, ushort, uint, ulong → uint8, uint16,
//	uint32, uint64; byte, short, int, long → int8, int16, int32, int64;
//	float, double → float32, float64; char → Char; timestamp → time.Time
//	(UTC, millisecond precision); uuid → UUID; binary → []byte;
//	string → string; symbol → Symbol; list → []any; map → Map;
//	array → Array; a described value → Described.
//
// Encoding takes the same types (and int as long) and picks the most
// compact encoding. Decimals are refused: nothing on the platform's path
// uses them.
package amqp10

import (
	"fmt"
	"time"
)

// Symbol is an AMQP symbol (ASCII).
type Symbol string

// UUID is an AMQP uuid.
type UUID [16]byte

// String formats u as 8-4-4-4-12 hexadecimal digits.
func (u UUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// Char is an AMQP char (one UTF-32 code point).
type Char rune

// Described is a described value: a descriptor (uint64 code or Symbol name)
// and the value it describes.
type Described struct {
	Descriptor any
	Value      any
}

// KV is one entry of a Map.
type KV struct {
	Key, Value any
}

// Map is an AMQP map, in wire order (AMQP maps are ordered on the wire and
// keys may be of any type).
type Map []KV

// Get returns the value of the first entry whose key equals key.
func (m Map) Get(key any) (any, bool) {
	for _, kv := range m {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// Array is an AMQP array: every element has the same type. Encode takes
// the type from the first element; an empty array encodes as an array of
// symbols.
type Array []any

// Type codes of the AMQP 1.0 type system (part 1, section 1.6).
const (
	codeDescribed  = 0x00
	codeNull       = 0x40
	codeBool       = 0x56
	codeTrue       = 0x41
	codeFalse      = 0x42
	codeUbyte      = 0x50
	codeUshort     = 0x60
	codeUint       = 0x70
	codeSmallUint  = 0x52
	codeUint0      = 0x43
	codeUlong      = 0x80
	codeSmallUlong = 0x53
	codeUlong0     = 0x44
	codeByte       = 0x51
	codeShort      = 0x61
	codeInt        = 0x71
	codeSmallInt   = 0x54
	codeLong       = 0x81
	codeSmallLong  = 0x55
	codeFloat      = 0x72
	codeDouble     = 0x82
	codeDecimal32  = 0x74
	codeDecimal64  = 0x84
	codeDecimal128 = 0x94
	codeChar       = 0x73
	codeTimestamp  = 0x83
	codeUUID       = 0x98
	codeVbin8      = 0xa0
	codeVbin32     = 0xb0
	codeStr8       = 0xa1
	codeStr32      = 0xb1
	codeSym8       = 0xa3
	codeSym32      = 0xb3
	codeList0      = 0x45
	codeList8      = 0xc0
	codeList32     = 0xd0
	codeMap8       = 0xc1
	codeMap32      = 0xd1
	codeArray8     = 0xe0
	codeArray32    = 0xf0
)

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// typeName names a type code for error messages.
func typeName(c byte) string {
	switch c {
	case codeNull:
		return "null"
	case codeBool, codeTrue, codeFalse:
		return "boolean"
	case codeUbyte:
		return "ubyte"
	case codeUshort:
		return "ushort"
	case codeUint, codeSmallUint, codeUint0:
		return "uint"
	case codeUlong, codeSmallUlong, codeUlong0:
		return "ulong"
	case codeByte:
		return "byte"
	case codeShort:
		return "short"
	case codeInt, codeSmallInt:
		return "int"
	case codeLong, codeSmallLong:
		return "long"
	case codeFloat:
		return "float"
	case codeDouble:
		return "double"
	case codeDecimal32, codeDecimal64, codeDecimal128:
		return "decimal"
	case codeChar:
		return "char"
	case codeTimestamp:
		return "timestamp"
	case codeUUID:
		return "uuid"
	case codeVbin8, codeVbin32:
		return "binary"
	case codeStr8, codeStr32:
		return "string"
	case codeSym8, codeSym32:
		return "symbol"
	case codeList0, codeList8, codeList32:
		return "list"
	case codeMap8, codeMap32:
		return "map"
	case codeArray8, codeArray32:
		return "array"
	case codeDescribed:
		return "described"
	}
	return fmt.Sprintf("unknown type 0x%02x", c)
}
