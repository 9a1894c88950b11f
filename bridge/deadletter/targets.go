package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Targets writes dead letters to the configured targets: the JSONL file,
// the MNS queue, or both (an entry counts as stored only when every target
// has it). It implements bridge.DeadLetterSink. The file is opened by Open,
// not when the bridge is provisioned, so that "check" never takes the lock a
// running daemon holds.
type Targets struct {
	path  string
	max   int64 // the file's size bound, 0 = none
	file  *File
	sink  bridge.Sink
	queue string
	// answered hears each answer of the queue's requests (OnAnswer).
	answered func()

	mu    sync.Mutex
	filed map[filedKey]struct{} // entries in the file whose queue write failed
}

// filedKey names one dead-letter entry across the pipeline's retries of it:
// the same message and the same time (an entry is dated once).
type filedKey struct {
	m *bridge.Message
	t time.Time
}

// NewTargets returns the targets: the file at path (none when empty) and
// the MNS queue named queue on sink (none when empty).
func NewTargets(path string, sink bridge.Sink, queue string) *Targets {
	return &Targets{path: path, sink: sink, queue: queue}
}

// BoundFile bounds the file's size to maxBytes (0: no bound): when it is
// reached, DeadLetter fails with a *FullError and the pipeline holds the
// messages (see OpenFileBounded). Call it before Open.
func (d *Targets) BoundFile(maxBytes int64) {
	d.max = maxBytes
}

// OnAnswer has f called after each request to the queue returns, whatever
// its outcome, while a DeadLetter call goes on: the pipeline's liveness
// (bridge.Pipeline.Answered) then sees MNS answer during a long write.
// Call it before the first DeadLetter.
func (d *Targets) OnAnswer(f func()) {
	d.answered = f
}

// Open opens (or creates) the dead-letter file, if one is configured.
func (d *Targets) Open() error {
	if d.path == "" || d.file != nil {
		return nil
	}
	f, err := OpenFileBounded(d.path, d.max)
	if err != nil {
		return err
	}
	d.file = f
	return nil
}

// WriteFile writes msgs with reason to the file only, not the queue: at
// shutdown MNS may be what is failing. It fails when no file is configured
// or open. Its errors speak of the file; the caller names the setting.
func (d *Targets) WriteFile(msgs []bridge.Message, reason string, now time.Time) error {
	if d.file == nil {
		return errors.New("deadletter: no dead-letter file is configured or open")
	}
	entries := make([]Entry, len(msgs))
	for i, m := range msgs {
		entries[i] = NewEntry(m, reason, now)
	}
	if err := d.file.Write(entries...); err != nil {
		return fmt.Errorf("deadletter: write %s: %w", d.path, err)
	}
	return nil
}

// toEntry is the file's entry for the pipeline's dead letter.
func toEntry(e bridge.DeadLetter) Entry {
	en := NewEntry(*e.Message, e.Reason, e.Time)
	if e.Dest.Kind != 0 {
		en.Destination = e.Dest.String()
	}
	en.Attempts = e.Attempts
	return en
}

// DeadLetter stores entries in the file (fsynced) and then the queue. When
// the queue fails and the caller retries the same entries, the file is not
// written again: it has them. A retry after a partial failure of the queue
// may send an entry to the queue twice.
func (d *Targets) DeadLetter(ctx context.Context, entries []bridge.DeadLetter) error {
	conv := make([]Entry, len(entries))
	for i, e := range entries {
		conv[i] = toEntry(e)
	}
	if d.path != "" {
		if d.file == nil {
			return errors.New("deadletter: the dead-letter file is not open (Open was not called)")
		}
		if err := d.file.Write(d.notFiled(entries, conv)...); err != nil {
			return err
		}
	}
	if d.queue == "" {
		return nil
	}
	outs := make([]bridge.Outgoing, len(conv))
	for i, e := range conv {
		body, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("dead-letter entry %s: %w", e.MessageID, err)
		}
		outs[i] = bridge.Outgoing{Body: body, ID: e.MessageID}
	}
	errs := d.sendQueue(ctx, outs)
	var failed queueFailures
	for i, err := range errs {
		// An entry the queue refuses for good (say, too large) is stored
		// all the same when the file has it; otherwise it stays held. A
		// queue that does not exist is not such a refusal: the config names
		// it literally, as a route's literal queue, so the entries wait for
		// it to be created (or the config fixed), as that route's messages.
		if err != nil && (d.path == "" || bridge.Retryable(err) || bridge.MissingDestination(err)) {
			failed.add(conv[i].MessageID, err)
		}
	}
	if d.path != "" {
		d.setFiled(entries, failed.errs != nil)
	}
	return failed.join(d.queue)
}

// queueFailures are the entries the queue did not take, by error: a request
// the queue refuses (no permission, MNS down) fails each of its up to 16
// entries with the same error, which is said once, with the count.
type queueFailures struct {
	errs []error
	ids  [][]string // the message ids of errs[i]
}

func (f *queueFailures) add(id string, err error) {
	for i, e := range f.errs {
		if e == err || e.Error() == err.Error() {
			f.ids[i] = append(f.ids[i], id)
			return
		}
	}
	f.errs, f.ids = append(f.errs, err), append(f.ids, []string{id})
}

// join is the error of the failures for the queue named queue; nil when
// there are none.
func (f *queueFailures) join(queue string) error {
	out := make([]error, len(f.errs))
	for i, err := range f.errs {
		which := "message " + f.ids[i][0]
		if n := len(f.ids[i]); n > 1 {
			which = fmt.Sprintf("%d messages (%s ... %s)", n, f.ids[i][0], f.ids[i][n-1])
		}
		out[i] = fmt.Errorf("dead-letter queue %s, %s: %w", queue, which, err)
	}
	return errors.Join(out...)
}

// sendQueue sends outs to the queue one request at a time (a Send within
// the sink's limits, when it declares them) and calls the answer hook after
// each: a write of many entries to a slow MNS shows, request by request,
// that MNS answers. It returns one error per entry.
func (d *Targets) sendQueue(ctx context.Context, outs []bridge.Outgoing) []error {
	dest := bridge.Destination{Kind: bridge.Queue, Name: d.queue}
	var lim bridge.SinkLimits
	if ls, ok := d.sink.(bridge.LimitedSink); ok {
		lim = ls.Limits(dest)
	}
	errs := make([]error, 0, len(outs))
	for len(outs) > 0 {
		n := lim.Fit(outs)
		errs = append(errs, d.sink.Send(ctx, dest, outs[:n])...)
		if d.answered != nil {
			d.answered()
		}
		outs = outs[n:]
	}
	return errs
}

// notFiled returns the entries of conv the file does not have yet from an
// earlier call with the same entries.
func (d *Targets) notFiled(entries []bridge.DeadLetter, conv []Entry) []Entry {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.filed) == 0 || d.queue == "" {
		return conv
	}
	out := conv[:0:0]
	for i, e := range entries {
		if _, ok := d.filed[filedKey{e.Message, e.Time}]; !ok {
			out = append(out, conv[i])
		}
	}
	return out
}

// setFiled remembers entries as in the file while the queue failed (the
// caller retries them), and forgets them once it took them. Entries the
// pipeline releases at shutdown instead of retrying stay: the process ends.
func (d *Targets) setFiled(entries []bridge.DeadLetter, retried bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if retried && d.filed == nil {
		d.filed = make(map[filedKey]struct{})
	}
	for _, e := range entries {
		if retried {
			d.filed[filedKey{e.Message, e.Time}] = struct{}{}
		} else {
			delete(d.filed, filedKey{e.Message, e.Time})
		}
	}
}

// Close closes the file, if open.
func (d *Targets) Close() error {
	if d.file == nil {
		return nil
	}
	err := d.file.Close()
	d.file = nil
	return err
}
