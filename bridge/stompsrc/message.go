package stompsrc

import (
	"encoding/base64"
	"strconv"

	"github.com/go-stomp/stomp/v3/frame"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Headers the platform puts on a MESSAGE frame.
const (
	hdrTopic        = "topic"
	hdrMessageID    = "messageId"
	hdrGenerateTime = "generateTime"
)

// isTransportHeader reports STOMP bookkeeping headers, which are not
// message properties.
func isTransportHeader(k string) bool {
	switch k {
	case frame.Subscription, frame.Ack, frame.ContentLength:
		return true
	}
	return false
}

// headerSource is a frame's headers: the source's own (header) or
// go-stomp's *frame.Header.
type headerSource interface {
	Len() int
	GetAt(i int) (string, string)
	Contains(name string) (string, bool)
	Get(name string) string
}

// toMessage turns a MESSAGE frame's headers and body into a bridge message.
// Topic is the "topic" header, else the destination; MessageID is
// "messageId", else "message-id"; GenerateTime is "generateTime" when it is
// an integer. Every other header except the STOMP bookkeeping ones is kept in
// Properties (the first value of a repeated header wins, as in STOMP 1.2).
//
// With decodeBase64 the body is decoded; a body that is not valid base64
// is kept as received and the message is marked Invalid with the reason.
//
// It is generic so that a frame's header slice is not boxed into an
// interface value (an allocation a message).
func toMessage[H headerSource](h H, body []byte, decodeBase64 bool) bridge.Message {
	var m bridge.Message
	// Headers mapped to fields are not repeated in Properties.
	var usedTopic, usedID, usedMsgID, usedGen bool
	if v, ok := h.Contains(hdrTopic); ok {
		m.Topic, usedTopic = v, true
	} else {
		m.Topic = h.Get(frame.Destination)
	}
	if v, ok := h.Contains(hdrMessageID); ok {
		m.MessageID, usedID = v, true
	} else {
		m.MessageID, usedMsgID = h.Get(frame.MessageId), true
	}
	if v, ok := h.Contains(hdrGenerateTime); ok {
		if t, err := strconv.ParseInt(v, 10, 64); err == nil {
			m.GenerateTime, usedGen = t, true
		}
	}
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		switch {
		case k == hdrTopic && usedTopic, k == hdrMessageID && usedID, k == frame.MessageId && usedMsgID,
			k == hdrGenerateTime && usedGen, isTransportHeader(k):
			continue
		}
		if m.Properties == nil {
			m.Properties = make(map[string]string, h.Len())
		}
		if _, seen := m.Properties[k]; !seen {
			m.Properties[k] = v
		}
	}
	m.Body = body
	if decodeBase64 {
		dec := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
		n, err := base64.StdEncoding.Decode(dec, body)
		if err != nil {
			m.Invalid = "body is not valid base64 (the login asked for encode=base64): " + err.Error()
		} else {
			m.Body = dec[:n]
		}
	}
	return m
}
