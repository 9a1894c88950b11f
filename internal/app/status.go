package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
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
	// ConfigReloadRefused is why the last config reload (SIGHUP) was
	// refused, the running config kept; "" when it was applied or none
	// was asked.
	ConfigReloadRefused string `json:"config_reload_refused,omitempty"`
	// ConfigRestartPending names the config sections whose changes an
	// applied reload read but that take effect only after a restart.
	ConfigRestartPending []string `json:"config_restart_pending,omitempty"`

	Source   []SourceConnStatus `json:"source"`
	Pipeline PipelineStatus     `json:"pipeline"`
	// MNS is the pipeline's requests to MNS (the routes' queues and
	// topics); those of the dead-letter queue are DeadLetterQueue's.
	MNS RequestStatus `json:"mns"`
	// MNSLookupsFailing counts the MNS destinations whose lookup failed at
	// the last check (each is a reason in NotReady): the status table's
	// mns row says so instead of "ok", whether or not a send failed yet.
	MNSLookupsFailing int `json:"mns_lookups_failing,omitempty"`
	// MNSSendsFailing counts the destinations whose sends fail now (each
	// is a reason in NotReady; the messages are held and retried).
	MNSSendsFailing int              `json:"mns_sends_failing,omitempty"`
	DeadLetters     DeadLetterStatus `json:"dead_letters"`
	// DeadLetterQueue is the requests to delivery.dead_letter.queue; nil
	// when none is set.
	DeadLetterQueue *DeadLetterQueueStatus `json:"dead_letter_queue,omitempty"`
	Spool           *SpoolStatus           `json:"spool,omitempty"` // nil without spool.dir
}

// SourceConnStatus is one source connection.
type SourceConnStatus struct {
	Name       string `json:"name"`
	Connected  bool   `json:"connected"`
	Reconnects int64  `json:"reconnects"`
	LastError  string `json:"last_error,omitempty"`
}

// PipelineStatus holds the pipeline's counters since start, named and
// counted as the stop line names and counts them (flow). They add up as
// it does, with in_flight for what is not settled yet: without the spool
// source_received = forwarded + dead_lettered + duplicates + joined +
// released + stranded + in_flight; with it in_spool_at_start +
// source_received = forwarded + dead_lettered + duplicates + joined +
// released + spool.messages (what the pipeline holds is in the spool
// until MNS took it). Read while messages arrive, a message may be in
// one side and not yet in the other.
type PipelineStatus struct {
	// InSpoolAtStart is what the spool held when the bridge started (an
	// earlier run's backlog); nil without the spool, as in the stop line.
	InSpoolAtStart *int64 `json:"in_spool_at_start,omitempty"`
	// SourceReceived is what this run took from the platform (with the
	// spool, into the spool).
	SourceReceived int64 `json:"source_received"`
	// Received is what entered the pipeline: with the spool, from the
	// spool, the earlier run's backlog included.
	Received     int64 `json:"received"`
	Forwarded    int64 `json:"forwarded"`
	DeadLettered int64 `json:"dead_lettered"`
	Duplicates   int64 `json:"duplicates"` // suppressed by the de-dup window
	Joined       int64 `json:"joined"`     // redelivered copies settled with their held original
	// Released is what was given back to the platform (it sends it
	// again; with the spool not what went back into the spool), and
	// Stranded what was held at the stop and not sent again by the
	// platform: both at the stop only.
	Released    int64 `json:"released"`
	Stranded    int64 `json:"stranded"`
	Retried     int64 `json:"retried"`
	InFlight    int64 `json:"in_flight"`
	MaxInFlight int   `json:"max_in_flight"`
}

// PartError is the last error a part saw and when; empty when none.
type PartError struct {
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
}

// RequestStatus counts a part's requests to MNS since start: those that
// failed (some message of it refused, or no answer), the messages MNS
// accepted, whether the last request failed, and the last failure.
type RequestStatus struct {
	Requests int64 `json:"requests"`
	Failed   int64 `json:"failed_requests"`
	Accepted int64 `json:"accepted"`
	Failing  bool  `json:"failing"`
	PartError
}

// DeadLetterQueueStatus is delivery.dead_letter.queue and its requests. A
// refusal it does not retry (the entry is in the dead-letter file) shows
// only here.
type DeadLetterQueueStatus struct {
	Name string `json:"name"`
	RequestStatus
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
	// WritesFailing is the error of the spool's last commit while its
	// commits fail (a full disk, an I/O error): the source is paused and
	// the messages of the failed commits are held in memory
	// (spool.Stats.CommitError).
	WritesFailing string `json:"writes_failing,omitempty"`
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

// requestRecord counts a part's requests to MNS and keeps the last failure
// (RequestStatus). Safe for concurrent use.
type requestRecord struct {
	requests, failed, accepted atomic.Int64
	failing                    atomic.Bool
	last                       lastError
}

func (r *requestRecord) get() RequestStatus {
	return RequestStatus{Requests: r.requests.Load(), Failed: r.failed.Load(), Accepted: r.accepted.Load(),
		Failing: r.failing.Load(), PartError: r.last.get()}
}

// statusRecorder collects the counts and last errors /status reports.
type statusRecorder struct {
	started    time.Time
	mns        requestRecord // the pipeline's sends
	deadQueue  requestRecord // the dead-letter queue's sends
	deadReason lastError     // the last dead-lettered message's reason
	deadWrite  lastError     // the last failure writing a dead letter
	spool      func() spool.Stats
	spoolMu    sync.Mutex

	// What came in, as the stop line counts it (flow): what this run took
	// from the platform, and with the spool what it held at the start and
	// the stage's releases (nil without the spool; under spoolMu).
	sourceReceived atomic.Int64
	inSpoolAtStart atomic.Int64
	releases       func() (upstream, requeued int64)
}

// recordingSink passes sends on to the sink and counts them in rec. A send
// cancelled (shutdown) is not a failure. meter, when set, hears each
// request and how long it took (the metrics of the sends the pipeline does
// not make: the dead-letter queue's).
type recordingSink struct {
	bridge.Sink
	rec   *requestRecord
	meter func(dest bridge.Destination, errs []error, took time.Duration)
}

func (s recordingSink) Send(ctx context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	start := time.Now()
	errs := s.Sink.Send(ctx, dest, msgs)
	if s.meter != nil {
		s.meter(dest, errs, time.Since(start))
	}
	failed, accepted := false, 0
	for i, err := range errs {
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, context.Canceled):
		case !failed:
			failed = true
			s.rec.last.set(fmt.Sprintf("%s: message %s: %v", dest, msgs[i].ID, err))
		}
	}
	s.rec.requests.Add(1)
	s.rec.accepted.Add(int64(accepted))
	if failed {
		s.rec.failed.Add(1)
	}
	s.rec.failing.Store(failed)
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

// setStage records the spool's stage, opened with atStart messages (an
// earlier run's backlog): flow counts from it.
func (r *statusRecorder) setStage(s *spool.Stage, atStart int64) {
	r.spoolMu.Lock()
	r.releases = s.Releases
	r.spoolMu.Unlock()
	r.inSpoolAtStart.Store(atStart)
}

// flow is what came in and how each delivery was settled, with the names
// and meaning of the stop line (run.go's stopCounts): /status, the
// summary line and the stop line read it here, so they say the same.
type flow struct {
	bridge.Stats
	// Spooled: the spool is on; InSpoolAtStart is then what it held when
	// the bridge started.
	Spooled        bool
	InSpoolAtStart int64
	// SourceReceived: the deliveries this run took from the platform
	// (with the spool, into it): source_received_total.
	SourceReceived int64
	// Released is what was given back upstream, which the platform sends
	// again; with the spool not what the pipeline released back into it
	// (those stay in the spool), but what never reached it. It replaces
	// Stats.Released, which counts both.
	Released int64
}

// flow reads the counts. Stats is one moment; SourceReceived is read
// after it: a delivery is counted there once intake took it, after the
// pipeline (without the spool) counted it in Received.
func (b *Bridge) flow() flow {
	f := flow{Stats: b.pipeline.Stats()}
	f.SourceReceived = b.status.sourceReceived.Load()
	f.Released = f.Stats.Released
	b.status.spoolMu.Lock()
	releases := b.status.releases
	b.status.spoolMu.Unlock()
	if releases != nil {
		upstream, requeued := releases()
		f.Spooled, f.InSpoolAtStart = true, b.status.inSpoolAtStart.Load()
		f.Released = f.Stats.Released - requeued + upstream
	}
	return f
}

// Status returns a snapshot of the bridge's state.
func (b *Bridge) Status() Status {
	st := Status{Version: Version(), StartedAt: b.status.started, Time: time.Now()}
	st.NotReady = b.NotReady()
	st.MNSSendsFailing = b.pipeline.FailingCount()
	b.readyMu.Lock()
	st.MNSLookupsFailing = len(b.notReady)
	st.ConfigReloadRefused = b.reloadRefused
	st.ConfigRestartPending = slices.Clone(b.restartPending)
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
	f := b.flow()
	st.Pipeline = PipelineStatus{SourceReceived: f.SourceReceived, Received: f.Received, Forwarded: f.Forwarded, DeadLettered: f.DeadLettered,
		Duplicates: f.Duplicates, Joined: f.Joined, Released: f.Released, Stranded: f.Stranded, Retried: f.Retried, InFlight: f.InFlight,
		MaxInFlight: b.cfg.Delivery.MaxInFlight}
	if f.Spooled {
		st.Pipeline.InSpoolAtStart = &f.InSpoolAtStart
	}
	st.MNS = b.status.mns.get()
	if q := b.cfg.Delivery.DeadLetter.Queue; q != "" {
		st.DeadLetterQueue = &DeadLetterQueueStatus{Name: q, RequestStatus: b.status.deadQueue.get()}
	}
	reason := b.status.deadReason.get()
	st.DeadLetters = DeadLetterStatus{LastReason: reason.LastError, LastReasonAt: reason.LastErrorAt, PartError: b.status.deadWrite.get()}
	b.status.spoolMu.Lock()
	spoolStats := b.status.spool
	b.status.spoolMu.Unlock()
	if spoolStats != nil {
		s := spoolStats()
		st.Spool = &SpoolStatus{Messages: int64(s.Depth), Bytes: s.Bytes, MaxBytes: s.MaxBytes, Full: s.Full, WritesFailing: s.CommitError}
	}
	return st
}

func (b *Bridge) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(b.Status())
}
