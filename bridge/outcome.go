package bridge

import "errors"

// DeadLetterClass says why a message was dead-lettered, from a small fixed
// set: it is the reason label of dead_lettered_total, so the label set stays
// bounded. The pipeline sets it where it decides to dead-letter; the free
// text of DeadLetter.Reason is for people.
type DeadLetterClass string

// The dead-letter classes.
const (
	// ClassInvalidBody: the message arrived unreadable (Message.Invalid,
	// for example a body that is not the base64 the login asked for).
	ClassInvalidBody DeadLetterClass = "invalid_body"
	// ClassUnrouted: no route matches the topic and the default route
	// dead-letters.
	ClassUnrouted DeadLetterClass = "unrouted"
	// ClassInvalidName: the matching route rendered a queue or topic name,
	// or a tag, that the sink's rules refuse.
	ClassInvalidName DeadLetterClass = "invalid_name"
	// ClassRetriesExhausted: retryable failures until the retry budget
	// (max attempts or max age) ran out.
	ClassRetriesExhausted DeadLetterClass = "retries_exhausted"
	// ClassTooLarge: the sink refused the message for its size.
	ClassTooLarge DeadLetterClass = "too_large"
	// ClassRejected: the sink refused the message for any other reason that
	// retrying cannot fix.
	ClassRejected DeadLetterClass = "rejected"
)

// ErrLoginRefused is wrapped by a source's error when the server refused
// the login (a STOMP ERROR frame answering CONNECT, an AMQP SASL failure):
// almost always wrong credentials, a wrong consumer group or instance id,
// or a clock far off. Callers test it with errors.Is, never by the text.
var ErrLoginRefused = errors.New("login refused by the server")

// Classifier is implemented by errors that know their dead-letter class
// (a sink's "body too large"); see ClassOf.
type Classifier interface {
	DeadLetterClass() DeadLetterClass
}

// ClassOf returns the class of the first error in err's chain that
// implements Classifier, or def.
func ClassOf(err error, def DeadLetterClass) DeadLetterClass {
	var c Classifier
	if errors.As(err, &c) {
		return c.DeadLetterClass()
	}
	return def
}
