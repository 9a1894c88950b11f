package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// queueSink is a fake MNS sink: it records what is sent and answers each
// message with err.
type queueSink struct {
	err  error
	dest bridge.Destination
	got  []bridge.Outgoing
}

func (s *queueSink) Send(_ context.Context, dest bridge.Destination, msgs []bridge.Outgoing) []error {
	s.dest, s.got = dest, append(s.got, msgs...)
	errs := make([]error, len(msgs))
	for i := range errs {
		errs[i] = s.err
	}
	return errs
}

func deadLetter(id string) bridge.DeadLetter {
	m := bridge.Message{Topic: "/pk/dev/user/x", MessageID: id, GenerateTime: 17, Body: []byte{0, 1, 2}, Properties: map[string]string{"k": "v"}}
	return bridge.DeadLetter{Message: &m, Reason: "MNS refused it", Dest: bridge.Destination{Kind: bridge.Queue, Name: "q1"}, Attempts: 3, Time: time.Now()}
}

// TestTargetsWriteFileAndQueue: an entry goes to the file (with the route's
// destination and the attempts) and, as the same JSON, to the queue.
func TestTargetsWriteFileAndQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	sink := &queueSink{}
	tg := NewTargets(path, sink, "dlq")
	if err := tg.DeadLetter(context.Background(), []bridge.DeadLetter{deadLetter("m1")}); err == nil {
		t.Fatal("DeadLetter before Open: no error")
	}
	if err := tg.Open(); err != nil {
		t.Fatal(err)
	}
	if err := tg.DeadLetter(context.Background(), []bridge.DeadLetter{deadLetter("m1")}); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	var got []Entry
	if err := ReadFile(path, func(_ int, e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].MessageID != "m1" || got[0].Destination != "queue q1" || got[0].Attempts != 3 ||
		string(got[0].Body) != "\x00\x01\x02" || got[0].Properties["k"] != "v" || got[0].GenerateTime != 17 {
		t.Fatalf("file holds %+v", got)
	}
	if sink.dest != (bridge.Destination{Kind: bridge.Queue, Name: "dlq"}) || len(sink.got) != 1 || sink.got[0].ID != "m1" {
		t.Fatalf("queue got %v %+v", sink.dest, sink.got)
	}
	var q Entry
	if err := json.Unmarshal(sink.got[0].Body, &q); err != nil || q.MessageID != "m1" || q.Reason != "MNS refused it" {
		t.Fatalf("queue body %s: %v", sink.got[0].Body, err)
	}
}

// TestTargetsQueueRefusal: a queue that refuses an entry for good is
// tolerated when the file has it; a retryable failure, or any failure
// without a file, leaves the entry unstored.
func TestTargetsQueueRefusal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	permanent := &queueSink{err: bridge.Permanent(errors.New("too large"))}
	tg := NewTargets(path, permanent, "dlq")
	if err := tg.Open(); err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := tg.DeadLetter(context.Background(), []bridge.DeadLetter{deadLetter("m1")}); err != nil {
		t.Errorf("permanent refusal with the file holding the entry: %v", err)
	}
	tg.sink = &queueSink{err: errors.New("503")}
	if err := tg.DeadLetter(context.Background(), []bridge.DeadLetter{deadLetter("m2")}); err == nil {
		t.Error("retryable queue failure: no error")
	}
	queueOnly := NewTargets("", permanent, "dlq")
	if err := queueOnly.DeadLetter(context.Background(), []bridge.DeadLetter{deadLetter("m3")}); err == nil {
		t.Error("permanent refusal without a file: no error")
	}
}

// TestTargetsQueueFailureIsSaidOnce: a request the queue refuses fails
// each of its entries with the same error; the error says it once with the
// count (it said it once per entry: 16 copies in /readyz, /status and the
// log for one refused request), and a different error on its own.
func TestTargetsQueueFailureIsSaidOnce(t *testing.T) {
	refused := errors.New("AccessDenied (HTTP 403)")
	tg := NewTargets("", &queueSink{err: refused}, "dlq")
	var batch []bridge.DeadLetter
	for i := range 16 {
		batch = append(batch, deadLetter(fmt.Sprintf("m%02d", i)))
	}
	err := tg.DeadLetter(context.Background(), batch)
	if want := "dead-letter queue dlq, 16 messages (m00 ... m15): AccessDenied (HTTP 403)"; err == nil || err.Error() != want || !errors.Is(err, refused) {
		t.Errorf("16 entries refused alike: %v, want %q", err, want)
	}
	var f queueFailures
	f.add("a", refused)
	f.add("b", errors.New("InternalError (HTTP 500)"))
	if got, want := f.join("dlq").Error(), "dead-letter queue dlq, message a: AccessDenied (HTTP 403)\ndead-letter queue dlq, message b: InternalError (HTTP 500)"; got != want {
		t.Errorf("two different failures: %q, want %q", got, want)
	}
}

// TestTargetsRetryWritesTheFileOnce: while the queue fails (an MNS outage,
// a RAM user that may not send to it), the pipeline retries the same entries
// with backoff; the file, which has them after the first call, gets each
// entry once, not once per retry, and the queue gets every retry until it
// takes them. Before, each retry appended them again (walked: 889 lines in the
// file for 20 dead-lettered messages after 11 minutes).
func TestTargetsRetryWritesTheFileOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	sink := &queueSink{err: errors.New("AccessDenied (HTTP 403)")}
	tg := openTargets(t, path, sink)
	entries := []bridge.DeadLetter{deadLetter("m1"), deadLetter("m2")}
	refusedEachTime(t, tg, entries, 3)
	sink.err = nil
	if err := tg.DeadLetter(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	// The same message dead-lettered anew (another entry) is written again.
	again := []bridge.DeadLetter{deadLetter("m1")}
	if err := tg.DeadLetter(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := ReadFile(path, func(_ int, e Entry) error { ids = append(ids, e.MessageID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 3 || ids[0] != "m1" || ids[1] != "m2" || ids[2] != "m1" {
		t.Errorf("file holds %v, want [m1 m2 m1] (each entry once)", ids)
	}
	if len(sink.got) != 4*2+1 {
		t.Errorf("queue got %d sends, want 9 (every retry until it took them, then the new entry)", len(sink.got))
	}
}

// missingQueue is MNS's QueueNotExist as the sink returns it: permanent for
// a request, and a missing destination.
type missingQueue struct{}

func (missingQueue) Error() string            { return "QueueNotExist (HTTP 404)" }
func (missingQueue) Retryable() bool          { return false }
func (missingQueue) MissingDestination() bool { return true }

// TestTargetsMissingQueueHoldsTheEntries: a dead-letter queue that does not
// exist (delivery.dead_letter.queue names it literally, as a route's literal
// queue) leaves the entries held and retried, also when the file has them,
// and they reach the queue once it is created, the file having each once.
// Before, the file's copy counted as stored: a missing queue's entries never
// reached it after it was created, and status said the queue FAILING until
// the next dead letter (walk9: 100 dead letters, the queue created 10 s later,
// 0 in it).
func TestTargetsMissingQueueHoldsTheEntries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	sink := &queueSink{err: missingQueue{}}
	tg := NewTargets(path, sink, "dlq")
	if err := tg.Open(); err != nil {
		t.Fatal(err)
	}
	entries := []bridge.DeadLetter{deadLetter("m1")}
	if err := tg.DeadLetter(context.Background(), entries); err == nil || !bridge.MissingDestination(err) {
		t.Fatalf("missing queue with the file holding the entry: %v, want the queue's error (held)", err)
	}
	sink.err = nil
	if err := tg.DeadLetter(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := ReadFile(path, func(_ int, e Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(sink.got) != 2 || sink.got[1].ID != "m1" {
		t.Errorf("file holds %d entries, queue got %d sends: want 1 and 2 (the retry once the queue exists)", n, len(sink.got))
	}
}

// TestTargetsFileAnEntryTheSpoolHoldsOnceTheQueueTookIt: an entry the
// spool or the platform gives again after a restart (Redeliverable) goes to
// the file once the queue took it: while the queue refuses it, each start
// dead-letters the spool's message anew, and the file got it again at
// every start (walk9: 7 messages, 21 lines after three starts while the
// RAM user could not send to the queue). A retry after the file failed does
// not send to the queue again what it took; one the queue refuses for good
// is filed all the same.
func TestTargetsFileAnEntryTheSpoolHoldsOnceTheQueueTookIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dead.jsonl")
	refused := &queueSink{err: errors.New("AccessDenied (HTTP 403)")}
	spooled := func(id string) bridge.DeadLetter { e := deadLetter(id); e.Redeliverable = true; return e }
	for range 3 { // each start, the spool's messages are dead-lettered anew
		tg := openTargets(t, path, refused)
		refusedEachTime(t, tg, []bridge.DeadLetter{spooled("m1"), spooled("m2")}, 2)
		if err := tg.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if ids := fileIDs(t, path); len(ids) != 0 {
		t.Fatalf("the file holds %v while the queue refuses what the spool holds, want nothing yet", ids)
	}

	// The queue takes them; the file fails once: the retry writes only the
	// file.
	tg := openTargets(t, path, &queueSink{})
	entries := []bridge.DeadLetter{spooled("m1"), spooled("m2")}
	file := tg.file
	tiny, err := OpenFileBounded(filepath.Join(t.TempDir(), "tiny.jsonl"), 1) // nothing fits
	if err != nil {
		t.Fatal(err)
	}
	tg.file = tiny
	if err := tg.DeadLetter(context.Background(), entries); err == nil {
		t.Fatal("a file with no room: no error")
	}
	tiny.Close()
	tg.file = file
	if err := tg.DeadLetter(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
	if got := len(tg.sink.(*queueSink).got); got != 2 {
		t.Errorf("the queue got %d sends, want 2 (the retry after the file failed sends none)", got)
	}
	// Refused for good by the queue: filed all the same.
	tg.sink = &queueSink{err: bridge.Permanent(errors.New("MessageTooLarge"))}
	if err := tg.DeadLetter(context.Background(), []bridge.DeadLetter{spooled("m3")}); err != nil {
		t.Errorf("refused for good with the file: %v", err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
	if ids := fileIDs(t, path); len(ids) != 3 || ids[0] != "m1" || ids[1] != "m2" || ids[2] != "m3" {
		t.Errorf("the file holds %v, want [m1 m2 m3] (each once)", ids)
	}
}

// fileIDs returns the message ids of the dead-letter file's entries.
func fileIDs(t *testing.T, path string) []string {
	t.Helper()
	var ids []string
	if err := ReadFile(path, func(_ int, e Entry) error { ids = append(ids, e.MessageID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// openTargets returns open targets: the file at path and the queue dlq on
// sink.
func openTargets(t *testing.T, path string, sink bridge.Sink) *Targets {
	t.Helper()
	tg := NewTargets(path, sink, "dlq")
	if err := tg.Open(); err != nil {
		t.Fatal(err)
	}
	return tg
}

// refusedEachTime has tg store entries n times while the queue refuses
// them: each call must fail.
func refusedEachTime(t *testing.T, tg *Targets, entries []bridge.DeadLetter, n int) {
	t.Helper()
	for i := range n {
		if err := tg.DeadLetter(context.Background(), entries); err == nil {
			t.Fatalf("call %d with the queue refusing: no error", i+1)
		}
	}
}
