package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/syncbuf"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
)

// forwarded is what a test pipeline saw: the spool key and the message of
// every delivery, in the order the feeder handed them over.
type forwarded struct {
	mu   sync.Mutex
	keys []uint64
	msgs []bridge.Message
	got  chan struct{} // a message arrived
}

// feed starts a stage on s whose pipeline calls handle (nil: accept at
// once) and records what it accepted; the feeder stops at the end of the
// test.
func feed(t *testing.T, s *Spool, handle func(d *bridge.Delivery) error) (*Stage, *forwarded) {
	t.Helper()
	st, f, start := stage(t, s, handle)
	start()
	return st, f
}

// stage is feed with the feeder started by start: a test calls it when
// the schedule it plays wants the feeder to begin.
func stage(t *testing.T, s *Spool, handle func(d *bridge.Delivery) error) (st *Stage, f *forwarded, start func()) {
	t.Helper()
	f = &forwarded{got: make(chan struct{}, 1)}
	pipeline := func(_ context.Context, d *bridge.Delivery) error {
		if handle != nil {
			if err := handle(d); err != nil {
				return err
			}
		}
		f.mu.Lock()
		f.keys = append(f.keys, d.Token.(uint64))
		f.msgs = append(f.msgs, d.Message)
		f.mu.Unlock()
		d.Accept()
		select {
		case f.got <- struct{}{}:
		default:
		}
		return nil
	}
	st = NewStage(s, pipeline, slog.New(slog.DiscardHandler))
	start = func() {
		ctx, cancel := context.WithCancel(context.Background())
		fed := make(chan struct{})
		go func() { st.Feed(ctx); close(fed) }()
		t.Cleanup(func() { cancel(); <-fed })
	}
	return st, f, start
}

// wait returns the forwarded messages once there are n of them.
func (f *forwarded) wait(t *testing.T, n int) ([]uint64, []bridge.Message) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		f.mu.Lock()
		k, m := f.keys, f.msgs
		f.mu.Unlock()
		if len(k) >= n {
			return k, m
		}
		select {
		case <-f.got:
		case <-deadline:
			t.Fatalf("the pipeline got %d of %d messages", len(k), n)
		}
	}
}

// intake hands the messages with numbers from to to-1 to the stage.
func intake(t *testing.T, st *Stage, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := st.Intake(context.Background(), bridge.NewDelivery(msg(i), nopSettler{}, nil)); err != nil {
			t.Fatalf("Intake %d: %v", i, err)
		}
	}
}

// inOrder checks that the pipeline got the messages numbered from to
// from+len(msgs)-1 once each, in key order.
func inOrder(t *testing.T, keys []uint64, msgs []bridge.Message, from int) {
	t.Helper()
	for i, m := range msgs {
		if want := fmt.Sprintf("m-%d", from+i); m.MessageID != want || !sameMessage(m, msg(from+i)) {
			t.Fatalf("message %d forwarded is %q %q, want %s", i, m.MessageID, m.Body, want)
		}
		if i > 0 && keys[i] <= keys[i-1] {
			t.Fatalf("key %d forwarded after key %d", keys[i], keys[i-1])
		}
	}
}

// leftByAnEarlierRun returns a spool opened on a new directory in which an
// earlier run left the messages numbered 0 to n-1: opened, appended and
// closed before this open.
func leftByAnEarlierRun(t *testing.T, n int) *Spool {
	t.Helper()
	dir := t.TempDir()
	s := open(t, Options{Dir: dir})
	for i := range n {
		add(t, s, msg(i))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return open(t, Options{Dir: dir})
}

// waitDepth waits until the spool holds n messages: the deletes of
// accepted messages commit on their own.
func waitDepth(t *testing.T, s *Spool, n int64) {
	t.Helper()
	waitfor.Until(t, fmt.Sprintf("spool depth %d", n), 30*time.Second, func() bool { return s.Stats().Depth == n },
		func() string { return fmt.Sprintf("spool depth %d, want %d", s.Stats().Depth, n) })
}

// A message committed in this run reaches the pipeline from memory, the
// delivery Intake took, not read back and decoded from the file; a base64
// body then goes on as the platform sent it (the sink passes it through).
// So it goes whatever the schedule: the feeder's first read (what an
// earlier run left) may come after this run's commits, and its look for
// what the window missed (at every wake-up) may come between a commit and
// the window getting its messages.
func TestStageForwardsFromMemory(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool // the feeder starts once every message is committed
	}{
		{name: "feeder first"},
		{name: "feeder late", late: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, Options{})
			st, f, start := stage(t, s, nil)
			if !tc.late {
				start()
			}
			const n = 300
			intake(t, st, 0, n)
			b64 := bridge.Message{Topic: "/pk/dev/user/telemetry", MessageID: "b64", Body: []byte("aGk="), Base64: true}
			if err := st.Intake(context.Background(), bridge.NewDelivery(b64, nopSettler{}, nil)); err != nil {
				t.Fatal(err)
			}
			if tc.late {
				s.sync()
				start()
			}
			keys, msgs := f.wait(t, n+1)
			inOrder(t, keys, msgs[:n], 0)
			if got := msgs[n]; !got.Base64 || string(got.Body) != "aGk=" {
				t.Errorf("base64 message forwarded as Base64=%v %q, want the platform's text", got.Base64, got.Body)
			}
			if mem, read := st.fromMemory.Load(), st.readBack.Load(); mem != n+1 || read != 0 {
				t.Errorf("forwarded %d from memory and %d read back, want %d and 0", mem, read, n+1)
			}
			waitDepth(t, s, 0)
		})
	}
}

// What does not fit in the window while the pipeline is stuck is read
// back from the file: every message arrives once, in key order. The
// window serves what fitted whether the feeder started before this run's
// commits or after them.
func TestStageReadsBackWhatDidNotFit(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(map[bool]string{false: "feeder first", true: "feeder late"}[late], func(t *testing.T) {
			s := open(t, Options{})
			gate := make(chan struct{})
			st, f, start := stage(t, s, func(*bridge.Delivery) error { <-gate; return nil })
			if !late {
				start()
			}
			n := windowLen + 1000
			intake(t, st, 0, n)
			s.sync()
			if late {
				start()
			}
			close(gate)
			keys, msgs := f.wait(t, n)
			inOrder(t, keys, msgs, 0)
			if mem, read := st.fromMemory.Load(), st.readBack.Load(); mem+read != int64(n) || read < 900 || mem < windowLen/2 {
				t.Errorf("forwarded %d from memory and %d read back, want %d in all, at least %d read back and %d from memory", mem, read, n, 900, windowLen/2)
			}
			// Later messages come from memory again.
			intake(t, st, n, n+10)
			keys, msgs = f.wait(t, n+10)
			inOrder(t, keys, msgs, 0)
			waitDepth(t, s, 0)
		})
	}
}

// The feeder finds what the window never heard of: a message appended
// besides Intake (as the shutdown's AppendAll does), woken by its commit
// (the spool's notice: the feeder has no periodic look) or by the gap it
// leaves among this run's keys, and one committing while the Stage was
// made. Each is read back once, in key order, and this run's Intakes still
// come from memory.
func TestStageFindsWhatTheWindowMissed(t *testing.T) {
	s := open(t, Options{})
	committed := make(chan error, 1)
	m0 := msg(0)
	if err := s.Append(context.Background(), &m0, func(_ uint64, err error) { committed <- err }); err != nil {
		t.Fatal(err)
	}
	st, f, start := stage(t, s, nil)
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	start()
	add(t, s, msg(1)) // only its commit's notice wakes the feeder for it
	f.wait(t, 2)
	intake(t, st, 2, 4)
	add(t, s, msg(4)) // a gap before the window's next key
	intake(t, st, 5, 8)
	keys, msgs := f.wait(t, 8)
	inOrder(t, keys, msgs, 0)
	if mem, read := st.fromMemory.Load(), st.readBack.Load(); mem != 5 || read != 3 {
		t.Errorf("forwarded %d from memory and %d read back, want 5 and 3", mem, read)
	}
	waitDepth(t, s, 0)
}

// What an earlier run left is forwarded first, then this run's messages,
// in key order; a message whose forward failed is forwarded again.
func TestStageReplaysTheEarlierRunFirstAndRetries(t *testing.T) {
	s := leftByAnEarlierRun(t, 5)
	failed := false
	st, f := feed(t, s, func(d *bridge.Delivery) error {
		if d.MessageID == "m-7" && !failed {
			failed = true
			return errors.New("pipeline refused once")
		}
		return nil
	})
	intake(t, st, 5, 10)
	keys, msgs := f.wait(t, 10)
	inOrder(t, keys, msgs, 0)
	if read := st.readBack.Load(); read < 5 {
		t.Errorf("%d messages read back, want the earlier run's 5 at least", read)
	}
	waitDepth(t, s, 0)
}

// A forward that failed is tried again after retryWait also when nothing
// more is committed, so nothing wakes the feeder for it (it has no
// periodic look): the last message of a burst, taken from memory and
// refused once by the pipeline, is read back from the file, reaches the
// pipeline and leaves the spool.
func TestStageRetriesAFailedForwardOnItsOwn(t *testing.T) {
	s := open(t, Options{})
	refused := make(chan struct{})
	st, f := feed(t, s, func(d *bridge.Delivery) error {
		select {
		case <-refused:
			return nil
		default:
			close(refused)
			return errors.New("pipeline refused once")
		}
	})
	intake(t, st, 0, 1)
	<-refused
	keys, msgs := f.wait(t, 1)
	inOrder(t, keys, msgs, 0)
	if mem, read := st.fromMemory.Load(), st.readBack.Load(); mem != 1 || read != 1 {
		t.Errorf("taken %d times from memory and %d read back, want 1 and 1 (the retry reads it back)", mem, read)
	}
	waitDepth(t, s, 0)
}

// Once its context is done (the intake stops), the feeder hands the
// pipeline nothing more: a read back of an earlier run's messages stops
// there. The pipeline takes a delivery it has room for even then, so a
// feeder that went on filled it to delivery.max_in_flight at every stop
// (8192 of a 12,052-message spool), for a drain that could only give them
// back. What it did not hand over stays in the spool.
func TestStageFeedsNothingMoreOnceItsContextIsDone(t *testing.T) {
	s := leftByAnEarlierRun(t, 10)
	var calls atomic.Int64
	first := make(chan struct{})
	pipeline := func(ctx context.Context, d *bridge.Delivery) error {
		if calls.Add(1) == 1 {
			close(first)
			<-ctx.Done()
		}
		d.Release() // taken, as Handle takes what it has room for, then given back
		return nil
	}
	st := NewStage(s, pipeline, slog.New(slog.DiscardHandler))
	ctx, stop := context.WithCancel(context.Background())
	fed := make(chan struct{})
	go func() { st.Feed(ctx); close(fed) }()
	<-first
	stop()
	<-fed
	if n := calls.Load(); n != 1 {
		t.Fatalf("the feeder handed the pipeline %d messages, %d of them after its context was done; want 1 (the one in hand)", n, n-1)
	}
	st.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := s.Stats().Depth; d != 10 {
		t.Fatalf("the spool holds %d messages after the stop, want the 10", d)
	}
}

// Deletes alone wait for an Append to share its commit, and still commit
// on their own after the linger and at Close.
func TestDeletesShareTheNextCommit(t *testing.T) {
	dir := t.TempDir()
	s := open(t, Options{Dir: dir, CommitInterval: -1, delLinger: time.Hour})
	a, b := add(t, s, msg(1)), add(t, s, msg(2))
	c0 := s.commits.Load()
	if err := s.Delete(a); err != nil {
		t.Fatal(err)
	}
	for len(s.kick) > 0 { // the writer took the delete's wake-up
		runtime.Gosched()
	}
	c := add(t, s, msg(3))
	if got := s.commits.Load() - c0; got != 1 {
		t.Errorf("%d commits for a delete and an append, want 1", got)
	}
	if got := ids(replayAll(t, s)); fmt.Sprint(got) != "[m-2 m-3]" {
		t.Errorf("spool holds %v after the commit, want [m-2 m-3]", got)
	}
	if err := s.Delete(b, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, Options{Dir: dir, CommitInterval: -1, delLinger: time.Millisecond})
	if got := replayAll(t, s); len(got) != 0 {
		t.Errorf("spool holds %v after Close committed the deletes", ids(got))
	}
	d := add(t, s, msg(4))
	if err := s.Delete(d); err != nil {
		t.Fatal(err)
	}
	waitDepth(t, s, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStageHoldsWhatFailedToCommit: a message whose commit fails is kept
// and appended again; the next Intake blocks while commits fail; once one
// succeeds, every message reaches the pipeline once, in order; each state
// change is logged once.
func TestStageHoldsWhatFailedToCommit(t *testing.T) {
	st, f, start, failing, failed, logs := failingCommits(t)
	start()
	intake(t, st, 0, 1) // queued; its commit fails
	waitfor.Until(t, "the stage to hold m-0 after its failed commit", 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "spool writes failing")
	})
	w := startIntake(st, 1)
	// m-0 is appended again every retryWait while Intake(m-1) waits.
	waitfor.Until(t, "m-0 appended again after its failed commit", 30*time.Second, func() bool { return failed.Load() >= 2 },
		func() string { return fmt.Sprintf("%d failed commits", failed.Load()) })
	w.stillWaits(t, "while commits fail")
	failing.Store(false)
	w.returnsThenAllForwarded(t, st, f, "after the commits recovered")
	for _, line := range []string{"spool writes failing", "spool writes succeed again"} {
		if n := strings.Count(logs.String(), line); n != 1 {
			t.Errorf("%d log lines %q, want 1:\n%s", n, line, logs.String())
		}
	}
}

// waitingIntake is an Intake of msg(i) in a goroutine of its own, which
// waits while commits fail.
type waitingIntake struct {
	i        int
	returned atomic.Bool
	err      error // Intake's, once returned
}

func startIntake(st *Stage, i int) *waitingIntake {
	w := &waitingIntake{i: i}
	go func() {
		w.err = st.Intake(context.Background(), bridge.NewDelivery(msg(i), nopSettler{}, nil))
		w.returned.Store(true)
	}()
	return w
}

// stillWaits fails the test when the Intake returned (when says while
// what it must not).
func (w *waitingIntake) stillWaits(t *testing.T, when string) {
	t.Helper()
	if w.returned.Load() {
		t.Fatalf("Intake returned %v %s", w.err, when)
	}
}

// returnsThenAllForwarded waits for the Intake to return without error
// (when says after what), hands msg(i+1) over, and checks that the pipeline
// got the messages 0 to i+1 once each, in order.
func (w *waitingIntake) returnsThenAllForwarded(t *testing.T, st *Stage, f *forwarded, when string) {
	t.Helper()
	waitfor.Until(t, "Intake to return "+when, 30*time.Second, w.returned.Load)
	if w.err != nil {
		t.Fatalf("Intake %s: %v", when, w.err)
	}
	intake(t, st, w.i+1, w.i+2)
	keys, msgs := f.wait(t, w.i+2)
	inOrder(t, keys, msgs, 0)
	if len(msgs) != w.i+2 {
		t.Errorf("the pipeline got %d messages, want %d", len(msgs), w.i+2)
	}
}

// failingCommits opens a spool whose commits fail with EIO while the
// returned flag is set (it starts set) and counts the failed ones, with a
// stage on it whose log the test reads; start starts the feeder.
func failingCommits(t *testing.T) (st *Stage, f *forwarded, start func(), failing *atomic.Bool, failed *atomic.Int64, logs *syncbuf.Buffer) {
	return failingCommitsIn(t, Options{}, nil)
}

// failingCommitsIn is failingCommits with opts (a Logger in opts gets the
// stage's log too, as the wiring does) and handle as the pipeline (see
// stage).
func failingCommitsIn(t *testing.T, opts Options, handle func(d *bridge.Delivery) error) (st *Stage, f *forwarded, start func(), failing *atomic.Bool, failed *atomic.Int64, logs *syncbuf.Buffer) {
	t.Helper()
	failing, failed, logs = new(atomic.Bool), new(atomic.Int64), new(syncbuf.Buffer)
	failing.Store(true)
	log := slog.New(slog.NewTextHandler(logs, nil))
	if opts.Logger != nil {
		opts.Logger = log
	}
	opts.commitHook = func(int) error {
		if failing.Load() {
			failed.Add(1)
			return syscall.EIO
		}
		return nil
	}
	s := open(t, opts)
	st, f, start = stage(t, s, handle)
	st.log = log
	return st, f, start, failing, failed, logs
}

// TestStageRetriesWithoutIntake: a message whose commit failed is appended
// again while no other message arrives (a source gone quiet); once the
// disk recovers it reaches the pipeline, and each state change is logged
// once.
func TestStageRetriesWithoutIntake(t *testing.T) {
	st, f, start, failing, failed, logs := failingCommits(t)
	start()
	intake(t, st, 0, 1) // queued; its commit fails
	// Appended again with no further Intake: the commits keep failing.
	waitfor.Until(t, "m-0 appended again without a further Intake", 30*time.Second, func() bool { return failed.Load() >= 2 },
		func() string { return fmt.Sprintf("%d failed commits", failed.Load()) })
	failing.Store(false)
	keys, msgs := f.wait(t, 1)
	inOrder(t, keys, msgs, 0)
	waitfor.Until(t, "the recovery logged", 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "spool writes succeed again")
	})
	for _, line := range []string{"spool writes failing", "spool writes succeed again"} {
		if n := strings.Count(logs.String(), line); n != 1 {
			t.Errorf("%d log lines %q, want 1:\n%s", n, line, logs.String())
		}
	}
	intake(t, st, 1, 2)
	keys, msgs = f.wait(t, 2)
	inOrder(t, keys, msgs, 0)
	if len(msgs) != 2 {
		t.Errorf("the pipeline got %d messages, want 2", len(msgs))
	}
}

// outcomes records how deliveries were settled.
type outcomes struct {
	mu sync.Mutex
	m  map[string]bridge.Outcome
}

func (o *outcomes) Settle(d *bridge.Delivery, out bridge.Outcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m[d.MessageID] = out
}

// TestStageTakesADeliveryHandedOverAsIntakeStops: a source hands the stage
// a delivery it read just before a stop, with its context already done.
// The spool has room, so the stage takes it in its turn, settles it
// upstream and forwards it, as the pipeline's Handle does. It refused it
// (context canceled): the bridge's keeper then wrote it to the spool at
// shutdown, after the deliveries the source handed over behind it under
// its own context (app TestShutdownCountsWhatTheSpoolHolds under load:
// kept_in_spool=1).
func TestStageTakesADeliveryHandedOverAsIntakeStops(t *testing.T) {
	s := open(t, Options{})
	st, f := feed(t, s, nil)
	settled := &outcomes{m: map[string]bridge.Outcome{}}
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Intake(stopped, bridge.NewDelivery(msg(0), settled, nil)); err != nil {
		t.Fatalf("Intake with room in the spool and its context done: %v", err)
	}
	intake(t, st, 1, 2) // the next one, handed over under the source's own context
	keys, msgs := f.wait(t, 2)
	inOrder(t, keys, msgs, 0)
	settled.mu.Lock()
	defer settled.mu.Unlock()
	if got, ok := settled.m["m-0"]; !ok || got != bridge.Accepted {
		t.Errorf("m-0 settled upstream %v (%v), want Accepted once it is in the spool", got, ok)
	}
}

// TestStageCloseKeepsWhatFailedToCommit: a shutdown while the commits still
// fail (the retries going on) hands back the message no upstream would
// send again (STOMP ack auto) for the bridge to keep, and releases the one
// the platform redelivers; neither reached the pipeline, and no retry is
// left scheduled.
func TestStageCloseKeepsWhatFailedToCommit(t *testing.T) {
	st, f, start, _, failed, _ := failingCommits(t)
	start()
	settled := &outcomes{m: map[string]bridge.Outcome{}}
	// m-0 as with ack auto: no upstream sends it again.
	if err := st.Intake(context.Background(), bridge.NewDelivery(msg(0), nil, nil)); err != nil {
		t.Fatal(err)
	}
	// m-1, redeliverable, queued as Intake does (a further Intake waits
	// while the commits fail).
	m1 := msg(1)
	if err := st.sp.Append(context.Background(), &m1, st.committed(bridge.NewDelivery(m1, settled, nil))); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, "both appended again after their failed commits", 30*time.Second, func() bool { return failed.Load() >= 3 },
		func() string { return fmt.Sprintf("%d failed commits", failed.Load()) })
	keep := st.Close()
	if len(keep) != 1 || keep[0].MessageID != "m-0" {
		t.Fatalf("Close kept %d messages, want m-0", len(keep))
	}
	settled.mu.Lock()
	got, ok := settled.m["m-1"]
	settled.mu.Unlock()
	if !ok || got != bridge.Released {
		t.Errorf("m-1 settled %v (%v), want Released", got, ok)
	}
	st.mu.Lock()
	retrying, held := st.retry, len(st.failed)
	st.mu.Unlock()
	if retrying || held != 0 {
		t.Errorf("after Close: a retry scheduled %v, %d messages held", retrying, held)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.msgs) != 0 {
		t.Errorf("the pipeline got %d messages, want none", len(f.msgs))
	}
}

// TestStageStopsRetryingOnceTheSpoolIsClosed: once the spool is closed
// under a Stage whose commits failed, the retries end (they would find it
// closed every retryWait for ever); Close still hands the message back.
func TestStageStopsRetryingOnceTheSpoolIsClosed(t *testing.T) {
	st, _, _, _, failed, _ := failingCommits(t)
	if err := st.Intake(context.Background(), bridge.NewDelivery(msg(0), nil, nil)); err != nil {
		t.Fatal(err)
	}
	waitfor.Until(t, "m-0 appended again after its failed commit", 30*time.Second, func() bool { return failed.Load() >= 2 })
	st.sp.Close() // its last commit failed: the error says so
	waitfor.Until(t, "the retries to end with m-0 held", 30*time.Second, func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return !st.retry && len(st.failed) == 1
	})
	if keep := st.Close(); len(keep) != 1 || keep[0].MessageID != "m-0" {
		t.Fatalf("Close kept %d messages, want m-0", len(keep))
	}
}

// heldPipeline is a stage's pipeline that takes one message when the test
// sends on release (all of them once it is closed): until then the spool
// keeps them. The test closes done when it ends (a deferred close: it runs
// before the feeder's stop, which waits for the pipeline).
func heldPipeline() (handle func(*bridge.Delivery) error, release, done chan struct{}) {
	release, done = make(chan struct{}), make(chan struct{})
	return func(*bridge.Delivery) error {
		select {
		case <-release:
		case <-done:
		}
		return nil
	}, release, done
}

// intakeWaitsForRoom reports whether an Intake is waiting for room: the
// spool refused its message and it sleeps before trying again.
func intakeWaitsForRoom() bool {
	buf := make([]byte, 1<<20)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "spool.(*Stage).Intake(") && strings.Contains(g, "spool.sleep(") && !strings.Contains(g, "waitFailed") {
			return true
		}
	}
	return false
}

// linesWith counts the lines of log that contain s.
func linesWith(log, s string) int {
	n := 0
	for line := range strings.SplitSeq(log, "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// oneSize is what one of the messages msg(100) to msg(999) counts against
// MaxBytes.
func oneSize() int64 { return int64(len(encode(ptr(msg(100)))) + keyLen) }

// TestStageLogsAFullSpoolOncePerEpisode: near the bound of a full spool
// that MNS drains slowly, Intake finds room for one message now and then.
// That is one episode, logged once ("spool full", with max_bytes), and the
// room again once, when the spool holds 90% or less. Before, each refusal
// after a message that found room logged "spool full" again and "spool has
// room again; consuming" in between (up to every 200 ms), beside the
// spool's own line.
func TestStageLogsAFullSpoolOncePerEpisode(t *testing.T) {
	handle, release, done := heldPipeline()
	defer close(done)
	st, f, start, failing, _, logs := failingCommitsIn(t, Options{MaxBytes: 20 * oneSize(), Logger: slog.Default()}, handle)
	failing.Store(false)
	start()
	intake(t, st, 100, 120) // 20 messages: the spool is full
	for k := range 3 {
		returned := make(chan error, 1)
		go func() { returned <- st.Intake(context.Background(), bridge.NewDelivery(msg(120+k), nopSettler{}, nil)) }()
		waitfor.Until(t, fmt.Sprintf("message %d refused by the full spool", 120+k), 30*time.Second, intakeWaitsForRoom)
		release <- struct{}{} // MNS takes one message: room for one
		select {
		case err := <-returned:
			if err != nil {
				t.Fatalf("Intake %d: %v", 120+k, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Intake %d still waits after MNS took a message", 120+k)
		}
	}
	for _, c := range []struct {
		line string
		n    int
	}{{"spool full", 1}, {"max_bytes", 1}, {"room again", 0},
		// Each Intake above returned as soon as MNS took one message: the
		// line says so, not that consuming waits for 90%.
		{"then only as fast as MNS takes them", 1}} {
		if n := linesWith(logs.String(), c.line); n != c.n {
			t.Errorf("%d lines with %q after 3 refusals near the bound, want %d:\n%s", n, c.line, c.n, logs.String())
		}
	}
	close(release) // MNS takes them all
	f.wait(t, 23)
	waitDepth(t, st.sp, 0)
	intake(t, st, 123, 124)
	if n := linesWith(logs.String(), "spool has room again; consuming"); n != 1 {
		t.Errorf("%d lines of room again once the spool is empty, want 1:\n%s", n, logs.String())
	}
	keys, msgs := f.wait(t, 24)
	inOrder(t, keys, msgs, 100)
}

// TestStageRetryLogsTheFullSpool: messages whose commit failed are appended
// again by the Stage's own retry, with no new message arriving; when it
// finds the spool full, that is logged once and Stats().Full shows it (the
// metric iot_mns_bridge_spool_full). Before, only the spool's own line told
// it, and no metric did: spool_bytes stays below spool_max_bytes.
func TestStageRetryLogsTheFullSpool(t *testing.T) {
	handle, _, done := heldPipeline()
	defer close(done)
	// Room for 20 messages and half of one: the 21st does not fit, while
	// the 20 stay below MaxBytes.
	st, _, start, failing, failed, logs := failingCommitsIn(t, Options{MaxBytes: 20*oneSize() + oneSize()/2, Logger: slog.Default()}, handle)
	failing.Store(false)
	start()
	for i := 100; i < 117; i++ { // 17 messages in the spool
		m := msg(i)
		if err := st.sp.Append(context.Background(), &m, func(uint64, error) {}); err != nil {
			t.Fatal(err)
		}
	}
	st.sp.sync()
	failing.Store(true)
	for i := 117; i < 120; i++ { // queued as Intake does; their commit fails
		m := msg(i)
		if err := st.sp.Append(context.Background(), &m, st.committed(bridge.NewDelivery(m, nopSettler{}, nil))); err != nil {
			t.Fatal(err)
		}
	}
	st.sp.sync()
	st.mu.Lock()
	held := len(st.failed)
	st.mu.Unlock()
	if failed.Load() != 1 || held != 3 {
		t.Fatalf("%d failed commits, %d messages held, want 1 and 3", failed.Load(), held)
	}
	failing.Store(false)
	// Three more while the Stage's retry waits (it starts under st.mu): the
	// spool then has no room for the held ones.
	st.mu.Lock()
	for i := 120; i < 123; i++ {
		m := msg(i)
		if err := st.sp.Append(context.Background(), &m, func(uint64, error) {}); err != nil {
			st.mu.Unlock()
			t.Fatal(err)
		}
	}
	st.sp.sync()
	st.mu.Unlock()
	waitfor.Until(t, "the retry to find the spool full", 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "spool full")
	})
	if !st.sp.Stats().Full || st.sp.Stats().Bytes >= st.sp.Stats().MaxBytes {
		t.Errorf("Stats() = %+v, want Full (and Bytes below MaxBytes: a message is refused when it does not fit)", st.sp.Stats())
	}
	if n := linesWith(logs.String(), "spool full"); n != 1 {
		t.Errorf("%d lines of spool full, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "; consuming") {
		t.Errorf("the log says the Stage consumes while the retry finds the spool full:\n%s", logs.String())
	}
	st.Close()
}

// TestStageCommitsWhatFitsOnAFullDisk: the source hands over more at once
// than the disk has room for in one commit (a socket's buffer read after a
// pause: a commit takes up to maxPending bytes), on a disk where smaller
// commits fit. The spool stores them in parts and every message reaches
// the pipeline once, in order. It retried the whole commit for ever, held
// the messages in memory and took no more, though it was empty (walked on
// a 2 MiB tmpfs: 1,837 messages held, the source paused, /readyz ready).
func TestStageCommitsWhatFitsOnAFullDisk(t *testing.T) {
	// The file may not grow past 1 MiB; the first commit takes what the
	// Intakes queue within its linger, up to maxPending (2 MiB): more than
	// the file may ever hold.
	s := open(t, Options{maxFileSize: 1 << 20, CommitInterval: 500 * time.Millisecond})
	st, f := feed(t, s, nil)
	const n = 2000 // 1,000-byte bodies: about 2.2 MB
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for i := range n {
			m := msg(i)
			m.Body = append(m.Body, strings.Repeat("x", 1000-len(m.Body))...)
			if err := st.Intake(ctx, bridge.NewDelivery(m, nopSettler{}, nil)); err != nil {
				return // the test ended
			}
		}
	}()
	keys, msgs := f.wait(t, n)
	for i, m := range msgs {
		if want := fmt.Sprintf("m-%d", i); m.MessageID != want {
			t.Fatalf("message %d forwarded is %q, want %s", i, m.MessageID, want)
		}
		if i > 0 && keys[i] <= keys[i-1] {
			t.Fatalf("key %d forwarded after key %d", keys[i], keys[i-1])
		}
	}
	if len(msgs) != n {
		t.Errorf("the pipeline got %d messages, want %d", len(msgs), n)
	}
}

// TestStatsSayWhileCommitsFail: while the spool's commits fail, Stats
// carries the error (status shows it: the source is paused and the
// messages are held in memory), and nothing once a commit succeeds. The
// log said it once, while status showed the spool '0.1% full' and /status
// 'full: false' (walked on a full disk).
func TestStatsSayWhileCommitsFail(t *testing.T) {
	st, f, start, failing, _, _ := failingCommits(t)
	start()
	intake(t, st, 0, 1) // queued; its commit fails
	waitfor.Until(t, "Stats to carry the failed commit's error", 30*time.Second, func() bool {
		return strings.Contains(st.sp.Stats().CommitError, syscall.EIO.Error())
	}, func() string { return fmt.Sprintf("Stats().CommitError %q", st.sp.Stats().CommitError) })
	failing.Store(false)
	f.wait(t, 1)
	if e := st.sp.Stats().CommitError; e != "" {
		t.Errorf("Stats().CommitError %q after a commit succeeded, want none", e)
	}
}

// roomFor is a disk with room for so many messages (the spool's
// commitHook): a transaction that stores more Appends than there is room
// for fails with ENOSPC. refused counts the refusals since the last
// transaction that stored Appends.
type roomFor struct {
	mu            sync.Mutex
	room, refused int
}

func (d *roomFor) hook(appends int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if appends > d.room {
		d.refused++
		return syscall.ENOSPC
	}
	if appends > 0 {
		d.room -= appends
		d.refused = 0
	}
	return nil
}

func (d *roomFor) set(room int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.room, d.refused = room, 0
}

// partlyStored is whether the room set last was taken and a transaction
// was refused after it: a commit stored what fitted and not the rest.
func (d *roomFor) partlyStored() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.room == 0 && d.refused > 0
}

// TestStageLogsAFullDiskOncePerEpisode: near a full disk, the commits of
// the held messages store what fits (2074432) and not the rest. That is
// one episode: one "spool writes failing" line (and one of the spool's
// own) while the disk stays full, the source paused and Stats'
// CommitError set throughout; one "succeed again" (and one "commits work
// again") once a whole commit fits. Before, each commit that stored part
// of its messages logged "succeed again" for the part stored and
// "failing" for the rest, and let the source's Intake through between.
func TestStageLogsAFullDiskOncePerEpisode(t *testing.T) {
	disk := &roomFor{}
	logs := new(syncbuf.Buffer)
	log := slog.New(slog.NewTextHandler(logs, nil))
	s := open(t, Options{CommitInterval: 50 * time.Millisecond, Logger: log, commitHook: disk.hook})
	st, f, start := stage(t, s, nil)
	st.log = log
	start()
	for i := range 4 { // queued together; their commit fails: no room
		m := msg(i)
		if err := s.Append(context.Background(), &m, st.committed(bridge.NewDelivery(m, nopSettler{}, nil))); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.Until(t, "the commit without room to fail", 30*time.Second, func() bool {
		return strings.Contains(logs.String(), "spool writes failing")
	})
	w := startIntake(st, 4)
	for i := range 3 { // MNS takes one message: room for one
		disk.set(1)
		waitfor.Until(t, fmt.Sprintf("commit %d to store one message and not the others", i+1), 30*time.Second, disk.partlyStored)
		f.wait(t, i+1)
		if e := s.Stats().CommitError; !strings.Contains(e, syscall.ENOSPC.Error()) {
			t.Errorf("Stats().CommitError %q after commit %d stored part of its messages, want the ENOSPC", e, i+1)
		}
		w.stillWaits(t, "while the disk is full")
	}
	disk.set(1 << 20) // room again
	w.returnsThenAllForwarded(t, st, f, "once a whole commit fits")
	if e := s.Stats().CommitError; e != "" {
		t.Errorf("Stats().CommitError %q once whole commits fit, want none", e)
	}
	for _, line := range []string{"spool writes failing", "spool writes succeed again", "spool commit failed", "spool commits work again"} {
		if n := linesWith(logs.String(), line); n != 1 {
			t.Errorf("%d log lines %q, want 1:\n%s", n, line, logs.String())
		}
	}
}
