package mns

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Error is a failure MNS (or something in front of it) replied with: the
// HTTP status and, when the reply had the MNS error XML, its code, message,
// request id and host id. A per-message failure inside a partly failed batch
// is an Error too, with the batch's status and the entry's code and message.
//
// Retryable reports true for 5xx, 429 TooManyRequests (and the legacy
// QpsLimitExceeded), 408 TimeExpired (each attempt is signed afresh, so a
// corrected clock heals it) and refused credentials (401, 403, a proxy's
// 407); every other 4xx is permanent.
type Error struct {
	// Op is the API operation, e.g. "BatchSendMessage".
	Op string
	// Kind is "queue" or "topic"; Name is the destination.
	Kind, Name string
	// Item names the message when the error is about one message of a
	// batch (its id, or "#index"); "" when it is about the whole request.
	Item string
	// Status is the HTTP status of the reply.
	Status int
	// Code and Message are the MNS error code and text ("" when the reply
	// was not MNS error XML).
	Code, Message string
	// RequestID and HostID identify the request for Alibaba Cloud support
	// (RequestID is the server's x-mns-request-id).
	RequestID, HostID string
	// UserRequestID is the x-mns-user-request-id the client sent, to find
	// the request in the bridge's own logs and in a capture.
	UserRequestID string
	// Region is the region a V4 signature named ("" with V2): a signature
	// for another region than the endpoint's does not match either.
	Region string

	names Names // what the hints call the client's Fields
	// foreign: the reply was not MNS's error XML (something in front of
	// MNS answered); via is then the proxy the request went through.
	foreign bool
	via     string
	// sts: the request was signed with a temporary (STS) AccessKey ID.
	sts bool
	// requestDate is the request's Date header, replyDate the reply's
	// (MNS's clock), "" when unknown: a TimeExpired says by how much the
	// clocks differ.
	requestDate, replyDate string
}

// codeStatus maps documented MNS error codes to their HTTP status, so that a
// per-message error in a batch is classified by its own code, not by the
// batch's status.
var codeStatus = map[string]int{
	"InvalidAuthorizationHeader": 400, "InvalidDateHeader": 400, "InvalidArgument": 400,
	"InvalidDegist": 400, "InvalidDigest": 400, "InvalidRequestURL": 400, "InvalidQueryString": 400,
	"MalformedXML": 400, "MissingAuthorizationHeader": 400, "MissingDateHeader": 400,
	"MissingReceiptHandle": 400, "MissingVisibilityTimeout": 400, "QueueDeletedRecently": 400,
	"InvalidQueueName": 400, "QueueNameLengthError": 400, "ReceiptHandleError": 400,
	"MissingVersionHeader": 400, "InvalidVersionHeader": 400, "InvalidContentType": 400,
	"AccessDenied": 403, "InvalidAccessKeyId": 403, "SignatureDoesNotMatch": 403,
	"MessageNotExist": 404, "QueueNotExist": 404, "TopicNotExist": 404,
	"TimeExpired":       408,
	"QueueAlreadyExist": 409, "TopicAlreadyExist": 409,
	"TooManyRequests": 429, "QpsLimitExceeded": 429,
	"InternalError": 500, "InternalServerError": 500, "ServiceUnavailable": 503,
}

// StatusCode returns the HTTP status of the reply (0 when there was none).
func (e *Error) StatusCode() int { return e.Status }

// Throttled reports whether MNS refused the request for its rate: 429
// TooManyRequests or the legacy QpsLimitExceeded (documented with HTTP
// 400). The pipeline counts these apart from other failures.
func (e *Error) Throttled() bool {
	return e.Status == 429 || e.Code == "TooManyRequests" || e.Code == "QpsLimitExceeded"
}

// Retryable reports whether sending again may succeed: network-level and
// server-side failures (5xx), throttling (429), an expired Date (408: the
// next attempt is signed with a fresh one), and refused credentials (401,
// 403: AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch, an expired
// STS token; 407: an HTTP proxy in front of MNS wants credentials).
// Credentials belong to the bridge, not to the message: every
// message would fail alike, and a fixed or rotated key file takes effect at
// the next signing, so the pipeline holds the messages (backpressure, one
// log line) instead of dead-lettering the whole stream. Every other 4xx is
// about the message or its destination and is permanent.
func (e *Error) Retryable() bool {
	status := e.Status
	if s, ok := codeStatus[e.Code]; ok {
		status = s
	}
	switch {
	case status >= 500, status == 429, status == 408, status == 401, status == 403, status == 407:
		return true
	case status >= 400:
		return false
	}
	// A 1xx-3xx reply we could not use (a proxy, a redirect): retry.
	return true
}

// keyRefused reports whether MNS refused the AccessKeyId or its security
// token (an unknown or expired STS triple), as opposed to a permission
// (AccessDenied) or a signature made with the wrong secret.
func (e *Error) keyRefused() bool {
	return e.Status == 403 && (e.Code == "InvalidAccessKeyId" || strings.Contains(e.Code, "SecurityToken"))
}

// MissingDestination reports whether MNS said the queue or topic does not
// exist (see bridge.MissingDestination).
func (e *Error) MissingDestination() bool {
	return e.Code == "QueueNotExist" || e.Code == "TopicNotExist"
}

// Error names the operation and destination, the MNS code and message, the
// request id and what the operator should do.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("mns: ")
	b.WriteString(e.Op)
	if e.Name != "" {
		b.WriteString(" ")
		b.WriteString(e.Kind)
		b.WriteString(" ")
		b.WriteString(e.Name)
	}
	if e.Item != "" {
		b.WriteString(": message ")
		b.WriteString(e.Item)
	}
	b.WriteString(": ")
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteString(" (HTTP ")
	} else {
		b.WriteString("HTTP ")
	}
	b.WriteString(strconv.Itoa(e.Status))
	if e.Code != "" {
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(strings.TrimSpace(e.Message))
	}
	if e.RequestID != "" || e.UserRequestID != "" {
		b.WriteString(" [")
		if e.RequestID != "" {
			b.WriteString("request id ")
			b.WriteString(e.RequestID)
		}
		if e.UserRequestID != "" {
			if e.RequestID != "" {
				b.WriteString(", ")
			}
			b.WriteString("user request id ")
			b.WriteString(e.UserRequestID)
		}
		b.WriteString("]")
	}
	if h := e.hint(); h != "" {
		b.WriteString("; ")
		b.WriteString(h)
	}
	return b.String()
}

// Permission names the RAM policy action(s) that allow the MNS API
// operation op: "mns:<op>", and for BatchSendMessage also mns:SendMessage,
// which the RAM mapping table says covers it (list both in a policy).
func Permission(op string) string {
	if op == opBatchSend {
		return "mns:SendMessage and mns:BatchSendMessage"
	}
	return "mns:" + op
}

// SendOperation is the API operation the client sends to a destination of
// kind k with: BatchSendMessage to a queue, PublishMessage to a topic (a
// topic has no batch request).
func SendOperation(k bridge.DestinationKind) string {
	if k == bridge.Topic {
		return opPublish
	}
	return opBatchSend
}

// clockOff says how far this machine's clock is from MNS's, from the Date
// a request was signed with and the Date of MNS's reply refusing it, or
// "" when either is missing or not an HTTP date.
func clockOff(requestDate, replyDate string) string {
	sent, err1 := http.ParseTime(requestDate)
	theirs, err2 := http.ParseTime(replyDate)
	if err1 != nil || err2 != nil {
		return ""
	}
	d, way := theirs.Sub(sent), "behind"
	if d < 0 {
		d, way = -d, "ahead of"
	}
	return fmt.Sprintf("this machine's clock is %s %s MNS's (the request was dated %s, MNS's reply %s), and MNS takes a request "+
		"dated up to 15 minutes off; synchronise it (NTP)", d.Round(time.Second), way, requestDate, replyDate)
}

// The send operations' names, as MNS names them in its API and RAM.
const (
	opBatchSend = "BatchSendMessage"
	opPublish   = "PublishMessage"
)

func (e *Error) hint() string {
	switch e.Code {
	case "QueueNotExist":
		return fmt.Sprintf("create queue %s in the MNS console, or fix the config key that names it (routes, default_route or delivery.dead_letter.queue)", e.Name)
	case "TopicNotExist":
		return fmt.Sprintf("create topic %s in the MNS console, or fix the config key that names it (routes or default_route)", e.Name)
	case "AccessDenied":
		return "grant the AccessKey's RAM user " + Permission(e.Op) + " on " + e.Kind + " " + e.Name + " (its RAM policy's Action and Resource)"
	case "InvalidAccessKeyId":
		if e.sts {
			// Not a key of the console, to enable or disable.
			return "MNS does not know the temporary (STS) AccessKey ID: it expired by MNS's clock (is this machine's clock behind? sync it: NTP) " +
				"or its issuer revoked it; the bridge fetches the credentials again"
		}
		return "check " + e.names.Of(FieldAccessKeyID) + " (is the key enabled, in this account?)"
	case "InvalidSecurityToken":
		return "the security token is not the one issued with " + e.names.Of(FieldAccessKeyID) + ", or it expired: the id, " +
			"secret and token must come from one issue (replace a credentials file whole, by rename) and be renewed before " +
			"they expire (after this refusal the bridge fetches the credentials again)"
	case "SignatureDoesNotMatch":
		h := "check that " + e.names.Of(FieldAccessKeySecret) + " belongs to the access key id"
		if e.Region != "" {
			h += ", and that " + e.names.Of(FieldRegion) + " (" + e.Region + ") is the region of " + e.names.Of(FieldEndpoint) +
				": " + e.names.Of(FieldSignatureVersion) + " v4 signs for it"
		}
		return h
	case "TimeExpired", "InvalidDateHeader":
		if off := clockOff(e.requestDate, e.replyDate); off != "" {
			return off
		}
		return "the local clock is off by more than 15 minutes; synchronise it (NTP)"
	case "TooManyRequests", "QpsLimitExceeded":
		return "MNS is throttling this account; the bridge backs off and retries"
	case "InvalidArgument", "MalformedXML":
		return "the message was refused as it is; it will not be retried"
	}
	switch {
	case e.Status == 407:
		return proxyWantsCredentials(e.via, e.names)
	case e.foreign && e.Status >= 400 && e.Status < 500 && e.via != "":
		return "the reply is not from MNS: " + proxyRefusesHost(e.via, e.names)
	case e.foreign && e.Status >= 400 && e.Status < 500:
		return "the reply is not from MNS (no MNS error XML): check " + e.names.Of(FieldEndpoint) + " and what answers at that address"
	case e.Status >= 500:
		return "MNS had a server-side problem; the bridge retries"
	case e.Status == 0 || e.Status < 400:
		return "the reply was not from MNS; check " + e.names.Of(FieldEndpoint) + " and any proxy"
	}
	return ""
}

// proxyWantsCredentials is the advice for a proxy's 407, to a request or
// to the CONNECT of an https endpoint; via names the proxy ("" when not
// known).
func proxyWantsCredentials(via string, names Names) string {
	proxy, wants := "the HTTP proxy", "wants credentials: give them in its URL"
	if via != "" {
		proxy += " " + via
	}
	if strings.Contains(via, ":xxxxx@") { // url.Redacted's password
		wants = "refuses the credentials in its URL: check the user and password"
	}
	return proxy + " in front of MNS " + wants + " in HTTPS_PROXY / HTTP_PROXY (http://user:password@host:port), or list " + names.Of(FieldEndpoint) + "'s host in NO_PROXY; the bridge holds the messages and retries"
}

// proxyRefusesHost is the advice for a proxy's refusal (a 4xx of its own,
// to a request or to the CONNECT of an https endpoint): its rules may
// refuse the MNS host.
func proxyRefusesHost(via string, names Names) string {
	return "the proxy " + via + " (HTTPS_PROXY or HTTP_PROXY) may refuse the host of " + names.Of(FieldEndpoint) + "; allow it there, or list it in NO_PROXY; the bridge holds the messages and retries"
}

// ErrBodyTooLarge is wrapped by the error for a message whose body, after
// the body encoding, is over MaxBodySize. Such a message is never sent.
var ErrBodyTooLarge error = &tooLargeError{"message body over the MNS limit of 65536 bytes"}

// tooLargeError is a size refusal: its dead-letter class is too_large.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string                           { return e.msg }
func (e *tooLargeError) DeadLetterClass() bridge.DeadLetterClass { return bridge.ClassTooLarge }

// ErrBodyNotXMLText is wrapped by the error for a body that BodyEncoding
// "raw" cannot carry (invalid UTF-8 or characters XML 1.0 forbids). Such a
// message is never sent.
var ErrBodyNotXMLText = errors.New("message body is not text that XML 1.0 can carry")

// ErrTagTooLong is the error (errors.Is) for a message tag over MaxTagLen
// (16) characters: ValidTag's reason, and the client's error for such a tag.
var ErrTagTooLong = errors.New("message tag over 16 characters")

// ErrBodyMD5Mismatch is wrapped when MNS reports a MessageBodyMD5 that is
// not the MD5 of the body sent: the stored message may be corrupt. It is
// retryable (a duplicate is better than a loss).
var ErrBodyMD5Mismatch = errors.New("MessageBodyMD5 in the reply does not match the body sent")

// NoReplyError is a request MNS did not answer: the connection failed or
// broke, or no reply came within Config.Timeout. It is retryable. Its
// text names the user request id, new at every request, so callers that
// track a state (the destination check) classify it by type, not by text.
type NoReplyError struct {
	Timeout bool // no reply within Config.Timeout
	msg     string
	err     error
}

func (e *NoReplyError) Error() string { return e.msg }
func (e *NoReplyError) Unwrap() error { return e.err }

// Unanswered reports whether no reply came within Config.Timeout (MNS or
// the network is down or cut off): bridge.Unanswered.
func (e *NoReplyError) Unanswered() bool { return e.Timeout }

// permanentError marks client-side refusals that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string   { return e.err.Error() }
func (e *permanentError) Unwrap() error   { return e.err }
func (e *permanentError) Retryable() bool { return false }
