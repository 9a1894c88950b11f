package amqp10

import "encoding/binary"

// parseTransfer decodes a transfer performative from the start of b (a
// frame body) into t without building its field list, and returns the
// bytes it took. ok is false when b is not a transfer or holds anything
// but null, unsigned integers, a binary delivery-tag and booleans in its
// fields (a delivery state, say): ParseFrame then decodes it the general
// way, which also names what is wrong. t.DeliveryTag refers to b.
func parseTransfer(b []byte, t *Transfer) (n int, ok bool) {
	if len(b) < 4 || b[0] != codeDescribed || b[1] != codeSmallUlong || b[2] != descTransfer {
		return 0, false
	}
	p := 3
	var size, count int
	switch b[p] {
	case codeList0:
		return 0, false // the handle is mandatory
	case codeList8:
		if len(b) < p+3 {
			return 0, false
		}
		size, count = int(b[p+1]), int(b[p+2])
		p += 3
		size--
	case codeList32:
		if len(b) < p+9 {
			return 0, false
		}
		size, count = int(binary.BigEndian.Uint32(b[p+1:])), int(binary.BigEndian.Uint32(b[p+5:]))
		p += 9
		size -= 4
	default:
		return 0, false
	}
	end := p + size
	if size < 0 || end > len(b) || count < 1 || count > 11 {
		return 0, false
	}
	*t = Transfer{}
	for i := range count {
		if p >= end {
			return 0, false
		}
		c := b[p]
		p++
		if c == codeNull {
			if i == 0 {
				return 0, false
			}
			continue
		}
		switch i {
		case 0, 1, 3: // handle, delivery-id, message-format: uint
			var v uint32
			switch c {
			case codeUint0:
			case codeSmallUint, codeUint:
				var fits bool
				if v, p, fits = fixedUint(b, p, end, c == codeSmallUint); !fits {
					return 0, false
				}
			default:
				return 0, false
			}
			switch i {
			case 0:
				t.Handle = v
			case 1:
				t.DeliveryID = &t.deliveryID
				t.deliveryID = v
			default:
				t.MessageFormat = &t.messageFormat
				t.messageFormat = v
			}
		case 2: // delivery-tag: binary
			var l int
			switch c {
			case codeVbin8, codeVbin32:
				n, next, fits := fixedUint(b, p, end, c == codeVbin8)
				if !fits {
					return 0, false
				}
				l, p = int(n), next
			default:
				return 0, false
			}
			if l < 0 || p+l > end {
				return 0, false
			}
			t.DeliveryTag = b[p : p+l : p+l]
			p += l
		case 4, 5, 8, 9, 10: // settled, more, resume, aborted, batchable
			var v bool
			switch c {
			case codeTrue:
				v = true
			case codeFalse:
			case codeBool:
				if p+1 > end || b[p] > 1 {
					return 0, false
				}
				v = b[p] == 1
				p++
			default:
				return 0, false
			}
			switch i {
			case 4:
				t.Settled = v
			case 5:
				t.More = v
			case 9:
				t.Aborted = v
			}
		default: // rcv-settle-mode, state: the general path
			return 0, false
		}
	}
	if p != end {
		return 0, false
	}
	return end, true
}

// fixedUint reads the value after a constructor whose value is one byte
// (short: smalluint, vbin8's length) or four big-endian bytes (uint,
// vbin32's length) at b[p:end], and returns the position after it; fits is
// false when it does not fit before end.
func fixedUint(b []byte, p, end int, short bool) (v uint32, next int, fits bool) {
	if short {
		if p+1 > end {
			return 0, p, false
		}
		return uint32(b[p]), p + 1, true
	}
	if p+4 > end {
		return 0, p, false
	}
	return binary.BigEndian.Uint32(b[p:]), p + 4, true
}
