package mnsemu

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strconv"
)

const (
	xmlDecl = `<?xml version="1.0" encoding="UTF-8"?>`
	xmlNS   = "http://mns.aliyuncs.com/doc/v1/"
)

// validNS reports whether a request's namespace is one the SDKs send: with
// the trailing slash (Python, PHP, Node), without (Java) or none (Go).
func validNS(ns string) bool {
	return ns == "" || ns == xmlNS || ns == "http://mns.aliyuncs.com/doc/v1"
}

// appendText appends s escaped for XML element content.
func appendText(dst []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '&':
			esc = "&amp;"
		case '\r':
			esc = "&#13;"
		default:
			continue
		}
		dst = append(dst, s[last:i]...)
		dst = append(dst, esc...)
		last = i + 1
	}
	return append(dst, s[last:]...)
}

// inMessage is one <Message> of a send or publish request. Absent elements
// are nil.
type inMessage struct {
	Body     *string        `xml:"MessageBody"`
	Delay    *string        `xml:"DelaySeconds"`
	Priority *string        `xml:"Priority"`
	Tag      *string        `xml:"MessageTag"`
	User     *inProperties  `xml:"UserProperties"`
	System   *inSystemProps `xml:"SystemProperties"`
	GroupID  *string        `xml:"MessageGroupId"`
}

// inProperty is one PropertyValue or SystemPropertyValue; absent children
// are nil.
type inProperty struct {
	Name  *string `xml:"Name"`
	Value *string `xml:"Value"`
	Type  *string `xml:"Type"`
}

type inProperties struct {
	List []inProperty `xml:"PropertyValue"`
}

type inSystemProps struct {
	List []inProperty `xml:"SystemPropertyValue"`
}

// inRequest is a parsed send or publish request body.
type inRequest struct {
	root string // "Message" or "Messages"
	msgs []inMessage
}

var errBadNS = errors.New("bad namespace")

// parseMessages reads a <Message> or <Messages> request with encoding/xml,
// which handles XML in full (the emulator shares no parser with the client
// it tests).
func parseMessages(data []byte, r *inRequest) error {
	r.root, r.msgs = "", r.msgs[:0]
	return decodeMessages(data, r)
}

// decodeMessages decodes the root element and checks that nothing but
// space and comments follows it.
func decodeMessages(data []byte, r *inRequest) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !validNS(se.Name.Space) {
			return errBadNS
		}
		r.root = se.Name.Local
		switch se.Name.Local {
		case "Messages":
			var v struct {
				Msgs []inMessage `xml:"Message"`
			}
			if err := d.DecodeElement(&v, &se); err != nil {
				return err
			}
			r.msgs = append(r.msgs, v.Msgs...)
		case "Message":
			var m inMessage
			if err := d.DecodeElement(&m, &se); err != nil {
				return err
			}
			r.msgs = append(r.msgs, m)
		default:
			return errors.New("unexpected root element <" + se.Name.Local + ">")
		}
		// Nothing but space and comments may follow.
		for {
			tok, err := d.Token()
			if err != nil {
				return nil
			}
			switch tk := tok.(type) {
			case xml.StartElement:
				return errors.New("a second root element")
			case xml.CharData:
				if len(bytes.TrimSpace(tk)) > 0 {
					return errors.New("text after the root element")
				}
			}
		}
	}
}

// intField parses an optional integer element within [lo, hi]; def when
// absent.
func intField(v *string, name string, lo, hi, def int) (int, *apiError) {
	if v == nil {
		return def, nil
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace([]byte(*v))))
	if err != nil || n < lo || n > hi {
		return 0, errf(400, "InvalidArgument", "The value of "+name+" should between "+strconv.Itoa(lo)+" and "+strconv.Itoa(hi)+".")
	}
	return n, nil
}
