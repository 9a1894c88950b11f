package source

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

const waitLimit = 10 * time.Second // only a hang guard, never a pass/fail threshold

// fakeLink is a Link fed by the test.
type fakeLink struct {
	id      string
	owned   bool
	lost    chan struct{}
	msgs    chan *bridge.Delivery // Next returns these
	fail    chan error            // Next returns this error
	stopped chan struct{}         // closed by Stop
	// after Stop, an owned link returns these, then errors
	buffered []*bridge.Delivery
	// boundRead: like stompsrc's ack-auto link, Stop also bounds the
	// hand-over's reads: HandOverTimeout after Stop the connection is
	// closed and Next fails.
	boundRead bool
	readEnd   bool

	// stopGate, when set (by the dialer), holds Stop until it is closed: a
	// Stop that runs late (its AfterFunc goroutine not yet scheduled).
	// stopEntered is signalled as Stop starts to wait; Close records in
	// closedInStop that it came while Stop was under way.
	stopGate, stopEntered chan struct{}

	mu           sync.Mutex
	aborted      bool
	closed       bool
	stopping     bool
	closedInStop bool
	settled      []string // "accept:<id>", "release:<id>"
	stopOnce     sync.Once
}

func newFakeLink(id string, owned bool) *fakeLink {
	return &fakeLink{id: id, owned: owned, lost: make(chan struct{}), msgs: make(chan *bridge.Delivery),
		fail: make(chan error, 1), stopped: make(chan struct{})}
}

func (l *fakeLink) Next(ctx context.Context) (*bridge.Delivery, error) {
	select {
	case <-l.stopped:
		if !l.owned {
			return nil, errors.New("stopped")
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.readEnd {
			return nil, errors.New("connection closed HandOverTimeout after Stop")
		}
		if len(l.buffered) == 0 {
			return nil, errors.New("receipt")
		}
		d := l.buffered[0]
		l.buffered = l.buffered[1:]
		return d, nil
	default:
	}
	select {
	case d := <-l.msgs:
		return d, nil
	case err := <-l.fail:
		return nil, err
	case <-l.lost:
		return nil, errors.New("connection lost")
	case <-l.stopped:
		return l.Next(ctx)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *fakeLink) Owned() bool           { return l.owned }
func (l *fakeLink) Lost() <-chan struct{} { return l.lost }
func (l *fakeLink) Stop() {
	if l.stopGate != nil {
		l.mu.Lock()
		l.stopping = true
		l.mu.Unlock()
		l.stopEntered <- struct{}{}
		<-l.stopGate
		defer func() {
			l.mu.Lock()
			l.stopping = false
			l.mu.Unlock()
		}()
	}
	l.stopOnce.Do(func() {
		close(l.stopped)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.boundRead {
			time.AfterFunc(HandOverTimeout, func() { l.mu.Lock(); l.readEnd = true; l.mu.Unlock() })
		}
	})
}

func (l *fakeLink) Abort(cause error) error {
	l.mu.Lock()
	l.aborted = true
	l.mu.Unlock()
	if cause == nil {
		cause = errors.New("lost")
	}
	return cause
}

func (l *fakeLink) Close(context.Context) error {
	l.mu.Lock()
	l.closed = true
	l.closedInStop = l.closedInStop || l.stopping
	l.mu.Unlock()
	return nil
}

func (l *fakeLink) Settle(d *bridge.Delivery, o bridge.Outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.settled = append(l.settled, strings.ToLower(o.String())+":"+d.MessageID)
}

func (l *fakeLink) state() (aborted, closed bool, settled []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.aborted, l.closed, append([]string(nil), l.settled...)
}

func (l *fakeLink) delivery(id string) *bridge.Delivery {
	return bridge.NewDelivery(bridge.Message{MessageID: id, Topic: "/a/b/c"}, l, nil)
}

// fakeDialer dials fake links, or fails with err.
type fakeDialer struct {
	owned  bool
	dialed chan *fakeLink
	// stopGate and stopEntered are given to every link (see fakeLink).
	stopGate, stopEntered chan struct{}

	mu    sync.Mutex
	err   error
	dials int
}

func (f *fakeDialer) dial(_ context.Context, _ int, id string) (Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials++
	if f.err != nil {
		return nil, f.err
	}
	l := newFakeLink(id, f.owned)
	l.stopGate, l.stopEntered = f.stopGate, f.stopEntered
	f.dialed <- l
	return l, nil
}

func (f *fakeDialer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials
}

func testDriver(t *testing.T, owned bool, conns int) (*Driver, *fakeDialer) {
	t.Helper()
	f := &fakeDialer{owned: owned, dialed: make(chan *fakeLink, 16)}
	d, err := New(Config{Protocol: "fake", ClientID: "gw", Connections: conns, MinBackoff: time.Millisecond,
		MaxBackoff: 2 * time.Millisecond, Limiter: NewAttemptLimiter(1000, time.Minute), Logger: slog.New(slog.DiscardHandler)}, f.dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d, f
}

// recv takes the next value of ch; it fails t, saying what did not
// happen, after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatal(what)
		var zero T
		return zero
	}
}

// next is the next link dialled.
func next(t *testing.T, ch chan *fakeLink) *fakeLink {
	t.Helper()
	return recv(t, ch, "no dial")
}

func runDriver(d *Driver, ctx context.Context, h bridge.Handler) chan error {
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx, h) }()
	return errc
}

// wait is Run's result.
func wait(t *testing.T, errc chan error) error {
	t.Helper()
	return recv(t, errc, "Run did not return")
}

// A delivery the pipeline refuses while intake runs is released and Run
// fails for good: the same for every protocol (STOMP stopped, AMQP
// redialled).
func TestRefusedDeliveryIsReleasedAndFatal(t *testing.T) {
	for _, owned := range []bool{true, false} {
		d, f := testDriver(t, owned, 1)
		errc := runDriver(d, context.Background(), func(context.Context, *bridge.Delivery) error {
			return errors.New("pipeline is shutting down")
		})
		l := next(t, f.dialed)
		l.msgs <- l.delivery("m1")
		err := wait(t, errc)
		if !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "the pipeline refused a delivery") {
			t.Fatalf("owned %v: Run = %v, want a fatal refusal", owned, err)
		}
		if _, _, settled := l.state(); len(settled) != 1 || settled[0] != "released:m1" {
			t.Errorf("owned %v: settled %v, want the refused delivery released", owned, settled)
		}
		if f.count() != 1 {
			t.Errorf("owned %v: %d dials, want 1: a refusal is not redialled", owned, f.count())
		}
	}
}

// A dial error wrapping ErrFatal (invalid signing inputs) stops Run; any
// other is redialled.
func TestDialErrorsFatalOrRedialled(t *testing.T) {
	d, f := testDriver(t, false, 1)
	f.err = errors.New("connection refused")
	errc := runDriver(d, context.Background(), func(context.Context, *bridge.Delivery) error { return nil })
	deadline := time.Now().Add(waitLimit)
	for f.count() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if f.count() < 3 {
		t.Fatalf("%d dials: a transient failure was not redialled", f.count())
	}
	f.mu.Lock()
	f.err = errors.Join(ErrFatal, errors.New("sign the login: consumerGroupId"))
	f.mu.Unlock()
	if err := wait(t, errc); !errors.Is(err, ErrFatal) || !strings.Contains(err.Error(), "consumerGroupId") {
		t.Fatalf("Run = %v, want the fatal dial error", err)
	}
}

// A lost connection cancels the handler's context only when the platform
// sends the delivery again; an owned delivery is never given up.
func TestLossCancelsTheHandlerOnlyForRedeliveredDeliveries(t *testing.T) {
	for _, owned := range []bool{false, true} {
		d, f := testDriver(t, owned, 1)
		entered, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
		release := make(chan struct{})
		errc := runDriver(d, context.Background(), func(ctx context.Context, dl *bridge.Delivery) error {
			entered <- struct{}{}
			select {
			case <-ctx.Done():
				cancelled <- struct{}{}
				return ctx.Err()
			case <-release:
				dl.Accept()
				return nil
			}
		})
		l := next(t, f.dialed)
		l.msgs <- l.delivery("m1")
		<-entered
		close(l.lost)
		if owned {
			close(release)
		}
		l2 := next(t, f.dialed)
		aborted, _, settled := l.state()
		if !aborted {
			t.Errorf("owned %v: the lost link was not aborted", owned)
		}
		select {
		case <-cancelled:
			if owned {
				t.Errorf("the handler of an owned delivery was cancelled")
			}
			if len(settled) != 1 || settled[0] != "released:m1" {
				t.Errorf("settled %v, want m1 released", settled)
			}
		default:
			if !owned {
				t.Errorf("the handler was not cancelled when the connection was lost")
			}
			if len(settled) != 1 || settled[0] != "accepted:m1" {
				t.Errorf("owned: settled %v, want m1 accepted by the handler", settled)
			}
		}
		_ = l2
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		if err := d.Close(ctx); err != nil {
			t.Error(err)
		}
		cancel()
		if err := wait(t, errc); err != nil {
			t.Errorf("Run = %v", err)
		}
	}
}

// When intake stops, an owned link hands over what it had received (the
// delivery the handler gave back too) and is closed; any other link stays
// open for the settles in flight and gives back the refused delivery.
func TestStopHandsOverOwnedAndKeepsOthersForSettles(t *testing.T) {
	for _, owned := range []bool{true, false} {
		d, f := testDriver(t, owned, 1)
		ctx, cancel := context.WithCancel(context.Background())
		// The first call meets a full pipeline when intake stops.
		first, h, handed := blockingHandler(func(call int, _ *bridge.Delivery) bool { return call == 0 })
		errc := runDriver(d, ctx, h)
		l := next(t, f.dialed)
		l.buffered = []*bridge.Delivery{l.delivery("m2"), l.delivery("m3")}
		l.msgs <- l.delivery("m1")
		<-first
		cancel()
		if err := wait(t, errc); err != nil {
			t.Fatalf("owned %v: Run = %v", owned, err)
		}
		aborted, closed, settled := l.state()
		gotNow := handed()
		if owned {
			if gotNow != "m1,m2,m3" || !aborted {
				t.Errorf("owned: handed over %q (aborted %v), want m1,m2,m3 and the link closed", gotNow, aborted)
			}
			continue
		}
		if gotNow != "" || aborted || closed {
			t.Errorf("handed %q, aborted %v, closed %v: want nothing handed and the link kept open", gotNow, aborted, closed)
		}
		if len(settled) != 1 || settled[0] != "released:m1" {
			t.Errorf("settled %v, want the refused m1 released", settled)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), waitLimit)
		if err := d.Close(cctx); err != nil {
			t.Error(err)
		}
		ccancel()
		if _, closed, _ := l.state(); !closed {
			t.Error("Close did not close the link kept for settles")
		}
	}
}

// TestRunWaitsForALateStop: when intake stops, the link's Stop runs from a
// goroutine of its own (context.AfterFunc), which may be scheduled only
// after Next returned for its own reason. Run returns only once that Stop has
// ended, so that Close never closes the link while Stop still works on it
// (stompsrc's Stop moves the read deadline to now: landing in Close's wait
// for the RECEIPT, it would cut that wait short).
func TestRunWaitsForALateStop(t *testing.T) {
	d, f := testDriver(t, false, 1)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	f.stopGate, f.stopEntered = gate, entered
	release := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(release) // before testDriver's Close, when the test failed
	ctx, cancel := context.WithCancel(context.Background())
	errc := runDriver(d, ctx, func(context.Context, *bridge.Delivery) error { return nil })
	l := next(t, f.dialed)
	cancel() // Next returns on ctx; Stop is held
	recv(t, entered, "Stop was not called")
	closed := make(chan error, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(context.Background(), waitLimit)
		defer ccancel()
		closed <- d.Close(cctx)
	}()
	select {
	case err := <-errc:
		t.Errorf("Run returned (%v) while the link's Stop was still under way", err)
	case <-time.After(10 * time.Millisecond):
		// Run waits for Stop (the test passes without this pause too; it
		// only gives a wrong Run the time to show).
	}
	release()
	if err := recv(t, closed, "Close did not return"); err != nil {
		t.Error(err)
	}
	l.mu.Lock()
	closed2, inStop := l.closed, l.closedInStop
	l.mu.Unlock()
	if !closed2 || inStop {
		t.Errorf("link closed %v, closed while Stop was under way %v: want closed after Stop", closed2, inStop)
	}
}

// TestHandOverReadsPastABlockedHandler: at shutdown a STOMP ack-auto link
// reads what the server had sent until HandOverTimeout after Stop, then
// closes the connection. A handler blocked by a full spool or pipeline gave
// up only at the same deadline, so nothing after the first delivery was
// read and the rest (messages the platform will not send again) was lost
// without a word: the sentinel's walk (spool.max_bytes full, MNS down,
// SIGTERM) lost 653 of 3,000 on 0038f59. The handler now gives up at half
// of it, and what it is still given is read before the connection closes
// (the bridge's Keeper keeps what the handler refuses at shutdown).
func TestHandOverReadsPastABlockedHandler(t *testing.T) {
	d, f := testDriver(t, true, 1)
	ctx, cancel := context.WithCancel(context.Background())
	// The spool is full and MNS down: no room for m1 before the deadline,
	// neither while intake runs nor in the hand-over.
	first, h, handed := blockingHandler(func(_ int, dl *bridge.Delivery) bool { return dl.MessageID == "m1" })
	errc := runDriver(d, ctx, h)
	l := next(t, f.dialed)
	l.mu.Lock()
	l.boundRead = true
	l.buffered = []*bridge.Delivery{l.delivery("m2"), l.delivery("m3")}
	l.mu.Unlock()
	l.msgs <- l.delivery("m1")
	<-first
	cancel()
	if err := wait(t, errc); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := handed(); got != "m2,m3" {
		t.Errorf("handed over after the blocked m1: %q, want m2,m3 (read before the link's bound closed the connection)", got)
	}
}

// blockingHandler returns a handler that, for the calls blocks picks
// (call counts from 0), waits until its context ends and returns its
// error (a full pipeline or spool), closing first at the first of them,
// and takes every other delivery; handed lists the ids taken, in order.
func blockingHandler(blocks func(call int, dl *bridge.Delivery) bool) (first chan struct{}, h bridge.Handler, handed func() string) {
	first = make(chan struct{})
	var mu sync.Mutex
	var got []string
	calls, blocked := 0, false
	h = func(hctx context.Context, dl *bridge.Delivery) error {
		mu.Lock()
		call := calls
		calls++
		block := blocks(call, dl)
		if block && !blocked {
			blocked = true
			close(first)
		}
		if !block {
			got = append(got, dl.MessageID)
		}
		mu.Unlock()
		if block {
			<-hctx.Done()
			return hctx.Err()
		}
		return nil
	}
	handed = func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(got, ",")
	}
	return first, h, handed
}

func TestRunAfterCloseAndTwice(t *testing.T) {
	d, _ := testDriver(t, false, 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

func TestClientIDs(t *testing.T) {
	tests := []struct {
		n, i int
		want string
	}{{1, 0, "gw"}, {2, 0, "gw-0"}, {2, 1, "gw-1"}, {64, 63, "gw-63"}}
	for _, tt := range tests {
		if got := ClientIDs("gw", tt.n)[tt.i]; got != tt.want {
			t.Errorf("N=%d i=%d: %q, want %q", tt.n, tt.i, got, tt.want)
		}
	}
	if got := CheckClientID("edge-1"); got != "edge-1-check" {
		t.Errorf("CheckClientID = %q", got)
	}
	long := strings.Repeat("é", iotauth.MaxClientIDLen)
	if got := CheckClientID(long); len([]rune(got)) != iotauth.MaxClientIDLen || !strings.HasSuffix(got, CheckSuffix) {
		t.Errorf("CheckClientID of %d characters = %d characters %q", iotauth.MaxClientIDLen, len([]rune(got)), got)
	}
}

func TestNewChecksItsConfig(t *testing.T) {
	_, err := New(Config{}, nil)
	errtext.Want(t, "New(Config{})", err, []string{"Protocol", "Connections", "MinBackoff", "Limiter", "Logger"})
}
