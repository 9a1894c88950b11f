package mns

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"unicode/utf8"
)

const (
	xmlDecl = `<?xml version="1.0" encoding="UTF-8"?>`
	// xmlNS is the namespace MNS answers with; requests carry it too.
	xmlNS = "http://mns.aliyuncs.com/doc/v1/"
)

// bodyText checks body against the encoding and returns the length of the
// MessageBody text MNS will store (the base64 text, or the raw text) and
// the length it takes in the XML request.
func bodyText(body []byte, raw bool) (textLen, xmlLen int, err error) {
	if !raw {
		n := base64.StdEncoding.EncodedLen(len(body))
		return n, n, nil
	}
	xmlLen = len(body)
	for i := 0; i < len(body); {
		c := body[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '<', c == '>':
				xmlLen += 3
			case c == '&':
				xmlLen += 4
			case c == '\r':
				xmlLen += 4 // &#13;
			case c < 0x20 && c != '\t' && c != '\n':
				return 0, 0, ErrBodyNotXMLText
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(body[i:])
		if r == utf8.RuneError && size == 1 || !isXMLChar(r) {
			return 0, 0, ErrBodyNotXMLText
		}
		i += size
	}
	return len(body), xmlLen, nil
}

// appendText appends s escaped for element content.
func appendText(dst, s []byte) []byte {
	last := 0
	for i, c := range s {
		var esc string
		switch c {
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

// appendMessageBody appends <MessageBody>…</MessageBody> and returns the
// MessageBody text as MNS will see it (a slice of dst for base64, body
// itself for raw).
func appendMessageBody(dst, body []byte, raw bool) ([]byte, []byte) {
	dst = append(dst, "<MessageBody>"...)
	var text []byte
	if raw {
		dst = appendText(dst, body)
		text = body
	} else {
		st := len(dst)
		dst = base64.StdEncoding.AppendEncode(dst, body)
		text = dst[st:]
	}
	dst = append(dst, "</MessageBody>"...)
	return dst, text
}

// replyEntry is one <Message> of a send reply: a success or an error.
type replyEntry struct {
	MessageID     string `xml:"MessageId"`
	BodyMD5       string `xml:"MessageBodyMD5"`
	ReceiptHandle string `xml:"ReceiptHandle"`
	ErrorCode     string `xml:"ErrorCode"`
	ErrorMessage  string `xml:"ErrorMessage"`
}

// errorReply is the <Error> body.
type errorReply struct {
	Code      string `xml:"Code"`
	Message   string `xml:"Message"`
	RequestID string `xml:"RequestId"`
	HostID    string `xml:"HostId"`
}

// reply is a parsed send reply: root is "Message", "Messages" or "Error".
type reply struct {
	root    string
	entries []replyEntry
	err     errorReply
}

// parseReply reads a SendMessage, BatchSendMessage, PublishMessage or error
// reply, by the fast scanner when it can and by encoding/xml otherwise.
// ids is the scanner's scratch (kept with r in a replyBuf, so that it is
// reused).
func parseReply(data []byte, r *reply, ids *idText) error {
	r.root, r.entries, r.err = "", r.entries[:0], errorReply{}
	if err := scanReply(data, r, ids); err == nil {
		return nil
	}
	r.root, r.entries, r.err = "", r.entries[:0], errorReply{}
	return decodeReply(data, r)
}

func scanReply(data []byte, r *reply, ids *idText) error {
	s := scanner{b: data}
	var t token
	if err := s.nextSignificant(&t); err != nil {
		return err
	}
	if t.kind != tokStart || t.empty {
		return errUnusual
	}
	ids.buf, ids.spans, ids.first = ids.buf[:0], ids.spans[:0], len(r.entries)
	switch string(t.name) {
	case "Messages":
		r.root = "Messages"
		for {
			if err := s.nextSignificant(&t); err != nil {
				return err
			}
			if t.kind == tokEnd && string(t.name) == "Messages" {
				break
			}
			if t.kind != tokStart || t.empty || string(t.name) != "Message" {
				return errUnusual
			}
			if err := scanEntry(&s, r, ids); err != nil {
				return err
			}
		}
	case "Message":
		r.root = "Message"
		if err := scanEntry(&s, r, ids); err != nil {
			return err
		}
	case "Error":
		r.root = "Error"
		err := s.leaves("Error", func(name, text []byte) {
			switch string(name) {
			case "Code":
				r.err.Code = string(text)
			case "Message":
				r.err.Message = string(text)
			case "RequestId":
				r.err.RequestID = string(text)
			case "HostId":
				r.err.HostID = string(text)
			}
		})
		if err != nil {
			return err
		}
	default:
		return errUnusual
	}
	if err := s.nextSignificant(&t); err != nil || t.kind != tokEOF {
		return errUnusual
	}
	ids.set(r.entries)
	return nil
}

// idText gathers the MessageId and MessageBodyMD5 texts of a reply's
// entries (scanEntry), which then share one string (set): one allocation a
// reply instead of one a message. A result kept alone keeps the reply's
// ids and sums alive with it, about 64 bytes a message of the request.
type idText struct {
	buf   []byte
	spans [][2]idSpan // per entry from first: its MessageId and MessageBodyMD5
	first int         // the first entry of this reply in reply.entries
}

// idSpan is where a text is in idText.buf.
type idSpan struct{ from, to int }

func (t *idText) add(text []byte) idSpan {
	from := len(t.buf)
	t.buf = append(t.buf, text...)
	return idSpan{from, len(t.buf)}
}

// set gives entries[first:] their MessageId and MessageBodyMD5.
func (t *idText) set(entries []replyEntry) {
	all := string(t.buf)
	for k, sp := range t.spans {
		e := &entries[t.first+k]
		e.MessageID, e.BodyMD5 = all[sp[0].from:sp[0].to], all[sp[1].from:sp[1].to]
	}
}

// scanEntry reads the children of a <Message> of the reply into a new
// entry of r; its MessageId and MessageBodyMD5 go to ids.
func scanEntry(s *scanner, r *reply, ids *idText) error {
	var e replyEntry
	var id, sum idSpan
	err := s.leaves("Message", func(name, text []byte) {
		switch string(name) {
		case "MessageId":
			id = ids.add(text)
		case "MessageBodyMD5":
			sum = ids.add(text)
		case "ReceiptHandle":
			e.ReceiptHandle = string(text)
		case "ErrorCode":
			e.ErrorCode = string(text)
		case "ErrorMessage":
			e.ErrorMessage = string(text)
		}
	})
	if err != nil {
		return err
	}
	ids.spans = append(ids.spans, [2]idSpan{id, sum})
	r.entries = append(r.entries, e)
	return nil
}

// decodeReply is the encoding/xml fallback of scanReply.
func decodeReply(data []byte, r *reply) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("read reply XML: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		r.root = se.Name.Local
		switch se.Name.Local {
		case "Messages":
			var v struct {
				Entries []replyEntry `xml:"Message"`
			}
			if err := d.DecodeElement(&v, &se); err != nil {
				return fmt.Errorf("read reply XML: %w", err)
			}
			r.entries = append(r.entries, v.Entries...)
		case "Message":
			var e replyEntry
			if err := d.DecodeElement(&e, &se); err != nil {
				return fmt.Errorf("read reply XML: %w", err)
			}
			r.entries = append(r.entries, e)
		case "Error":
			if err := d.DecodeElement(&r.err, &se); err != nil {
				return fmt.Errorf("read reply XML: %w", err)
			}
		default:
			return fmt.Errorf("read reply XML: unexpected root element <%s>", se.Name.Local)
		}
		return nil
	}
}
