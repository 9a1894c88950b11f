package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// Status is what GET /status answers (JSON) and `iot-mns-bridge status`
// prints: the state of each part of a running bridge, with counters since
// start and the last error each part saw. Rates are computed by the client
// from two snapshots.
type Status struct {
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	Time      time.Time `json:"time"` // when the snapshot was taken
	Ready     bool      `json:"ready"`
	NotReady  []string  `json:"not_ready,omitempty"`
	Healthy   bool      `json:"healthy"`
	// HealthError is why /healthz fails, "" when healthy.
	HealthError string `json:"health_error,omitempty"`

	Source   []SourceConnStatus `json:"source"`
	Pipeline PipelineStatus     `json:"pipeline"`
	MNS      PartError          `json:"mns"`
	// MNSLookupsFailing counts the MNS destinations whose lookup failed at
	// the last check (each is a reason in NotReady): the status table's
	// mns row says so instead of "ok", whether or not a send failed yet.
	MNSLookupsFailing int              `json:"mns_lookups_failing,omitempty"`
	DeadLetters       DeadLetterStatus `json:"dead_letters"`
	Spool             *SpoolStatus     `json:"spool,omitempty"` // nil without spool.dir
}

// SourceConnStatus is one source connection.
type SourceConnStatus struct {
	Name       string `json:"name"`
	Connected  bool   `json:"connected"`
	Reconnects int64  `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// PipelineStatus holds the pipeline's counters since start.
type PipelineStatus struct {
	Received     int64 `json:"received"`
	Forwarded    int64 `json:"forwarded"`
	DeadLettered int64 `json:"dead_lettered"`
	Duplicates   int64 `json:"duplicates"` // suppressed by the de-dup window
	Joined       int64 `json:"joined"`     // redelivered copies joined to their held original
	Retried      int64 `json:"retried"`
	InFlight     int64 `json:"in_flight"`
	MaxInFlight  int   `json:"max_in_flight"`
}

// PartError is the last error a part saw and when; empty when none.
type PartError struct {
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// DeadLetterStatus is the dead-letter target: the last dead-lettered
// message's reason, and the last error writing to the target.
type DeadLetterStatus struct {
	LastReason   string     `json:"last_reason,omitempty"`
	LastReasonAt *time.Time `json:"last_reason_at,omitempty"`
	PartError
}

// SpoolStatus is the spool's depth and size.
type SpoolStatus struct {
	Messages int64 `json:"messages"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
	// Full: the spool refuses messages for spool.max_bytes (the source is
	// paused), until it holds 90% of it or less (spool.Stats.Full).
	Full bool `json:"full"`
}

// lastError remembers the most recent error of a part. Safe for concurrent use.
type lastError struct {
	mu  sync.Mutex
	msg string
	at  time.Time
}

func (l *lastError) set(msg string) {
	l.mu.Lock()
	l.msg, l.at = msg, time.Now()
	l.mu.Unlock()
}

func (l *lastError) get() PartError {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.msg == "" {
		return PartError{}
	}
	at := l.at
	return PartError{LastError: l.msg, LastErrorAt: &at}
}

// statusRecorder collects the last errors /status reports.
type statusRecorder struct {
	started    time.Time
	mns        lastError // the last failed MNS send
	deadReason lastError // the last dead-lettered message's reason
	deadWrite  lastError // the last failure writing a dead letter
	spool      func() spool.Stats
	spoolMu    sync.Mutex
}

// recordingSink passes sends on to the sink and remembers the last failure.
type recordingSink struct {
	bridge.Sink
	last *lastError
}

func (s recordingSink) Send(ctx context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	errs := s.Sink.Send(ctx, dest, msgs)
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			s.last.set(fmt.Sprintf("%s: message %s: %v", dest, msgs[i].ID, err))
			break
		}
	}
	return errs
}

// Limits passes on the sink's request limits (bridge.LimitedSink), so that
// the pipeline still batches once, within them.
func (s recordingSink) Limits(dest bridge.Destination) bridge.SinkLimits {
	if l, ok := s.Sink.(bridge.LimitedSink); ok {
		return l.Limits(dest)
	}
	return bridge.SinkLimits{}
}

var _ bridge.LimitedSink = recordingSink{}

// recordingDeadLetters passes dead letters on and remembers the last reason
// and the last write failure.
type recordingDeadLetters struct {
	bridge.DeadLetterSink
	reason, write *lastError
}

func (d recordingDeadLetters) DeadLetter(ctx context.Context, entries []bridge.DeadLetter) error {
	err := d.DeadLetterSink.DeadLetter(ctx, entries)
	if n := len(entries); n > 0 {
		e := entries[n-1]
		id := ""
		if e.Message != nil {
			id = e.Message.MessageID
		}
		d.reason.set(fmt.Sprintf("message %s: %s", id, e.Reason))
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		d.write.set(err.Error())
	}
	return err
}

func (r *statusRecorder) setSpool(f func() spool.Stats) {
	r.spoolMu.Lock()
	r.spool = f
	r.spoolMu.Unlock()
}

// Status returns a snapshot of the bridge's state.
func (b *Bridge) Status() Status {
	st := Status{Version: Version(), StartedAt: b.status.started, Time: time.Now()}
	st.NotReady = b.NotReady()
	b.readyMu.Lock()
	st.MNSLookupsFailing = len(b.notReady)
	b.readyMu.Unlock()
	st.Ready = len(st.NotReady) == 0
	if err := b.Healthy(); err != nil {
		st.HealthError = err.Error()
	} else {
		st.Healthy = true
	}
	if sr, ok := b.source.(bridge.StateReporter); ok {
		for _, c := range sr.ConnStates() {
			st.Source = append(st.Source, SourceConnStatus{Name: c.Name, Connected: c.Connected, Reconnects: c.Reconnects, LastError: c.LastError})
		}
	}
	ps := b.pipeline.Stats()
	st.Pipeline = PipelineStatus{Received: ps.Received, Forwarded: ps.Forwarded, DeadLettered: ps.DeadLettered,
		Duplicates: ps.Duplicates, Joined: ps.Joined, Retried: ps.Retried, InFlight: ps.InFlight, MaxInFlight: b.cfg.Delivery.MaxInFlight}
	st.MNS = b.status.mns.get()
	reason := b.status.deadReason.get()
	st.DeadLetters = DeadLetterStatus{LastReason: reason.LastError, LastReasonAt: reason.LastErrorAt, PartError: b.status.deadWrite.get()}
	b.status.spoolMu.Lock()
	f := b.status.spool
	b.status.spoolMu.Unlock()
	if f != nil {
		s := f()
		st.Spool = &SpoolStatus{Messages: int64(s.Depth), Bytes: s.Bytes, MaxBytes: s.MaxBytes, Full: s.Full}
	}
	return st
}

func (b *Bridge) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(b.Status())
}
