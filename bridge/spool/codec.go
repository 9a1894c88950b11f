package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// A stored value is:
//
//	version byte (1) | CRC-32C of the rest, 4 bytes big-endian |
//	varint generateTime | uvarint-length-prefixed topic, messageId, invalid |
//	uvarint property count, then length-prefixed key and value of each |
//	uvarint-length-prefixed body
//
// bbolt checksums only its meta pages, so the CRC is what lets Open tell a
// damaged record from a good one.
const (
	codecVersion = 1
	headerLen    = 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodedLen returns an upper bound of the encoded size of m.
func encodedLen(m *bridge.Message) int {
	n := headerLen + binary.MaxVarintLen64 + 4*binary.MaxVarintLen64 +
		len(m.Topic) + len(m.MessageID) + len(m.Invalid) + len(m.Body) + binary.MaxVarintLen64
	for k, v := range m.Properties {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	return n
}

// encode returns m as a stored value, in one allocation. The spool holds
// the payload: a base64 body (Message.Base64) is decoded first.
func encode(m *bridge.Message) []byte {
	if m.Base64 {
		d := *m
		if err := d.DecodeBody(); err != nil {
			d.Invalid = err.Error()
			d.Base64 = false
		}
		m = &d
	}
	b := make([]byte, headerLen, encodedLen(m))
	b[0] = codecVersion
	b = binary.AppendVarint(b, m.GenerateTime)
	b = appendString(b, m.Topic)
	b = appendString(b, m.MessageID)
	b = appendString(b, m.Invalid)
	b = binary.AppendUvarint(b, uint64(len(m.Properties)))
	for k, v := range m.Properties {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	b = append(b, m.Body...)
	binary.BigEndian.PutUint32(b[1:headerLen], crc32.Checksum(b[headerLen:], castagnoli))
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShort = errors.New("record is truncated")

// verify checks a stored value's version and checksum without decoding it.
func verify(v []byte) error {
	if len(v) < headerLen {
		return errShort
	}
	if v[0] != codecVersion {
		return fmt.Errorf("unknown record version %d (written by a newer bridge?)", v[0])
	}
	if got, want := crc32.Checksum(v[headerLen:], castagnoli), binary.BigEndian.Uint32(v[1:headerLen]); got != want {
		return fmt.Errorf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return nil
}

// decode returns the message in v. Everything is copied: v may be memory
// that bbolt owns only for the life of a transaction. The text fields
// (topic, id, reason, property keys and values) are copied in one string
// that they share, and the body in one slice: two allocations and the
// properties' map per message, whatever the number of properties.
func decode(v []byte) (bridge.Message, error) {
	var m bridge.Message
	if err := verify(v); err != nil {
		return m, err
	}
	d := decoder{b: v[headerLen:], n: len(v)}
	m.GenerateTime = d.varint()
	// The text fields are contiguous up to the body's length: read them as
	// spans of v first, then make them substrings of one copy.
	start := d.pos()
	topic, id, invalid := d.span(), d.span(), d.span()
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) { // every property takes at least two bytes
		return m, fmt.Errorf("property count %d exceeds record size", n)
	}
	var spans [16][2]span // on the stack: a typical message's properties
	props := spans[:0]
	for i := uint64(0); i < n && d.err == nil; i++ {
		props = append(props, [2]span{d.span(), d.span()})
	}
	end := d.pos()
	body := d.bytes()
	if d.err != nil {
		return bridge.Message{}, d.err
	}
	if len(d.b) != 0 {
		return bridge.Message{}, fmt.Errorf("%d unexpected bytes after the body", len(d.b))
	}
	text := string(v[start:end])
	str := func(s span) string { return text[s.from-start : s.to-start] }
	m.Topic, m.MessageID, m.Invalid = str(topic), str(id), str(invalid)
	if n > 0 {
		m.Properties = make(map[string]string, n)
		for _, p := range props {
			m.Properties[str(p[0])] = str(p[1])
		}
	}
	m.Body = append([]byte{}, body...)
	return m, nil
}

// span is a string field's place in a record: v[from:to].
type span struct{ from, to int }

type decoder struct {
	b   []byte // what is left to read
	n   int    // the record's length
	err error
}

func (d *decoder) uvarint() uint64 { return next(d, binary.Uvarint) }

func (d *decoder) varint() int64 { return next(d, binary.Varint) }

// next reads one number with read (binary.Uvarint or binary.Varint); a
// number that does not fit in what is left fails the decoder with errShort.
func next[T int64 | uint64](d *decoder, read func([]byte) (T, int)) T {
	if d.err != nil {
		return 0
	}
	v, n := read(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// pos is the decoder's offset in the record.
func (d *decoder) pos() int { return d.n - len(d.b) }

// span reads a length-prefixed field and returns where it is in the record.
func (d *decoder) span() span {
	b := d.bytes()
	return span{d.pos() - len(b), d.pos()}
}
