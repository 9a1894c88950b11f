package bridge

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the pipeline's Prometheus collectors. A pipeline always has
// them (without PipelineConfig.Metrics, its own, registered nowhere), so
// it counts without asking whether anyone reads. Safe for concurrent use.
type Metrics struct {
	Received       prometheus.Counter // deliveries that entered the pipeline
	SourceReceived prometheus.Counter // deliveries taken from the platform (counted by the caller that wires the source)
	Forwarded      prometheus.Counter
	Duplicates     prometheus.Counter
	Joined         prometheus.Counter // redelivered copies joined to their held original
	Retried        prometheus.Counter
	DeadLettered   *prometheus.CounterVec // by reason class
	BatchSize      prometheus.Histogram   // the routes' requests

	// The requests' durations, failed and throttled messages, by target:
	// routes counts the routes' requests (target="routes"), deadLetterQ
	// the dead-letter queue's (target="dead_letter_queue",
	// DeadLetterQueueRequest).
	requestSeconds      *prometheus.HistogramVec
	sendFailures        *prometheus.CounterVec
	throttled           *prometheus.CounterVec
	routes, deadLetterQ sendMetrics
}

// The values of the target label of the request metrics: the pipeline's
// sends to the routes' queues and topics, and the writes to
// delivery.dead_letter.queue.
const (
	TargetRoutes          = "routes"
	TargetDeadLetterQueue = "dead_letter_queue"
)

// sendMetrics are the request metrics of one target.
type sendMetrics struct {
	seconds   prometheus.ObserverVec // by kind and status
	failures  *prometheus.CounterVec // by status
	throttled prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg; a nil reg
// registers them nowhere.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "iot_mns_bridge"
	m := &Metrics{
		Received: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "received_total",
			Help: "Deliveries that entered the pipeline: taken from the source, or with the spool on from the spool (an earlier run's backlog included). source_received_total counts what the source took from the platform."}),
		SourceReceived: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "source_received_total",
			Help: "Deliveries taken from the platform by the source in this run; with the spool on they enter the spool first (received_total counts what then enters the pipeline)."}),
		Forwarded:  prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "forwarded_total", Help: "Messages accepted by MNS."}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "duplicates_suppressed_total", Help: "Redeliveries suppressed by the de-dup window."}),
		Joined: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "duplicates_joined_total",
			Help: "Redeliveries of a message the pipeline still held, settled with that message's outcome instead of being sent again: counted when the message is accepted or kept at shutdown, " +
				"not when the copy joins; a copy released at shutdown is not counted here (it goes back upstream, or stays in the spool, like its original)."}),
		Retried:      prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "retried_total", Help: "Message sends retried after a retryable failure."}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dead_lettered_total", Help: "Messages written to the dead-letter target, by reason."}, []string{"reason"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_messages", Help: "Messages per MNS request.",
			Buckets: []float64{1, 2, 4, 8, 12, 16}}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "sink_request_seconds",
			Help: "Duration of MNS send requests, by destination kind (queue: BatchSendMessage, topic: PublishMessage), status (ok, or the first failure's HTTP status, or network) " +
				"and target (routes: the routes' queues and topics; dead_letter_queue: delivery.dead_letter.queue).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15)}, []string{"kind", "status", "target"}),
		sendFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "send_failures_total",
			Help: "Messages whose MNS send failed, by HTTP status (or network) and target (routes, or dead_letter_queue: dead-letter entries), whatever happened next (retry, dead-letter, or the dead-letter file only)."}, []string{"status", "target"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "throttled_total",
			Help: "Messages whose MNS send was throttled (429 TooManyRequests, or the legacy QpsLimitExceeded), by target (routes, dead_letter_queue); they are retried with backoff."}, []string{"target"}),
	}
	m.routes, m.deadLetterQ = m.target(TargetRoutes), m.target(TargetDeadLetterQueue)
	if reg == nil {
		return m
	}
	reg.MustRegister(m.Received, m.SourceReceived, m.Forwarded, m.Duplicates, m.Joined, m.Retried, m.DeadLettered, m.BatchSize, m.requestSeconds, m.sendFailures, m.throttled)
	return m
}

// target is the request metrics curried with target.
func (m *Metrics) target(target string) sendMetrics {
	l := prometheus.Labels{"target": target}
	return sendMetrics{seconds: m.requestSeconds.MustCurryWith(l), failures: m.sendFailures.MustCurryWith(l), throttled: m.throttled.With(l)}
}

// request counts one Sink.Send of the pipeline to d: its messages (errs,
// one a message), their failures and how long it took.
func (m *Metrics) request(d Destination, errs []error, took time.Duration) {
	if d.Kind == Topic {
		// A topic has no batch request: each message is one PublishMessage.
		for range errs {
			m.BatchSize.Observe(1)
		}
	} else {
		m.BatchSize.Observe(float64(len(errs)))
	}
	m.routes.request(d, errs, took)
}

// DeadLetterQueueRequest counts one Sink.Send of dead-letter entries to
// the dead-letter queue d, as request does the pipeline's (but for
// batch_messages), under target="dead_letter_queue". Safe for concurrent
// use.
func (m *Metrics) DeadLetterQueueRequest(d Destination, errs []error, took time.Duration) {
	m.deadLetterQ.request(d, errs, took)
}

// request counts the failures of one Sink.Send to d and how long it took.
func (s sendMetrics) request(d Destination, errs []error, took time.Duration) {
	status := "ok"
	for _, err := range errs {
		if err != nil {
			l := statusLabel(err)
			s.failures.WithLabelValues(l).Inc()
			if throttled(err) {
				s.throttled.Inc()
			}
			if status == "ok" {
				status = l
			}
		}
	}
	s.seconds.WithLabelValues(d.Kind.String(), status).Observe(took.Seconds())
}

// statusLabel is the HTTP status of a sink error that has one (a method
// StatusCode() int), "canceled" for a cancelled send, else "network".
func statusLabel(err error) string {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) && sc.StatusCode() > 0 {
		return strconv.Itoa(sc.StatusCode())
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	return "network"
}

// throttled reports whether a sink error says the destination throttled
// the send (a method Throttled() bool that returns true).
func throttled(err error) bool {
	var t interface{ Throttled() bool }
	return errors.As(err, &t) && t.Throttled()
}

// deadLettered counts the stored entries by class (ClassRejected when
// unset).
func (m *Metrics) deadLettered(entries []DeadLetter) {
	for _, e := range entries {
		class := e.Class
		if class == "" {
			class = ClassRejected
		}
		m.DeadLettered.WithLabelValues(string(class)).Inc()
	}
}

// connCollector reports a source's connections at scrape time.
type connCollector struct {
	src                   StateReporter
	connected, reconnects *prometheus.Desc
}

// NewConnCollector returns a collector of the source's connection state and
// reconnect count per connection, read when scraped.
func NewConnCollector(src StateReporter) prometheus.Collector {
	return &connCollector{
		src:        src,
		connected:  prometheus.NewDesc("iot_mns_bridge_source_connected", "1 when the source connection is up.", []string{"conn"}, nil),
		reconnects: prometheus.NewDesc("iot_mns_bridge_source_reconnects_total", "Reconnects of the source connection since start.", []string{"conn"}, nil),
	}
}

func (c *connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.connected
	ch <- c.reconnects
}

func (c *connCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.src.ConnStates() {
		v := 0.0
		if st.Connected {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.connected, prometheus.GaugeValue, v, st.Name)
		ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(st.Reconnects), st.Name)
	}
}
