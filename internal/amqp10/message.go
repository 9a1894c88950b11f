package amqp10

import "fmt"

// Message section descriptors (part 3, section 3.2).
const (
	descHeader                = 0x70
	descDeliveryAnnotations   = 0x71
	descMessageAnnotations    = 0x72
	descProperties            = 0x73
	descApplicationProperties = 0x74
	descData                  = 0x75
	descAMQPSequence          = 0x76
	descAMQPValue             = 0x77
	descFooter                = 0x78
)

// Message is an AMQP message as its sections. Header and Properties are
// kept as their field lists; the platform uses neither. The body is Data
// (one binary per data section), or Sequence, or Value when HasValue.
type Message struct {
	Header                []any
	DeliveryAnnotations   Map
	MessageAnnotations    Map
	Properties            []any
	ApplicationProperties Map // keys are strings
	Data                  [][]byte
	Sequence              [][]any
	Value                 any
	HasValue              bool
	Footer                Map
}

// Property returns the application property named name.
func (m *Message) Property(name string) (any, bool) {
	return m.ApplicationProperties.Get(name)
}

// AppendMessage appends the encoding of m's sections, in the order the
// specification requires.
func AppendMessage(b []byte, m *Message) ([]byte, error) {
	var sections []Described
	if m.Header != nil {
		sections = append(sections, Described{uint64(descHeader), m.Header})
	}
	if m.DeliveryAnnotations != nil {
		sections = append(sections, Described{uint64(descDeliveryAnnotations), m.DeliveryAnnotations})
	}
	if m.MessageAnnotations != nil {
		sections = append(sections, Described{uint64(descMessageAnnotations), m.MessageAnnotations})
	}
	if m.Properties != nil {
		sections = append(sections, Described{uint64(descProperties), m.Properties})
	}
	if m.ApplicationProperties != nil {
		for _, kv := range m.ApplicationProperties {
			if _, ok := kv.Key.(string); !ok {
				return b, fmt.Errorf("amqp10: application property key %v is a %T, must be a string", kv.Key, kv.Key)
			}
		}
		sections = append(sections, Described{uint64(descApplicationProperties), m.ApplicationProperties})
	}
	for _, d := range m.Data {
		if d == nil {
			d = []byte{}
		}
		sections = append(sections, Described{uint64(descData), d})
	}
	for _, s := range m.Sequence {
		if s == nil {
			s = []any{}
		}
		sections = append(sections, Described{uint64(descAMQPSequence), s})
	}
	if m.HasValue {
		sections = append(sections, Described{uint64(descAMQPValue), m.Value})
	}
	if m.Footer != nil {
		sections = append(sections, Described{uint64(descFooter), m.Footer})
	}
	for _, s := range sections {
		var err error
		if b, err = Append(b, s); err != nil {
			return b, fmt.Errorf("amqp10: encode message section 0x%02x: %w", s.Descriptor, err)
		}
	}
	return b, nil
}

// DecodeMessage decodes the sections of a message (the payload of its
// transfers). Sections must come in the specified order, each at most once
// except data and amqp-sequence, and the body must be of one kind. A string
// that is not UTF-8 or a symbol that is not ASCII is taken as its bytes (as
// go-amqp does), not a reason to refuse the message.
func DecodeMessage(b []byte) (*Message, error) {
	m := &Message{}
	if err := decodeMessageInto(m, b); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeMessageInto is DecodeMessage into m (zero): it decodes each
// section's value straight into m's field, with no list of sections.
func decodeMessageInto(m *Message, b []byte) error { return decodeSections(m, b, true) }

// decodeSections is decodeMessageInto; usual takes the platform's sections
// without the general path's interface values (see usualSection): false
// only in tests, which check that both agree.
func decodeSections(m *Message, b []byte, usual bool) error {
	d := newDecoder(b, true)
	last := uint64(0)
	for i := 0; d.pos < len(b); i++ {
		c, err := d.sectionCode(i)
		if err != nil {
			return err
		}
		repeat := c == last && (c == descData || c == descAMQPSequence)
		body := c >= descData && c <= descAMQPValue
		if c < last || (c == last && !repeat) || (body && last >= descData && last <= descAMQPValue && c != last) {
			return fmt.Errorf("%w: message section 0x%02x (section %d) is out of order or repeated", ErrMalformed, c, i)
		}
		last = c
		if usual {
			done, err := d.usualSection(m, c)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		v, err := d.item(1)
		if err != nil {
			return fmt.Errorf("message: %w", err)
		}
		if want, ok := sectionHolds(c, v); !ok {
			return fmt.Errorf("%w: message section 0x%02x is a %T, want a %s", ErrMalformed, c, v, want)
		}
		switch c {
		case descHeader:
			m.Header = v.([]any)
		case descDeliveryAnnotations:
			m.DeliveryAnnotations = v.(Map)
		case descMessageAnnotations:
			m.MessageAnnotations = v.(Map)
		case descProperties:
			m.Properties = v.([]any)
		case descApplicationProperties:
			mp := v.(Map)
			if err := stringKeys(mp); err != nil {
				return err
			}
			m.ApplicationProperties = mp
		case descData:
			m.Data = append(m.Data, v.([]byte))
		case descAMQPSequence:
			m.Sequence = append(m.Sequence, v.([]any))
		case descAMQPValue:
			m.Value, m.HasValue = v, true
		case descFooter:
			m.Footer = v.(Map)
		}
	}
	return nil
}

// usualSection decodes section c into m when it is what the platform sends:
// application-properties as a map, data as a binary, each without the
// interface value the general path (item) puts it in, with the general
// path's charge and errors. done is false, and nothing is read, for
// anything else.
func (d *decoder) usualSection(m *Message, c uint64) (done bool, err error) {
	if d.pos >= len(d.b) {
		return false, nil
	}
	k := d.b[d.pos]
	isMap := c == descApplicationProperties && (k == codeMap8 || k == codeMap32)
	isBinary := c == descData && (k == codeVbin8 || k == codeVbin32)
	if !isMap && !isBinary {
		return false, nil
	}
	if err := d.take(1, "the input"); err != nil {
		return true, fmt.Errorf("message: %w", err)
	}
	d.pos++
	if isBinary {
		p, err := d.variable(k)
		if err != nil {
			return true, fmt.Errorf("message: %w", err)
		}
		m.Data = append(m.Data, append([]byte{}, p...))
		return true, nil
	}
	mp, err := d.mapOf(k, 1)
	if err != nil {
		return true, fmt.Errorf("message: %w", err)
	}
	if err := stringKeys(mp); err != nil {
		return true, err
	}
	m.ApplicationProperties = mp
	return true, nil
}

// stringKeys refuses application properties with a key that is not a
// string.
func stringKeys(mp Map) error {
	for _, kv := range mp {
		if _, ok := kv.Key.(string); !ok {
			return fmt.Errorf("%w: application property key %v is a %T, must be a string", ErrMalformed, kv.Key, kv.Key)
		}
	}
	return nil
}

// sectionCode reads the descriptor of message section i and returns its
// code.
func (d *decoder) sectionCode(i int) (uint64, error) {
	start := d.pos
	c, err := d.byte1("message section")
	if err != nil {
		return 0, fmt.Errorf("message: %w", err)
	}
	if c != codeDescribed {
		d.pos = start
		v, err := d.value(1)
		if err != nil {
			return 0, fmt.Errorf("message: %w", err)
		}
		return 0, fmt.Errorf("%w: message section %d is a %T, not a described section", ErrMalformed, i, v)
	}
	desc, err := d.value(1)
	if err != nil {
		return 0, fmt.Errorf("message: %w", err)
	}
	code, ok := code(desc)
	if !ok || code < descHeader || code > descFooter {
		return 0, fmt.Errorf("%w: message section %d has unknown descriptor %v", ErrMalformed, i, desc)
	}
	return code, nil
}

// sectionHolds reports whether v is of the type that message section c
// holds (part 3, section 3.2), and names that type: a list, a map, a binary,
// or any value for amqp-value.
func sectionHolds(c uint64, v any) (want string, ok bool) {
	switch c {
	case descHeader, descProperties, descAMQPSequence:
		_, ok = v.([]any)
		return "list", ok
	case descData:
		_, ok = v.([]byte)
		return "binary", ok
	case descAMQPValue:
		return "", true
	}
	_, ok = v.(Map) // the annotations, application-properties and footer
	return "map", ok
}
