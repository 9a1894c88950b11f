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

	mu sync.Mutex
	// stored is what a target has of the entries whose last DeadLetter
	// failed (the caller retries them): a retry writes to each target
	// only what it lacks.
	stored map[entryKey]storedIn
}

// entryKey names one dead-letter entry across the pipeline's retries of
// it: the same message and the same time (an entry is dated once).
type entryKey struct {
	m *bridge.Message
	t time.Time
}

// storedIn is which targets are done with an entry.
type storedIn uint8

const (
	inFile  storedIn = 1 << iota
	inQueue          // taken, or refused for good while the file has it
)

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

// DeadLetter stores entries in the file (fsynced) and the queue; an entry
// counts as stored once both have it. The order is the entry's: one that
// nothing else holds (not Redeliverable: STOMP ack auto without the spool)
// goes to the file first, so that a crash while the queue fails keeps it;
// one that the spool or the platform gives again after a restart goes to
// the file once the queue took it (or refused it for good), so that while
// the queue refuses it (a RAM user without mns:BatchSendMessage on it) the
// file does not get it again at every start, each of which dead-letters it
// anew. When the caller retries the same entries after a failure, each
// target gets only those it lacks.
func (d *Targets) DeadLetter(ctx context.Context, entries []bridge.DeadLetter) error {
	if d.path != "" && d.file == nil {
		return errors.New("deadletter: the dead-letter file is not open (Open was not called)")
	}
	conv := make([]Entry, len(entries))
	for i, e := range entries {
		conv[i] = toEntry(e)
	}
	have := d.had(entries)
	err := d.store(ctx, entries, conv, have)
	d.remember(entries, have, err != nil)
	return err
}

// store writes to each target the entries it lacks by have, and marks in
// have what each took.
func (d *Targets) store(ctx context.Context, entries []bridge.DeadLetter, conv []Entry, have []storedIn) error {
	fileFirst := func(i int) bool { return d.queue == "" || !entries[i].Redeliverable }
	if err := d.writeFile(conv, have, fileFirst); err != nil {
		return err
	}
	if d.queue == "" {
		return nil
	}
	var (
		outs []bridge.Outgoing
		idx  []int // the entries of outs
	)
	for i, e := range conv {
		if have[i]&inQueue != 0 {
			continue
		}
		body, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("dead-letter entry %s: %w", e.MessageID, err)
		}
		outs, idx = append(outs, bridge.Outgoing{Body: body, ID: e.MessageID}), append(idx, i)
	}
	var failed queueFailures
	for j, err := range d.sendQueue(ctx, outs) {
		i := idx[j]
		// An entry the queue refuses for good (say, too large) is stored
		// all the same when the file has it; otherwise it stays held. A
		// queue that does not exist is not such a refusal: the config names
		// it literally, as a route's literal queue, so the entries wait for
		// it to be created (or the config fixed), as that route's messages.
		if err != nil && (d.path == "" || bridge.Retryable(err) || bridge.MissingDestination(err)) {
			failed.add(conv[i].MessageID, err)
			continue
		}
		have[i] |= inQueue
	}
	if err := d.writeFile(conv, have, func(i int) bool { return have[i]&inQueue != 0 }); err != nil {
		return errors.Join(failed.join(d.queue), err)
	}
	return failed.join(d.queue)
}

// writeFile writes to the file, when one is configured, the entries it
// lacks by have for which now says it is their turn, and marks them in have.
func (d *Targets) writeFile(conv []Entry, have []storedIn, now func(i int) bool) error {
	if d.path == "" {
		return nil
	}
	var out []Entry
	var idx []int
	for i := range conv {
		if have[i]&inFile == 0 && now(i) {
			out, idx = append(out, conv[i]), append(idx, i)
		}
	}
	if len(out) == 0 {
		return nil
	}
	if err := d.file.Write(out...); err != nil {
		return err
	}
	for _, i := range idx {
		have[i] |= inFile
	}
	return nil
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

// had returns what each target had of entries from an earlier call that
// failed.
func (d *Targets) had(entries []bridge.DeadLetter) []storedIn {
	have := make([]storedIn, len(entries))
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.stored) == 0 {
		return have
	}
	for i, e := range entries {
		have[i] = d.stored[entryKey{e.Message, e.Time}]
	}
	return have
}

// remember keeps what each target has of entries when the call failed
// (the caller retries them), and forgets them once it succeeded. Entries
// the pipeline releases at shutdown instead of retrying stay: the process
// ends.
func (d *Targets) remember(entries []bridge.DeadLetter, have []storedIn, retried bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if retried && d.stored == nil {
		d.stored = make(map[entryKey]storedIn)
	}
	for i, e := range entries {
		k := entryKey{e.Message, e.Time}
		if retried && have[i] != 0 {
			d.stored[k] = have[i]
		} else {
			delete(d.stored, k)
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
