package amqp10

import (
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"
)

// hostileSize is the size of each hostile message of these tests: large
// enough that the decoder's fixed costs do not matter, small enough for a
// shared CI machine even when the decoder is wrong by a factor of 30.
const hostileSize = 256 << 10

// compound32 encodes a list32, map32 or array32 (code) whose
// items (an array's start with their element constructor) count count.
func compound32(code byte, count int, items []byte) []byte {
	b := []byte{code, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(items)))
	binary.BigEndian.PutUint32(b[5:], uint32(count))
	return append(b, items...)
}

// repeated is item n times.
func repeated(item []byte, n int) []byte {
	b := make([]byte, 0, n*len(item))
	for range n {
		b = append(b, item...)
	}
	return b
}

// section is message section desc holding the value v.
func section(desc byte, v []byte) []byte {
	return append([]byte{codeDescribed, codeSmallUlong, desc}, v...)
}

// hostileMessages are messages of hostileSize bytes (or close), each made
// of as many tiny items of one shape as the decoder takes from a message of
// that size, padded with a data section: the shapes that cost the decoder
// most memory per byte received. Before the decoder had a budget of items,
// they held as many items as bytes (and the nested lists the same again
// at each level).
func hostileMessages() map[string][]byte {
	budget := minItems + hostileSize/bytesPerItem
	// fitted is an application property whose value is a list of as many
	// items as the budget allows (an item costing cost items of the
	// budget), and a data section up to hostileSize.
	fitted := func(item []byte, cost int) []byte {
		n := (budget - 8) / cost // the sections, the map, its key and value
		m := section(descApplicationProperties, compound32(codeMap32, 2,
			append([]byte{codeStr8, 1, 'k'}, compound32(codeList32, n, repeated(item, n))...)))
		pad := max(hostileSize-len(m)-8, 0)
		data := []byte{codeVbin32, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(data[1:], uint32(pad))
		return append(m, section(descData, append(data, make([]byte, pad)...))...)
	}
	nested := []byte{0xff} // an unknown type code: the innermost item fails
	for range maxDepth - 2 {
		// Each list claims as many items as it has bytes: the most a count
		// may claim.
		nested = compound32(codeList32, len(nested)+hostileSize/maxDepth, append(nested, make([]byte, hostileSize/maxDepth)...))
	}
	sequence := section(descAMQPSequence, []byte{codeList0})
	const zeroWidth = 1 << 10
	return map[string][]byte{
		"list of nulls":                                   fitted([]byte{codeNull}, 1),
		"list of empty lists":                             fitted([]byte{codeList0}, 1),
		"list of empty binaries":                          fitted([]byte{codeVbin8, 0}, 1),
		"list of one-byte strings":                        fitted([]byte{codeStr8, 1, 'x'}, 1),
		"list of uuids":                                   fitted(append([]byte{codeUUID}, make([]byte, 16)...), 1),
		"list of described nulls":                         fitted([]byte{codeDescribed, codeUlong0, codeNull}, 2),
		"list of described described nulls":               fitted([]byte{codeDescribed, codeUlong0, codeDescribed, codeUlong0, codeNull}, 3),
		"list of maps of a null and a null":               fitted([]byte{codeMap8, 3, 2, codeNull, codeNull}, 3),
		"list of arrays of 1,024 nulls":                   fitted(compound32(codeArray32, zeroWidth, []byte{codeNull}), 1+zeroWidth),
		"list of arrays of 65,536 nulls (no more fit)":    section(descAMQPValue, compound32(codeList32, hostileSize/10, repeated(compound32(codeArray32, 1<<16, []byte{codeNull}), hostileSize/10))),
		"application-properties of empty keys and nulls":  section(descApplicationProperties, compound32(codeMap32, 2*(hostileSize/3), repeated([]byte{codeStr8, 0, codeNull}, hostileSize/3))),
		"amqp-sequence sections of empty lists":           repeated(sequence, hostileSize/len(sequence)),
		"amqp-value lists nested, each claiming its size": section(descAMQPValue, nested),
	}
}

// decodeCost is the bytes DecodeMessage allocates for b.
func decodeCost(b []byte) (alloc uint64, err error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = DecodeMessage(b)
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, err
}

// TestHostileMessageMemoryIsBounded: a message of any shape costs the
// decoder at most a small multiple of its bytes (plus a fixed allowance):
// a 64 MiB message of millions of one-byte items must not take gigabytes
// (or, nested, tens of gigabytes). A message that would cost more is
// refused as malformed, which the receiver hands over as a delivery with
// its raw bytes (dead-lettered, not lost).
func TestHostileMessageMemoryIsBounded(t *testing.T) {
	for name, b := range hostileMessages() {
		t.Run(name, func(t *testing.T) {
			alloc, err := decodeCost(b)
			if err != nil && !errors.Is(err, ErrMalformed) {
				t.Errorf("DecodeMessage: %v, want nil or an ErrMalformed", err)
			}
			limit := uint64(maxBytesPerByte*len(b) + maxFixedCost)
			t.Logf("%d bytes: %d bytes allocated (%.1f per byte), err %v", len(b), alloc, float64(alloc)/float64(len(b)), err)
			if alloc > limit {
				t.Errorf("decoding %d bytes allocated %d bytes, more than %d (%d per byte + %d)", len(b), alloc, limit, maxBytesPerByte, maxFixedCost)
			}
		})
	}
}

// The memory a message may cost the decoder: maxBytesPerByte for each of
// its bytes, plus maxFixedCost (for minItems items, each some tens of
// bytes). The items' budget keeps every shape below about 4 per byte.
const (
	maxBytesPerByte = 6
	maxFixedCost    = 1 << 20
)

// FuzzDecodeMessage: no message costs the decoder more memory than the
// bound of TestHostileMessageMemoryIsBounded, decoded or refused; the
// hostile messages are its seeds.
func FuzzDecodeMessage(f *testing.F) {
	for _, b := range hostileMessages() {
		f.Add(b)
	}
	msg, _ := AppendMessage(nil, &Message{ApplicationProperties: Map{{"topic", "/t"}}, Data: [][]byte{{1}}})
	f.Add(msg)
	f.Fuzz(func(t *testing.T, b []byte) {
		alloc, err := decodeCost(b)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("DecodeMessage: %v, want nil or an ErrMalformed", err)
		}
		if limit := uint64(maxBytesPerByte*len(b) + maxFixedCost); alloc > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, more than %d", len(b), alloc, limit)
		}
	})
}

// TestReceiverHostileMessageIsADelivery: a message of more items than its
// size allows is a delivery with the reason and its bytes, as any other
// message that does not decode (dead-lettered by the source), and the link
// goes on.
func TestReceiverHostileMessageIsADelivery(t *testing.T) {
	r, p, _ := credited(t, serverOpts{}, ReceiverConfig{}, 2)
	hostile := section(descAMQPValue, compound32(codeList32, 5000, repeated([]byte{codeNull}, 5000)))
	p.transfer(U32(0), false, false, hostile)
	p.transfer(U32(1), false, false, message(t, "good", nil))
	d := receive(t, r)
	if d.Malformed == nil || !strings.Contains(d.Malformed.Error(), "list of 5000 items exceeds what the input's size allows") ||
		string(d.Raw) != string(hostile) {
		t.Errorf("delivery %d: malformed %v, %d raw bytes; want the reason and the %d bytes", d.ID, d.Malformed, len(d.Raw), len(hostile))
	}
	if d := receive(t, r); idOf(d) != "good" {
		t.Errorf("got %v, want the message after the hostile one", idOf(d))
	}
}

// TestItemBudgetChargesEachItemOnce: an input may decode to minItems items
// plus one per bytesPerItem of its bytes, each item charged once: the
// largest list of nulls within that budget decodes, alone (Decode) and as a
// message's amqp-value section (DecodeMessage, the general path), and so
// does the largest map of application properties (the platform's section,
// usualSection's path); one item more is refused. An item charged twice (say by its list's count and again as a
// value) would refuse the first.
func TestItemBudgetChargesEachItemOnce(t *testing.T) {
	pair := []byte{codeStr8, 1, 'k', codeNull} // a property "k": null
	for name, input := range map[string]func(n int) []byte{
		"value": func(n int) []byte { return compound32(codeList32, n, repeated([]byte{codeNull}, n)) },
		"message": func(n int) []byte {
			return section(descAMQPValue, compound32(codeList32, n, repeated([]byte{codeNull}, n)))
		},
		// the platform's section, decoded by usualSection: n/2 pairs
		"application-properties": func(n int) []byte {
			return section(descApplicationProperties, compound32(codeMap32, n, repeated(pair, n/2)))
		},
	} {
		t.Run(name, func(t *testing.T) {
			step := 1 // items of the compound per step: a map's come in pairs
			if name == "application-properties" {
				step = 2
			}
			// The compound is one item and each of its n items one more.
			n := minItems
			for 1+(n+step) <= minItems+len(input(n+step))/bytesPerItem {
				n += step
			}
			decode := func(b []byte) error {
				if name == "value" {
					_, _, err := Decode(b)
					return err
				}
				_, err := DecodeMessage(b)
				return err
			}
			if err := decode(input(n)); err != nil {
				t.Errorf("a compound of %d items (%d bytes, budget %d items): %v; want it decoded",
					n, len(input(n)), minItems+len(input(n))/bytesPerItem, err)
			}
			if err := decode(input(n + step)); err == nil || !strings.Contains(err.Error(), "exceeds what the input's size allows") {
				t.Errorf("a compound of %d items: %v; want it refused for the budget", n+step, err)
			}
		})
	}
}
