package mns

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// DefaultTopicConcurrency is how many PublishMessage requests one Send to a
// topic runs at once.
const DefaultTopicConcurrency = 8

// Sink writes the pipeline's batches to MNS queues and topics. It
// implements bridge.Sink and bridge.Checker and is safe for concurrent use.
// It does not retry: every error it returns says through bridge.Retryable
// whether the pipeline should try again.
type Sink struct {
	c         *Client
	topicConc int
	log       *slog.Logger
}

// Option configures a Sink.
type Option func(*Sink)

// WithTopicConcurrency sets how many PublishMessage requests one Send to a
// topic runs at once (default 8; MNS has no batch publish).
func WithTopicConcurrency(n int) Option {
	return func(s *Sink) {
		if n > 0 {
			s.topicConc = n
		}
	}
}

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(s *Sink) {
		if l != nil {
			s.log = l
		}
	}
}

// NewSink returns a Sink that sends through c.
func NewSink(c *Client, opts ...Option) *Sink {
	s := &Sink{c: c, topicConc: DefaultTopicConcurrency, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "mns-sink")
	return s
}

var _ bridge.LimitedSink = (*Sink)(nil)
var _ bridge.Checker = (*Sink)(nil)

// Limits implements bridge.LimitedSink. A queue batch is one
// BatchSendMessage request: at most MaxBatchCount messages and
// MaxBatchBytes of MessageBody text and properties, the text counted
// after the body encoding (a 48 KB body is 64 KB in base64). A topic has
// no batch request (each message is one PublishMessage), so only the
// pipeline's settings bound a Send to a topic.
func (s *Sink) Limits(dest bridge.Destination) bridge.SinkLimits {
	size := s.size
	if dest.Kind == bridge.Queue {
		return bridge.SinkLimits{Messages: MaxBatchCount, Bytes: MaxBatchBytes, Size: size}
	}
	return bridge.SinkLimits{Size: size}
}

// Send writes msgs to dest and returns one error per message, in order (nil:
// MNS accepted it). Queues get BatchSendMessage requests of at most 16
// messages and 64 KB, sent one after the other; topics get one
// PublishMessage per message, at most WithTopicConcurrency at once (by a
// fixed set of workers, not a goroutine per message). Each message's
// properties and group id go with it. A message that can never be sent
// (body over 64 KB after encoding, or with its properties; tag too long; raw
// body that is not XML text; properties MNS would refuse: more than 50, a
// bad name, a value over 4096 characters or not of its type) gets a
// permanent error naming it and is not sent.
// On ctx cancel Send returns promptly; unsent messages get ctx's error.
func (s *Sink) Send(ctx context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	errs := make([]error, len(msgs))
	if len(msgs) == 0 {
		return errs
	}
	lab := func(i int) string {
		if msgs[i].ID != "" {
			return msgs[i].ID
		}
		return "#" + strconv.Itoa(i)
	}
	switch dest.Kind {
	case bridge.Queue:
		res := make([]SendResult, len(msgs))
		s.c.batchSend(ctx, dest.Name, msgs, lab, res, errs)
	case bridge.Topic:
		s.publishAll(ctx, dest.Name, msgs, lab, errs)
	default:
		err := bridge.Permanent(fmt.Errorf("mns sink: destination %q has no kind (queue or topic)", dest.Name))
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

func (s *Sink) publishAll(ctx context.Context, topic string, msgs []bridge.Outgoing, lab label, errs []error) {
	workers := min(s.topicConc, len(msgs))
	if workers <= 1 {
		for i := range msgs {
			_, errs[i] = s.c.publish(ctx, topic, msgs[i], lab(i))
		}
		return
	}
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		i := next
		next++
		return i
	}
	for range workers {
		wg.Go(func() {
			for i := take(); i < len(msgs); i = take() {
				_, errs[i] = s.c.publish(ctx, topic, msgs[i], lab(i))
			}
		})
	}
	wg.Wait()
}

// Proxy returns the proxy the client's requests go through (see
// Client.Proxy), or "".
func (s *Sink) Proxy() string { return s.c.Proxy() }

// Check looks dest up with GetQueueAttributes or GetTopicAttributes, so a
// missing destination or a credential MNS refuses shows before any message
// is sent. It blocks for at most the client's request timeout.
func (s *Sink) Check(ctx context.Context, dest bridge.Destination) error {
	var err error
	switch dest.Kind {
	case bridge.Queue:
		_, err = s.c.GetQueueAttributes(ctx, dest.Name)
	case bridge.Topic:
		_, err = s.c.GetTopicAttributes(ctx, dest.Name)
	default:
		err = bridge.Permanent(fmt.Errorf("mns sink: destination %q has no kind (queue or topic)", dest.Name))
	}
	if err != nil {
		s.log.Debug("destination check failed", "destination", dest.String(), "err", err)
	}
	return err
}

// size is what message o, whose body will be bodyLen bytes, counts toward
// MaxBatchBytes: its MessageBody text and its properties (see
// checkMessage).
func (s *Sink) size(o *bridge.Outgoing, bodyLen int) int {
	n := bodyLen
	switch {
	case o.Base64 && s.c.raw:
		n = base64.StdEncoding.DecodedLen(bodyLen) // sent decoded
	case !o.Base64 && !s.c.raw:
		n = base64.StdEncoding.EncodedLen(bodyLen)
	}
	if len(o.Properties) > 0 || len(o.SystemProperties) > 0 || o.GroupID != "" {
		if psize, _, err := checkProps(o); err == nil {
			n += psize
		}
	}
	return n
}
