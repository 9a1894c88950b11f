package mnsemu

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Message properties and FIFO group ids (MNS 2025): the limits of the
// "message properties" help page, checked as the server does.
const (
	maxProperties   = 50
	maxPropNameLen  = 256
	maxPropValueLen = 4096
	maxMessageSize  = 65536 // body text plus property names, types and values
)

// Property is a message property as the emulator stores it. Value is the
// text as sent: base64 for BINARY.
type Property struct {
	Name, Value, Type string
}

// systemNames are the system properties a sender may set.
var systemNames = map[string]bool{"traceparent": true, "tracestate": true, "baggage": true}

func invalidProp(msg string) *apiError { return errf(400, "InvalidArgument", msg) }

// checkProperties validates the properties of one message and returns them
// and the bytes they count toward the message size.
func checkProperties(m inMessage) (user, system []Property, size int, err *apiError) {
	if m.User != nil {
		if len(m.User.List) > maxProperties {
			return nil, nil, 0, invalidProp("The count of UserProperties should not be larger than 50.")
		}
		seen := map[string]bool{}
		for _, p := range m.User.List {
			pr, err := checkProperty(p, false)
			if err != nil {
				return nil, nil, 0, err
			}
			if seen[pr.Name] {
				return nil, nil, 0, invalidProp("The property name " + pr.Name + " is duplicated.")
			}
			seen[pr.Name] = true
			user = append(user, pr)
			size += len(pr.Name) + len(pr.Value) + len(pr.Type)
		}
	}
	if m.System != nil {
		for _, p := range m.System.List {
			pr, err := checkProperty(p, true)
			if err != nil {
				return nil, nil, 0, err
			}
			system = append(system, pr)
			size += len(pr.Name) + len(pr.Value) + len(pr.Type)
		}
	}
	return user, system, size, nil
}

func checkProperty(p inProperty, system bool) (Property, *apiError) {
	if p.Name == nil || p.Value == nil || p.Type == nil {
		return Property{}, invalidProp("A property needs Name, Value and Type.")
	}
	pr := Property{Name: *p.Name, Value: *p.Value, Type: strings.TrimSpace(*p.Type)}
	if system {
		if !systemNames[pr.Name] {
			return Property{}, invalidProp("The system property name " + pr.Name + " is not supported.")
		}
		if pr.Type != "STRING" {
			return Property{}, invalidProp("The type of system property " + pr.Name + " should be STRING.")
		}
	} else if !validPropName(pr.Name) {
		return Property{}, invalidProp("The property name " + strconv.Quote(pr.Name) + " is invalid: 1 to 256 of [A-Za-z0-9_.-], not starting or ending with '.', no '..'.")
	}
	if utf8.RuneCountInString(pr.Value) > maxPropValueLen {
		return Property{}, invalidProp("The length of property value " + pr.Name + " should not be larger than 4096.")
	}
	switch pr.Type {
	case "STRING", "NUMBER":
		// The server does not check NUMBER values (docs).
	case "BOOLEAN":
		if pr.Value != "true" && pr.Value != "false" {
			return Property{}, invalidProp("The value of BOOLEAN property " + pr.Name + " should be true or false.")
		}
	case "BINARY":
		if _, err := base64.StdEncoding.DecodeString(pr.Value); err != nil {
			return Property{}, invalidProp("The value of BINARY property " + pr.Name + " should be base64.")
		}
	default:
		return Property{}, invalidProp("The type of property " + pr.Name + " should be STRING, NUMBER, BOOLEAN or BINARY.")
	}
	return pr, nil
}

func validPropName(n string) bool {
	if n == "" || len(n) > maxPropNameLen || n[0] == '.' || n[len(n)-1] == '.' || strings.Contains(n, "..") {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// UserProperty returns the value of the user property name and whether
// the message has it.
func (m StoredMessage) UserProperty(name string) (string, bool) {
	for _, p := range m.UserProperties {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}
