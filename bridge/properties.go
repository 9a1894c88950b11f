package bridge

import (
	"strconv"
)

// PropertyType is the type of an MNS message property, as MNS writes it.
type PropertyType string

// The MNS property types. System properties are always STRING.
const (
	PropString  PropertyType = "STRING"
	PropNumber  PropertyType = "NUMBER"
	PropBoolean PropertyType = "BOOLEAN"
	PropBinary  PropertyType = "BINARY" // Value is standard padded base64
)

// Property is one MNS message property (user or system).
type Property struct {
	Name  string
	Value string
	Type  PropertyType
}

// The platform metadata names attached by PropertySpec.Platform (before
// PropertySpec.Prefix).
const (
	PropTopic        = "topic"
	PropMessageID    = "messageId"
	PropGenerateTime = "generateTime"
	PropProductKey   = "productKey"
	PropDeviceName   = "deviceName"
)

// TraceSystemProperties are the platform properties that PropertySpec.Trace
// passes on as MNS system properties (W3C trace context and baggage).
var TraceSystemProperties = []string{"traceparent", "tracestate", "baggage"}

// PropertySpec says which MNS message properties the pipeline attaches to
// every message, from the platform's metadata. The zero value attaches
// none. Route-level properties (RouteSpec.Properties) come after these.
type PropertySpec struct {
	// Platform attaches topic, messageId, generateTime (NUMBER, epoch
	// milliseconds), productKey and deviceName as user properties, each
	// only when the message has it.
	Platform bool
	// PlatformProperties names properties of the platform message
	// (Message.Properties: STOMP headers, AMQP application properties) to
	// copy as STRING user properties when present.
	PlatformProperties []string
	// Prefix is put before every name above (e.g. "iot." gives
	// "iot.topic"); route-level properties are named as written.
	Prefix string
	// Trace passes the platform's traceparent, tracestate and baggage
	// properties on as MNS system properties.
	Trace bool
}

// Enabled reports whether the spec attaches anything.
func (s *PropertySpec) Enabled() bool {
	return s != nil && (s.Platform || len(s.PlatformProperties) > 0 || s.Trace)
}

// Build returns the user and system properties for m, with the route's
// own properties appended; a route property whose name is already taken
// replaces the earlier one. Both are nil when there are none.
func (s *PropertySpec) Build(m *Message, route []Property) (user, system []Property) {
	if s.Enabled() {
		if s.Platform {
			pk, dn := DeviceFromTopic(m.Topic)
			user = make([]Property, 0, 5+len(s.PlatformProperties)+len(route))
			add := func(name, value string, t PropertyType) {
				if value != "" {
					user = append(user, Property{Name: s.Prefix + name, Value: value, Type: t})
				}
			}
			add(PropTopic, m.Topic, PropString)
			add(PropMessageID, m.MessageID, PropString)
			if m.GenerateTime != 0 {
				add(PropGenerateTime, strconv.FormatInt(m.GenerateTime, 10), PropNumber)
			}
			add(PropProductKey, pk, PropString)
			add(PropDeviceName, dn, PropString)
		}
		for _, n := range s.PlatformProperties {
			if v, ok := m.Properties[n]; ok && v != "" {
				user = setProperty(user, Property{Name: s.Prefix + n, Value: v, Type: PropString})
			}
		}
		if s.Trace {
			for _, n := range TraceSystemProperties {
				if v, ok := m.Properties[n]; ok && v != "" {
					system = append(system, Property{Name: n, Value: v, Type: PropString})
				}
			}
		}
	}
	for _, p := range route {
		user = setProperty(user, p)
	}
	return user, system
}

// setProperty replaces the property of p's name in ps, or appends p.
func setProperty(ps []Property, p Property) []Property {
	for i := range ps {
		if ps[i].Name == p.Name {
			ps[i] = p
			return ps
		}
	}
	return append(ps, p)
}

// PropertiesSize is what the properties count toward the MNS message size:
// names, types and values.
func PropertiesSize(ps []Property) int {
	n := 0
	for _, p := range ps {
		n += len(p.Name) + len(p.Value) + len(p.Type)
	}
	return n
}
