package mnsemu

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strconv"
	"time"
)

// xmlNS is the namespace of MNS's requests and replies.
const xmlNS = "http://mns.aliyuncs.com/doc/v1/"

// validNS reports whether a request's namespace is one the SDKs send: with
// the trailing slash (Python, PHP, Node), without (Java) or none (Go).
func validNS(ns string) bool {
	return ns == "" || ns == xmlNS || ns == "http://mns.aliyuncs.com/doc/v1"
}

// inMessage is one <Message> of a send or publish request. Absent elements
// are nil.
type inMessage struct {
	Body     *string                  `xml:"MessageBody"`
	Delay    *string                  `xml:"DelaySeconds"`
	Priority *string                  `xml:"Priority"`
	Tag      *string                  `xml:"MessageTag"`
	User     *userProps[inProperty]   `xml:"UserProperties"`
	System   *systemProps[inProperty] `xml:"SystemProperties"`
	GroupID  *string                  `xml:"MessageGroupId"`
}

// inProperty is one PropertyValue or SystemPropertyValue; absent children
// are nil.
type inProperty struct {
	Name  *string `xml:"Name"`
	Value *string `xml:"Value"`
	Type  *string `xml:"Type"`
}

// userProps is a <UserProperties> element, systemProps a
// <SystemProperties> one: of inProperty in requests, of Property in replies.
type userProps[P any] struct {
	List []P `xml:"PropertyValue"`
}

type systemProps[P any] struct {
	List []P `xml:"SystemPropertyValue"`
}

// inRequest is a parsed send or publish request body.
type inRequest struct {
	root string // "Message" or "Messages"
	msgs []inMessage
}

// requestDoc is the root element of a send or publish request: a
// <Message>, whose children fill the embedded inMessage, or a <Messages>
// batch, whose <Message> children fill Batch.
type requestDoc struct {
	XMLName xml.Name
	Batch   []inMessage `xml:"Message"`
	inMessage
}

var errBadNS = errors.New("bad namespace")

// parseMessages reads a <Message> or <Messages> request with encoding/xml,
// which handles XML in full (the emulator shares no parser with the client
// it tests), and checks that nothing but space, comments and processing
// instructions follow the root element.
func parseMessages(data []byte, r *inRequest) error {
	var doc requestDoc
	d := xml.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(&doc); err != nil {
		return err
	}
	if !validNS(doc.XMLName.Space) {
		return errBadNS
	}
	switch r.root = doc.XMLName.Local; r.root {
	case "Messages":
		r.msgs = doc.Batch
	case "Message":
		r.msgs = []inMessage{doc.inMessage}
	default:
		return errors.New("unexpected root element <" + r.root + ">")
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return nil // the end, or what no parser reads as more elements
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

// Replies are written by encoding/xml from the structures below, in the
// element order of the API reference. The namespace stands on the root
// element only: on <Message> for one message, on <Messages> for a batch.

// errorReply is the body of every error reply.
type errorReply struct {
	Code      string
	Message   string
	RequestId string
	HostId    string
}

// sentReply is one <Message> of a SendMessage, BatchSendMessage or
// PublishMessage reply: the stored message, or why it failed.
type sentReply struct {
	MessageId      string `xml:",omitempty"`
	MessageBodyMD5 string `xml:",omitempty"`
	ReceiptHandle  string `xml:",omitempty"`
	ErrorCode      string `xml:",omitempty"`
	ErrorMessage   string `xml:",omitempty"`
}

// receivedReply is one <Message> of a ReceiveMessage, BatchReceiveMessage
// or peek reply; times are in Unix milliseconds (0: never).
type receivedReply struct {
	MessageId        string
	ReceiptHandle    string `xml:",omitempty"`
	MessageBodyMD5   string
	MessageBody      string
	EnqueueTime      int64
	NextVisibleTime  int64
	FirstDequeueTime int64
	DequeueCount     int
	Priority         int
	UserProperties   *userProps[Property]   `xml:",omitempty"`
	SystemProperties *systemProps[Property] `xml:",omitempty"`
	MessageGroupId   string                 `xml:",omitempty"`
}

// queueReply is the body of GetQueueAttributes; times in Unix seconds.
type queueReply struct {
	QueueName              string
	CreateTime             int64
	LastModifyTime         int64
	DelaySeconds           int
	MaximumMessageSize     int
	MessageRetentionPeriod int
	VisibilityTimeout      int
	PollingWaitSeconds     int
	ActiveMessages         int
	InactiveMessages       int
	DelayMessages          int
	LoggingEnabled         boolText
}

// topicReply is the body of GetTopicAttributes.
type topicReply struct {
	TopicName              string
	CreateTime             int64
	LastModifyTime         int64
	MaximumMessageSize     int
	MessageRetentionPeriod int
	MessageCount           int64
	LoggingEnabled         boolText
}

// boolText is a boolean as MNS writes it: True or False.
type boolText bool

func (b boolText) MarshalText() ([]byte, error) {
	if b {
		return []byte("True"), nil
	}
	return []byte("False"), nil
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// encodeReply writes the XML declaration and v as the root element local,
// in the MNS namespace, to buf.
func encodeReply(buf *bytes.Buffer, local string, v any) []byte {
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(buf)
	if err := enc.EncodeElement(v, xml.StartElement{Name: xml.Name{Space: xmlNS, Local: local}}); err != nil {
		panic("mnsemu: encoding a " + local + " reply: " + err.Error()) // the structures above always encode
	}
	return buf.Bytes()
}

// encodeMessages writes list as one <Message> or, for a batch, as a
// <Messages> list, to buf.
func encodeMessages[T any](buf *bytes.Buffer, list []T, batch bool) []byte {
	if !batch {
		return encodeReply(buf, "Message", &list[0])
	}
	return encodeReply(buf, "Messages", struct {
		List []T `xml:"Message"`
	}{list})
}
