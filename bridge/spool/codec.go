package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"unsafe"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// A stored value (a record) is one message (version 1) or a group of the
// messages of one commit (version 2). Version 1:
//
//	version byte (1) | CRC-32C of the rest, 4 bytes big-endian | payload
//
// where the payload is
//
//	varint generateTime | uvarint-length-prefixed topic, messageId, invalid |
//	uvarint property count, then length-prefixed key and value of each |
//	uvarint-length-prefixed body
//
// Version 2:
//
//	version byte (2) | CRC-32C of the rest, 4 bytes big-endian |
//	uvarint member count | for each member: uvarint offset, uvarint length,
//	the member's payload (as in version 1)
//
// A record's bbolt key is the key of its first message; a member's key is
// the record's key plus its offset. Offsets grow strictly; a group written
// by a commit has offsets 0..n-1, one rewritten at Close keeps the offsets
// of the members still to forward. Message keys are dense (one per message,
// in arrival order), whether a message is stored alone or in a group.
//
// bbolt checksums only its meta pages, so the CRC is what lets Open tell a
// damaged record from a good one.
const (
	codecVersion = 1
	groupVersion = 2
	headerLen    = 1 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodedLen returns an upper bound of the encoded size of m.
func encodedLen(m *bridge.Message) int {
	n := bareLen(m)
	for k, v := range m.Properties {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	return n
}

// bareLen is encodedLen without the properties: no walk of the map.
func bareLen(m *bridge.Message) int {
	return headerLen + binary.MaxVarintLen64 + 4*binary.MaxVarintLen64 +
		len(m.Topic) + len(m.MessageID) + len(m.Invalid) + len(m.Body) + binary.MaxVarintLen64
}

// encode returns m as a stored value, in one allocation. The spool holds
// the payload: a base64 body (Message.Base64) is decoded first.
func encode(m *bridge.Message) []byte { return seal(encodeTo(nil, m)) }

// encodeTo is encode into dst's memory when it has room (dst's content is
// overwritten), without the CRC: the record is the message's payload with
// a version 1 header whose CRC is zero until seal fills it in. The writer
// seals only what it stores alone; a group's member is covered by the
// group's CRC, so its own would be computed for nothing.
func encodeTo(dst []byte, m *bridge.Message) []byte {
	if m.Base64 {
		d := *m
		if err := d.DecodeBody(); err != nil {
			d.Invalid = err.Error()
			d.Base64 = false
		}
		m = &d
	}
	b := dst[:0]
	if cap(b) < bareLen(m) {
		// One allocation of the whole bound. A reused buffer that holds
		// all but the properties is not measured against them (a walk of
		// the map per message): append grows it in the rare case.
		b = make([]byte, 0, encodedLen(m))
	}
	b = append(b, codecVersion, 0, 0, 0, 0)
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
	return b
}

// seal writes the CRC of record r (version 1 or 2) into its header and
// returns r.
func seal(r []byte) []byte {
	binary.BigEndian.PutUint32(r[1:headerLen], crc32.Checksum(r[headerLen:], castagnoli))
	return r
}

// Append encodes into pooled buffers, which the writer gives back once
// their commit is done (bbolt holds no reference to a value after its
// transaction): at full rate that is a few hundred bytes less garbage a
// message. Buffers above pooledValue are left to the garbage collector.
var values = sync.Pool{New: func() any { return new([]byte) }}

const pooledValue = 4 << 10

// encodePooled encodes m into a pooled buffer, unsealed (encodeTo); buf is
// what putValue takes.
func encodePooled(m *bridge.Message) (val []byte, buf *[]byte) {
	buf = values.Get().(*[]byte)
	*buf = encodeTo(*buf, m)
	return *buf, buf
}

// putValue gives back a buffer of encodePooled; nothing may use it after.
func putValue(buf *[]byte) {
	if buf != nil && cap(*buf) <= pooledValue {
		values.Put(buf)
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShort = errors.New("record is truncated")

// verify checks a stored value's version and checksum, and a group's
// framing, without decoding its messages.
func verify(v []byte) error {
	if len(v) < headerLen {
		return errShort
	}
	if v[0] != codecVersion && v[0] != groupVersion {
		return fmt.Errorf("unknown record version %d (written by a newer bridge?)", v[0])
	}
	if got, want := crc32.Checksum(v[headerLen:], castagnoli), binary.BigEndian.Uint32(v[1:headerLen]); got != want {
		return fmt.Errorf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	if v[0] == groupVersion {
		return eachMember(v, func(uint64, []byte) error { return nil })
	}
	return nil
}

// decode returns the message in v, a version 1 record. Everything is
// copied: v may be memory that bbolt owns only for the life of a
// transaction.
func decode(v []byte) (bridge.Message, error) {
	if err := verify(v); err != nil {
		return bridge.Message{}, err
	}
	if v[0] != codecVersion {
		return bridge.Message{}, fmt.Errorf("record version %d holds a group, not one message", v[0])
	}
	return decodePayload(v[headerLen:])
}

// decodePayload returns the message in a payload (a version 1 record after
// its header, or a group's member). The message's text fields (topic, id,
// reason, property keys and values) and its body are copied into one
// allocation of its own (see ownCopy): one allocation and the properties'
// map per message, whatever the number of properties. A decoded message
// keeps alive exactly its own text and body, never the record nor another
// member of its group.
func decodePayload(p []byte) (bridge.Message, error) {
	var m bridge.Message
	d := decoder{b: p, n: len(p)}
	m.GenerateTime = d.varint()
	// The text fields are contiguous up to the body's length: read them as
	// spans of p first, then make them substrings of one copy.
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
	var text string
	text, m.Body = ownCopy(p[start:end], body)
	str := func(s span) string { return text[s.from-start : s.to-start] }
	m.Topic, m.MessageID, m.Invalid = str(topic), str(id), str(invalid)
	if n > 0 {
		m.Properties = make(map[string]string, n)
		for _, kv := range props {
			m.Properties[str(kv[0])] = str(kv[1])
		}
	}
	return m, nil
}

// ownCopy copies text and body into one new allocation, text first, and
// returns the text as a string and the body as a slice of it whose
// capacity ends with the body (an append to the body reallocates). No
// slice of the text part is ever handed out, so the string cannot change;
// writing into the body touches only the body. Any one field kept alone
// (a property value, the id) keeps the whole allocation, the message's
// text and body, alive; nothing more.
func ownCopy(text, body []byte) (string, []byte) {
	if len(body) == 0 {
		return string(text), []byte{}
	}
	// The append must grow (text's capacity ends with it), so buf is new
	// memory: text copied, then body, and nothing zeroed first.
	buf := append(text[:len(text):len(text)], body...)
	return unsafe.String(unsafe.SliceData(buf), len(text)), buf[len(text):len(buf):len(buf)]
}

// groupMember is one message of a group record: its key's offset from the
// record's key, and its payload.
type groupMember struct {
	off     uint64
	payload []byte
}

// encodeGroup returns the version 2 record of members (offsets strictly
// growing), in one allocation.
func encodeGroup(members []groupMember) []byte {
	return appendGroup(make([]byte, 0, groupLenBound(members)), members)
}

// groupLenBound is an upper bound of the encoded size of a group.
func groupLenBound(members []groupMember) int {
	n := headerLen + binary.MaxVarintLen64
	for _, m := range members {
		n += 2*binary.MaxVarintLen64 + len(m.payload)
	}
	return n
}

// appendGroup appends the version 2 record of members to dst and returns
// the extended slice; the record is what follows len(dst).
func appendGroup(dst []byte, members []groupMember) []byte {
	at := len(dst)
	b := append(dst, groupVersion, 0, 0, 0, 0)
	b = binary.AppendUvarint(b, uint64(len(members)))
	for _, m := range members {
		b = binary.AppendUvarint(b, m.off)
		b = binary.AppendUvarint(b, uint64(len(m.payload)))
		b = append(b, m.payload...)
	}
	seal(b[at:])
	return b
}

// eachMember calls fn with the offset and payload of every member of the
// group record v, in order, checking the framing (not the checksum: verify
// does). A group holds at most maxGroup messages of one commit, so its
// offsets are below maxGroup. fn's error stops it and is returned.
func eachMember(v []byte, fn func(off uint64, payload []byte) error) error {
	d := decoder{b: v[headerLen:], n: len(v) - headerLen}
	count := d.uvarint()
	if d.err == nil && (count == 0 || count > maxGroup) {
		return fmt.Errorf("group of %d messages (1 to %d expected)", count, maxGroup)
	}
	next := uint64(0) // the lowest offset the next member may have
	for i := uint64(0); i < count && d.err == nil; i++ {
		off := d.uvarint()
		p := d.bytes()
		if d.err != nil {
			break
		}
		if off < next || off >= maxGroup {
			return fmt.Errorf("group member %d has offset %d (at least %d, below %d expected)", i, off, next, maxGroup)
		}
		next = off + 1
		if err := fn(off, p); err != nil {
			return err
		}
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d unexpected bytes after the group's last message", len(d.b))
	}
	return nil
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
