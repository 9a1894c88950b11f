package amqpsrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source/sourcetest"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/amqp10"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/testpeers"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/waitfor"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// fakeConn is a connection fed by the test.
type fakeConn struct {
	slot    int
	id      string
	msgs    chan *amqp10.Delivery
	linkErr chan error // Receive returns what is sent here (a detach)
	done    chan struct{}
	// drain is returned by Receive before anything else, even after the
	// connection died, as go-amqp does with prefetched messages.
	drain *amqp10.Delivery

	creditCh chan struct{} // signalled when credit is issued
	// exit, when set (before the dial), holds Receive after its ctx ended
	// until exit is closed: the slot's goroutine, and so Run, is then
	// still at work. reading is signalled as Receive starts to wait,
	// exiting as it is held.
	exit, reading, exiting chan struct{}

	mu      sync.Mutex
	credit  int // messages the source may still be sent
	issued  int // credit issued in total
	err     error
	closed  bool
	aborted bool // dropped at the socket, without the close handshake
	// gate, when set (before the first settlement), holds every
	// settlement until a value is received from it; entered is signalled
	// as each one starts waiting.
	gate, entered chan struct{}
	settleErr     error
	flushErr      error
	holds         int
	flushes       int
	held          bool // between Hold and Flush
	heldCredit    int  // credit issued while held: in the round's write
	grants        []grantSeen
	accepted      []*amqp10.Delivery
	released      []*amqp10.Delivery
	killOnce      sync.Once
}

func newFakeConn(slot int, id string) *fakeConn {
	return &fakeConn{slot: slot, id: id, msgs: make(chan *amqp10.Delivery), linkErr: make(chan error, 1),
		done: make(chan struct{}), creditCh: make(chan struct{}, 1)}
}

func (c *fakeConn) Receive(ctx context.Context) (*amqp10.Delivery, error) {
	if m := c.drain; m != nil {
		c.drain = nil
		return m, nil
	}
	for {
		var msgs chan *amqp10.Delivery // nil (never ready) without credit
		c.mu.Lock()
		if c.credit > 0 {
			msgs = c.msgs
		}
		c.mu.Unlock()
		if c.reading != nil {
			select {
			case c.reading <- struct{}{}:
			default:
			}
		}
		select {
		case m := <-msgs:
			c.mu.Lock()
			c.credit--
			c.mu.Unlock()
			return m, nil
		case <-c.creditCh:
		case err := <-c.linkErr:
			return nil, err
		case <-c.done:
			return nil, &amqp10.ConnError{}
		case <-ctx.Done():
			if c.exit != nil {
				c.exiting <- struct{}{}
				<-c.exit
			}
			return nil, ctx.Err()
		}
	}
}

// grantSeen is one IssueCredit as the connection saw it.
type grantSeen struct {
	n        int
	held     bool // within a round: in the write of its settlements
	accepted int  // accepts written by then (with the round's)
}

func (c *fakeConn) IssueCredit(n uint32) error {
	c.mu.Lock()
	c.credit += int(n)
	c.issued += int(n)
	if c.held {
		c.heldCredit += int(n)
	}
	c.grants = append(c.grants, grantSeen{n: int(n), held: c.held, accepted: len(c.accepted)})
	c.mu.Unlock()
	select {
	case c.creditCh <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) creditState() (credit, issued int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.credit, c.issued
}

func (c *fakeConn) settle(m *amqp10.Delivery, to *[]*amqp10.Delivery) error {
	if c.gate != nil {
		c.entered <- struct{}{}
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return &amqp10.ConnError{}
	}
	if c.settleErr != nil {
		return c.settleErr
	}
	*to = append(*to, m)
	return nil
}

// Hold and Flush count the settler's rounds; Flush fails with flushErr.
// failSettles has every settlement from now on fail with err.
func (c *fakeConn) failSettles(err error) {
	c.mu.Lock()
	c.settleErr = err
	c.mu.Unlock()
}

func (c *fakeConn) Hold() {
	c.mu.Lock()
	c.holds++
	c.held = true
	c.mu.Unlock()
}

func (c *fakeConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushes++
	c.held = false
	return c.flushErr
}

func (c *fakeConn) Accept(_ context.Context, m *amqp10.Delivery) error {
	return c.settle(m, &c.accepted)
}
func (c *fakeConn) Release(_ context.Context, m *amqp10.Delivery) error {
	return c.settle(m, &c.released)
}
func (c *fakeConn) Done() <-chan struct{} { return c.done }

func (c *fakeConn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// kill ends the connection as the peer or the network would.
func (c *fakeConn) kill(err error) {
	c.killOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.closed = true
		c.mu.Unlock()
		close(c.done)
	})
}

func (c *fakeConn) Close(context.Context) error {
	c.kill(nil)
	return nil
}

func (c *fakeConn) ReleasedAtClose() int { return 0 }

func (c *fakeConn) Abort() {
	c.mu.Lock()
	c.aborted = true
	c.mu.Unlock()
	c.kill(nil)
}

func (c *fakeConn) wasAborted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.aborted
}

func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *fakeConn) rounds() (holds, flushes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.holds, c.flushes
}

func (c *fakeConn) counts() (accepted, released int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.accepted), len(c.released)
}

// fakeDialer hands out fake connections and checks that a slot never has
// two open at once.
type fakeDialer struct {
	dialed chan *fakeConn

	mu         sync.Mutex
	open       map[int]*fakeConn
	violations int
	err        error
	prep       func(*fakeConn) // run on each new connection before it is returned
}

func newFakeDialer() *fakeDialer {
	return &fakeDialer{dialed: make(chan *fakeConn, 16), open: map[int]*fakeConn{}}
}

func (d *fakeDialer) dial(ctx context.Context, slot int, id string) (connection, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return nil, d.err
	}
	if prev := d.open[slot]; prev != nil && !prev.isClosed() {
		d.violations++
	}
	c := newFakeConn(slot, id)
	if d.prep != nil {
		d.prep(c)
	}
	d.open[slot] = c
	d.dialed <- c
	return c, nil
}

func (d *fakeDialer) twoAtOnce() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.violations
}

// harness runs a Source over a fakeDialer and collects deliveries.
type harness struct {
	t      *testing.T
	src    *Source
	dialer *fakeDialer
	logs   *syncBuffer
	run    *sourcetest.Running
}

// syncBuffer collects log output from many goroutines.
type syncBuffer = testpeers.SyncBuffer

func newHarness(t *testing.T, cfg Config, h bridge.Handler, prep func(*fakeConn)) *harness {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Endpoint = "fake.invalid:5671"
	cfg.Params = testParams
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 2*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := New(filled(cfg))
	if err != nil {
		t.Fatal(err)
	}
	hs := &harness{t: t, src: src, dialer: newFakeDialer(), logs: logs}
	src.dial = hs.dialer.dial
	if prep != nil {
		hs.dialer.prep = prep
	}
	t.Cleanup(func() { // after the source is closed (sourcetest.Start)
		if n := hs.dialer.twoAtOnce(); n != 0 {
			t.Errorf("a slot had two connections open at once %d times", n)
		}
		if strings.Contains(logs.String(), testSecret) {
			t.Errorf("logs leak the secret")
		}
	})
	hs.run = sourcetest.Start(t, src, h)
	return hs
}

const waitLimit = 10 * time.Second // only a hang guard, never a pass/fail threshold

func (hs *harness) nextConn() *fakeConn {
	hs.t.Helper()
	select {
	case c := <-hs.dialer.dialed:
		return c
	case <-time.After(waitLimit):
		hs.t.Fatal("no dial")
		return nil
	}
}

// sendAccepted hands n messages to c and accepts each once all came
// through.
func (hs *harness) sendAccepted(c *fakeConn, n int) {
	hs.t.Helper()
	for _, d := range hs.sendN(c, n) {
		d.Accept()
	}
}

// sendN hands n messages to c and returns their deliveries.
func (hs *harness) sendN(c *fakeConn, n int) []*bridge.Delivery {
	hs.t.Helper()
	var ds []*bridge.Delivery
	for i := range n {
		ds = append(ds, hs.send(c, platformMsg(strconv.Itoa(i))))
	}
	return ds
}

// watchGathering has the source report each time a settler starts to let
// settlements linger; the returned wait blocks for the next report (what
// names it in the failure). Call it before the first settlement.
func (hs *harness) watchGathering() (wait func(what string)) {
	gathering := make(chan struct{}, 1)
	hs.src.gathering = func() {
		select {
		case gathering <- struct{}{}:
		default:
		}
	}
	return func(what string) {
		hs.t.Helper()
		select {
		case <-gathering:
		case <-time.After(waitLimit):
			hs.t.Fatalf("the settler did not let %s linger", what)
		}
	}
}

// send hands m to c and returns the delivery the handler got for it.
func (hs *harness) send(c *fakeConn, m *amqp10.Delivery) *bridge.Delivery {
	hs.t.Helper()
	hs.push(c, m)
	return hs.run.Next(hs.t)
}

// push hands m to c: it returns once the source received it.
func (hs *harness) push(c *fakeConn, m *amqp10.Delivery) {
	hs.t.Helper()
	select {
	case c.msgs <- m:
	case <-time.After(waitLimit):
		hs.t.Fatal("the source did not receive")
	}
}

// reconnectsAndSettlesOn waits until the slot is connected again after its
// one reconnect, and checks that c, the new connection, settles a delivery
// of its own.
func (hs *harness) reconnectsAndSettlesOn(c *fakeConn) {
	hs.t.Helper()
	eventually(hs.t, "reconnected", func() bool {
		st := hs.src.ConnStates()[0]
		return st.Connected && st.Reconnects == 1
	})
	d := hs.send(c, platformMsg("on-the-new-connection"))
	d.Accept()
	eventually(hs.t, "the new connection settles its delivery", func() bool { a, _ := c.counts(); return a == 1 })
}

// eventually polls cond until it holds; the limit only guards against hangs.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitfor.Until(t, what, waitLimit, cond)
}

func platformMsg(id string) *amqp10.Delivery {
	return &amqp10.Delivery{Message: amqp10.Message{
		Data: [][]byte{[]byte("body-" + id)},
		ApplicationProperties: amqp10.Map{{Key: "topic", Value: "/pk/dn/user/up"}, {Key: "messageId", Value: id},
			{Key: "generateTime", Value: int64(1700000000000)}},
	}}
}

func TestDeliverAndSettle(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	c := hs.nextConn()
	if c.id != "edge-gw-01" {
		t.Errorf("client id %q, want edge-gw-01", c.id)
	}
	d1 := hs.send(c, platformMsg("1"))
	d2 := hs.send(c, platformMsg("2"))
	if d1.Topic != "/pk/dn/user/up" || d1.MessageID != "1" || string(d1.Body) != "body-1" || d1.GenerateTime != 1700000000000 {
		t.Errorf("delivery %+v does not carry the message", d1.Message)
	}
	if a, r := c.counts(); a != 0 || r != 0 {
		t.Fatalf("settled before the pipeline said so: accepted %d released %d", a, r)
	}
	d1.Accept()
	d2.Release()
	d1.Accept() // a second settle has no effect
	// The link's settler settles in the background; Stats counts a
	// settlement once its disposition is written.
	want := Stats{Received: 2, Accepted: 1, Released: 1}
	eventually(t, "both settled", func() bool { return hs.src.Stats() == want })
	if a, r := c.counts(); a != 1 || r != 1 {
		t.Errorf("accepted %d released %d, want 1 and 1", a, r)
	}
	eventually(t, "slot connected", func() bool { return hs.src.ConnStates()[0].Connected })
}

func TestSettleAfterConnectionLossIsDroppedAndCounted(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	c1 := hs.nextConn()
	d := hs.send(c1, platformMsg("1"))
	c1.kill(&amqp10.ConnError{RemoteErr: &amqp10.Error{Condition: "amqp:connection:forced", Description: "9602"}})
	c2 := hs.nextConn() // redialled by itself
	d.Accept()
	if a, r := c1.counts(); a != 0 || r != 0 {
		t.Errorf("settled on a dead link: accepted %d released %d", a, r)
	}
	if a, _ := c2.counts(); a != 0 {
		t.Errorf("settled on the wrong connection")
	}
	if got := hs.src.Stats(); got.DroppedDeadLink != 1 || got.Accepted != 0 {
		t.Errorf("Stats = %+v, want one dropped, none accepted", got)
	}
	hs.reconnectsAndSettlesOn(c2)
}

func TestSettleErrors(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantDropped int64
		wantFailed  int64
	}{
		{"link detached", &amqp10.LinkError{}, 1, 0},
		{"session ended", &amqp10.SessionError{}, 1, 0},
		{"connection ended", &amqp10.ConnError{}, 1, 0},
		{"timeout on a live link", context.DeadlineExceeded, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t, Config{}, nil, nil)
			c := hs.nextConn()
			d := hs.send(c, platformMsg("1"))
			c.failSettles(tc.err)
			d.Accept()
			eventually(t, "the settlement counted", func() bool {
				got := hs.src.Stats()
				return got.DroppedDeadLink+got.SettleFailed+got.Accepted > 0
			})
			got := hs.src.Stats()
			if got.DroppedDeadLink != tc.wantDropped || got.SettleFailed != tc.wantFailed || got.Accepted != 0 {
				t.Errorf("Stats = %+v, want dropped %d failed %d", got, tc.wantDropped, tc.wantFailed)
			}
		})
	}
}

// TestSettleFailureOnLiveLinkDropsTheConnection is bug R6: a settlement that
// fails on a live link (a timeout) left the delivery unsettled at the broker
// for as long as the link lived, so it was never redelivered. Now the link
// fails: the connection is dropped at the socket (the broker requeues what
// is unsettled), later settlements of its deliveries are dropped, and the
// slot redials.
func TestSettleFailureOnLiveLinkDropsTheConnection(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	c1 := hs.nextConn()
	d1 := hs.send(c1, platformMsg("1"))
	d2 := hs.send(c1, platformMsg("2"))
	c1.failSettles(context.DeadlineExceeded)
	d1.Accept()
	c2 := hs.nextConn()
	if !c1.isClosed() || !c1.wasAborted() {
		t.Errorf("the connection of the failed settlement was not dropped at the socket (closed %v)", c1.isClosed())
	}
	d2.Accept() // its link is gone: dropped, the broker redelivers it
	st := hs.src.Stats()
	if st.SettleFailed != 1 || st.DroppedDeadLink != 1 || st.Accepted != 0 {
		t.Errorf("Stats = %+v, want 1 failed and 1 dropped", st)
	}
	if a, _ := c1.counts(); a != 0 {
		t.Errorf("%d accepted on the failed link", a)
	}
	hs.reconnectsAndSettlesOn(c2)
	if logs := hs.logs.String(); !strings.Contains(logs, "dropping the connection") || !strings.Contains(logs, `settling message \"1\"`) {
		t.Errorf("the failure and its consequence are not logged:\n%s", logs)
	}
}

func TestLossNoticedWhileHandlerBlocks(t *testing.T) {
	entered, unblocked := make(chan struct{}, 1), make(chan error, 1)
	hs := newHarness(t, Config{}, func(ctx context.Context, d *bridge.Delivery) error {
		// A full pipeline: block until the source gives up.
		entered <- struct{}{}
		<-ctx.Done()
		unblocked <- ctx.Err()
		return ctx.Err()
	}, nil)
	c1 := hs.nextConn()
	hs.push(c1, platformMsg("1"))
	<-entered
	c1.kill(&amqp10.ConnError{})
	select {
	case <-unblocked:
	case <-time.After(waitLimit):
		t.Fatal("the handler was not told of the connection loss")
	}
	hs.nextConn()
	if got := hs.src.Stats(); got.Received != 1 || got.DroppedDeadLink != 1 || got.Released != 0 {
		t.Errorf("Stats = %+v, want the delivery dropped as from a dead link", got)
	}
}

func TestDetachClosesAndRedials(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	c1 := hs.nextConn()
	c1.linkErr <- &amqp10.LinkError{RemoteErr: &amqp10.Error{Condition: "amqp:link:detach-forced", Description: "gone"}}
	c2 := hs.nextConn()
	if !c1.isClosed() || !c1.wasAborted() {
		t.Error("the detached connection was not dropped at the socket")
	}
	if c2.isClosed() {
		t.Error("the new connection is closed")
	}
	eventually(t, "reconnected", func() bool { return hs.src.ConnStates()[0].Reconnects == 1 })
	if !strings.Contains(hs.logs.String(), "receiver detached by the server") {
		t.Errorf("the loss was not logged with its cause:\n%s", hs.logs.String())
	}
}

func TestRunStopParksLinksAndCloseReleases(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	c := hs.nextConn()
	d1 := hs.send(c, platformMsg("1"))
	d2 := hs.send(c, platformMsg("2"))
	hs.run.Stop()
	if err := hs.run.Wait(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if c.isClosed() {
		t.Fatal("the connection was closed while deliveries are still in flight")
	}
	d1.Accept() // the pipeline finishes its work after Run returned
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := hs.src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if !d2.Settled() {
		t.Error("Close left a delivery unsettled")
	}
	if a, r := c.counts(); a != 1 || r != 1 {
		t.Errorf("accepted %d released %d, want 1 and 1", a, r)
	}
	if !c.isClosed() {
		t.Error("Close did not close the connection")
	}
	if err := hs.src.Run(context.Background(), nil); err == nil {
		t.Error("Run after Close did not fail")
	}
}

// TestCloseStopsRun: Close stops Run and returns only once Run has ended.
// Run's slot is held in Receive after Close cancelled it (fakeConn.exit):
// Close must still be waiting then. (The test looked at sourcetest's
// Running.Done right after Close before; that channel is closed by the
// goroutine that called Run, after Run returned to it, so under load Close
// could return first although Run had ended: "Close returned before Run",
// every time with a pause there.)
func TestCloseStopsRun(t *testing.T) {
	exit := make(chan struct{})
	reading, exiting := make(chan struct{}, 1), make(chan struct{}, 1)
	hs := newHarness(t, Config{}, nil, func(c *fakeConn) { c.exit, c.reading, c.exiting = exit, reading, exiting })
	release := sync.OnceFunc(func() { close(exit) })
	t.Cleanup(release) // before the harness's Close, when the test failed
	c := hs.nextConn()
	<-reading
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		closed <- hs.src.Close(ctx)
	}()
	<-exiting // Close has cancelled Run; its slot is still in Receive
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before Run", err)
	case <-time.After(10 * time.Millisecond):
		// Close waits for Run (the test passes without this pause too;
		// it only gives a wrong Close the time to show).
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := hs.run.Wait(t); err != nil {
		t.Errorf("Run = %v", err)
	}
	if !c.isClosed() {
		t.Error("connection left open")
	}
}

func TestConnectionsUseSuffixedClientIDs(t *testing.T) {
	hs := newHarness(t, Config{Settings: source.Settings{Connections: 2}}, nil, nil)
	ids := map[string]bool{}
	for range 2 {
		ids[hs.nextConn().id] = true
	}
	if !ids["edge-gw-01-0"] || !ids["edge-gw-01-1"] {
		t.Errorf("client ids %v, want edge-gw-01-0 and edge-gw-01-1", ids)
	}
}

// TestSourceLinesNameTheEndpoint: the source's lines name the protocol
// and the endpoint (source.Settings.Log), as STOMP's do.
func TestSourceLinesNameTheEndpoint(t *testing.T) {
	hs := newHarness(t, Config{}, nil, nil)
	hs.nextConn()
	want := "level=INFO msg=\"source connected\" source=amqp endpoint=fake.invalid:5671"
	eventually(t, "the connected line", func() bool { return strings.Contains(hs.logs.String(), want) })
}

func TestSignErrorIsFatal(t *testing.T) {
	calls := 0
	var mu sync.Mutex
	params := func() (iotauth.Params, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		p, _ := testParams()
		if calls > 1 { // valid for New, then broken (e.g. an edited secret file)
			p.ConsumerGroupID = "bad,group"
		}
		return p, nil
	}
	src, err := New(filled(Config{Settings: source.Settings{Endpoint: "127.0.0.1:1", Params: params}}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = src.Run(ctx, func(context.Context, *bridge.Delivery) error { return nil })
	if !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "consumerGroupId") {
		t.Errorf("Run = %v, want a fatal error naming consumerGroupId", err)
	}
	if err := src.Close(ctx); err != nil {
		t.Error(err)
	}
}

func TestPrefetchedFromDeadConnectionNotHandedOut(t *testing.T) {
	first := true
	hs := newHarness(t, Config{}, nil, func(c *fakeConn) {
		if first { // the first connection dies with a message still buffered
			first = false
			c.drain = platformMsg("stale")
			c.kill(&amqp10.ConnError{})
		}
	})
	hs.nextConn()
	c2 := hs.nextConn()
	d := hs.send(c2, platformMsg("fresh"))
	if d.MessageID != "fresh" {
		t.Errorf("got %q, want only the message of the live connection", d.MessageID)
	}
	if got := hs.src.Stats(); got.Received != 1 {
		t.Errorf("Stats = %+v, want 1 received", got)
	}
}

func TestCreditIsTheBackpressure(t *testing.T) {
	hs := newHarness(t, Config{Credit: 4}, nil, nil)
	c := hs.nextConn()
	var ds []*bridge.Delivery
	for i := range 4 {
		ds = append(ds, hs.send(c, platformMsg(fmt.Sprint(i))))
	}
	// Four unsettled: no credit left, and none issued beyond the window.
	if credit, issued := c.creditState(); credit != 0 || issued != 4 {
		t.Fatalf("credit %d issued %d, want 0 and 4", credit, issued)
	}
	ds[0].Accept()
	// One free slot is less than half the window: still nothing.
	if _, issued := c.creditState(); issued != 4 {
		t.Errorf("issued %d after one settle, want 4 (refill at half the window)", issued)
	}
	ds[1].Release()
	eventually(t, "refill after half the window settled", func() bool {
		_, issued := c.creditState()
		return issued == 6
	})
	ds = append(ds, hs.send(c, platformMsg("4")), hs.send(c, platformMsg("5")))
	if credit, issued := c.creditState(); credit != 0 || issued != 6 {
		t.Errorf("credit %d issued %d, want 0 and 6: never more than 4 unsettled", credit, issued)
	}
	ds[2].Accept()
	ds[3].Accept()
	eventually(t, "refill after the second half settled", func() bool {
		_, issued := c.creditState()
		return issued == 8
	})
}

// TestSettlerWritesARoundInOneFlush: Settle never waits for go-amqp, and
// what is queued while the settler is busy is settled in its next round,
// whose dispositions leave in one flush (issue 16: one socket write per
// disposition was a quarter of the bridge's CPU at full rate).
func TestSettlerWritesARoundInOneFlush(t *testing.T) {
	gate, entered := make(chan struct{}), make(chan struct{}, 16)
	hs := newHarness(t, Config{}, nil, func(c *fakeConn) { c.gate, c.entered = gate, entered })
	c := hs.nextConn()
	var ds []*bridge.Delivery
	for i := range 6 {
		ds = append(ds, hs.send(c, platformMsg(strconv.Itoa(i))))
	}
	ds[0].Accept()
	<-entered // the settler is in go-amqp with the first one
	for _, d := range ds[1:5] {
		d.Accept() // returns although the settler is blocked
	}
	ds[5].Release()
	if got := hs.src.Stats(); got.Accepted != 0 || got.Released != 0 {
		t.Errorf("Stats = %+v: counted before the dispositions were written", got)
	}
	gate <- struct{}{}
	for range 5 {
		<-entered
		gate <- struct{}{}
	}
	want := Stats{Received: 6, Accepted: 5, Released: 1}
	eventually(t, "every settlement counted", func() bool { return hs.src.Stats() == want })
	if a, r := c.counts(); a != 5 || r != 1 {
		t.Errorf("accepted %d released %d, want 5 and 1", a, r)
	}
	if holds, flushes := c.rounds(); holds != 2 || flushes != 2 {
		t.Errorf("%d holds and %d flushes, want 2 rounds: the first settlement, then the five queued meanwhile", holds, flushes)
	}
}

// TestSettlementsGatherUntilAwaited: the settler lets settlements gather
// (SettleLinger, an hour here) and writes them in one round once one is
// awaited: Close writes the three the pipeline settled in one flush
// (issue 16: a write per connection per MNS request was most of the
// settler's cost at 5,000 msgs/s).
func TestSettlementsGatherUntilAwaited(t *testing.T) {
	hs := newHarness(t, Config{SettleLinger: time.Hour}, nil, nil)
	c := hs.nextConn()
	hs.sendAccepted(c, 3)
	if got := hs.src.Stats(); got.Accepted != 0 {
		t.Errorf("Stats = %+v: written within the linger", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := hs.src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if a, r := c.counts(); a != 3 || r != 0 || !c.isClosed() {
		t.Errorf("accepted %d released %d (closed %v), want 3 accepted before the close", a, r, c.isClosed())
	}
	if holds, flushes := c.rounds(); holds != 1 || flushes != 1 {
		t.Errorf("%d holds and %d flushes, want the three in one round", holds, flushes)
	}
}

// TestCreditDoesNotWaitForTheLinger: a link out of credit has the settler
// write what the pipeline settled at once, whatever SettleLinger (an hour
// here), and the refill goes out in the write of the settlements that made
// the room (within their round). Settlements that come after the room was
// made linger, and leave at the latest in the write of the next refill.
// (It waited for all four in the refill's round: when Next already waited
// as the first two were queued, the settler wrote those two with a refill
// of 2, and the other two lingered for the hour: 26 of 2,400 runs with
// -cpu 1,2 at load 25 timed out.)
func TestCreditDoesNotWaitForTheLinger(t *testing.T) {
	hs := newHarness(t, Config{Credit: 4, SettleLinger: time.Hour}, nil, nil)
	c := hs.nextConn()
	hs.sendAccepted(c, 4)
	eventually(t, "a refill once the settlements are written", func() bool {
		_, issued := c.creditState()
		return issued > 4
	})
	c.mu.Lock()
	g := c.grants[1] // after the first 4
	c.mu.Unlock()
	// Two or four: the room is issued once it is half the window, as whole
	// halves; two or three settlements make a half.
	want := 2
	if g.accepted == 4 {
		want = 4
	}
	if !g.held || g.accepted < 2 || g.n != want {
		t.Fatalf("refill %+v, want one of %d in the write (held) of the 2 or more settlements that made the room", g, want)
	}
	if g.accepted < 4 {
		// The rest lingers, unless it was queued in time for the round
		// after: the link's next wait for credit takes it along.
		hs.sendN(c, g.n)
	}
	eventually(t, "the four written", func() bool { a, _ := c.counts(); return a == 4 })
}

// TestSettlementsWaitForTheRoomOfTheRefill: while Next waits for credit,
// a settlement that does not make room for half the window lingers, and
// leaves with the one that does, in the write of the refill (issue 16:
// a write of its own for each MNS request while the link waited was most of
// the settle writes at 5,000 msgs/s over 5 connections).
func TestSettlementsWaitForTheRoomOfTheRefill(t *testing.T) {
	hs := newHarness(t, Config{Credit: 4, SettleLinger: time.Hour}, nil, nil)
	waitGathering := hs.watchGathering()
	c := hs.nextConn()
	ds := hs.sendN(c, 4)
	ds[0].Accept() // one free of four: no room for half the window yet
	waitGathering("the settlement")
	if holds, flushes := c.rounds(); holds != 0 || flushes != 0 {
		t.Errorf("%d holds and %d flushes before the room for the refill, want none", holds, flushes)
	}
	ds[1].Accept()
	eventually(t, "the refill", func() bool { _, issued := c.creditState(); return issued > 4 })
	if holds, flushes := c.rounds(); holds != 1 || flushes != 1 {
		t.Errorf("%d holds and %d flushes, want the two settlements and the refill in one round", holds, flushes)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.issued != 6 || c.heldCredit != 2 || len(c.accepted) != 2 {
		t.Errorf("issued %d (%d within the round), accepted %d, want a refill of 2 in the write of the 2 accepts",
			c.issued, c.heldCredit, len(c.accepted))
	}
}

// TestRefillsComeInHalvesOfTheWindow: a refill is a whole half of the
// window (or the whole window), however many settlements made the room, so
// that what the link receives next fills the pipeline's batches (issue 16:
// refills of 38 and 42 at credit 64 left part batches for the pipeline's
// linger, and one connection's rate fell by a quarter).
func TestRefillsComeInHalvesOfTheWindow(t *testing.T) {
	hs := newHarness(t, Config{Credit: 8, SettleLinger: time.Hour}, nil, nil)
	waitGathering := hs.watchGathering()
	c := hs.nextConn()
	ds := hs.sendN(c, 7)
	// Five settled while Next still has credit: they linger.
	for _, d := range ds[:5] {
		d.Accept()
	}
	waitGathering("the settlements")
	// The last credit used: Next waits, with room for 5 (8 - 3 unsettled).
	hs.send(c, platformMsg("7"))
	eventually(t, "the refill", func() bool { _, issued := c.creditState(); return issued > 8 })
	if _, issued := c.creditState(); issued != 12 {
		t.Errorf("issued %d, want 12: a refill of half the window (4), not the 5 free", issued)
	}
	if a, _ := c.counts(); a != 5 {
		t.Errorf("accepted %d, want the 5 in the refill's round", a)
	}
}

// TestFailedFlushCountsAsDropped: when the write of a round's dispositions
// fails (which closes the socket), its settlements are counted as dropped,
// not accepted: the platform redelivers those messages.
func TestFailedFlushCountsAsDropped(t *testing.T) {
	hs := newHarness(t, Config{}, nil, func(c *fakeConn) { c.flushErr = errors.New("broken pipe") })
	c := hs.nextConn()
	d := hs.send(c, platformMsg("1"))
	d.Accept()
	eventually(t, "the settlement counted", func() bool { return hs.src.Stats().DroppedDeadLink == 1 })
	if got := hs.src.Stats(); got.Accepted != 0 || got.SettleFailed != 0 {
		t.Errorf("Stats = %+v, want the settlement dropped only", got)
	}
}

// TestCloseWritesQueuedSettlements: Close lets the settler write what the
// pipeline settled just before, then closes.
func TestCloseWritesQueuedSettlements(t *testing.T) {
	gate, entered := make(chan struct{}), make(chan struct{}, 16)
	hs := newHarness(t, Config{}, nil, func(c *fakeConn) { c.gate, c.entered = gate, entered })
	c := hs.nextConn()
	d1 := hs.send(c, platformMsg("1"))
	d2 := hs.send(c, platformMsg("2"))
	d1.Accept()
	<-entered
	d2.Accept()
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		closed <- hs.src.Close(ctx)
	}()
	<-hs.run.Done() // Close has stopped Run and goes on to the link
	select {
	case <-c.done:
		t.Fatal("closed while a settlement was still queued")
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a settlement was still queued", err)
	case <-time.After(10 * time.Millisecond):
		// Close waits for the settler (the test passes without this
		// pause too; it only gives a wrong Close the time to show).
	}
	gate <- struct{}{}
	<-entered
	gate <- struct{}{}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if a, _ := c.counts(); a != 2 || !c.isClosed() {
		t.Errorf("accepted %d (closed %v), want both accepted before the close", a, c.isClosed())
	}
	if got := hs.src.Stats(); got.Accepted != 2 {
		t.Errorf("Stats = %+v, want 2 accepted", got)
	}
}

// TestRefusedDeliveryIsFatal: a delivery the pipeline refuses while intake
// runs is released and stops Run (the pipeline is gone), as in every source
// (source.Driver); the AMQP source used to redial, taking and giving back
// messages in a loop.
func TestRefusedDeliveryIsFatal(t *testing.T) {
	hs := newHarness(t, Config{}, func(context.Context, *bridge.Delivery) error {
		return errors.New("pipeline is shutting down")
	}, nil)
	c := hs.nextConn()
	hs.push(c, platformMsg("1"))
	if err := hs.run.Wait(t); !errors.Is(err, source.ErrFatal) || !strings.Contains(err.Error(), "refused a delivery") {
		t.Fatalf("Run = %v, want a fatal refusal", err)
	}
	eventually(t, "the refused delivery released", func() bool { a, r := c.counts(); return a == 0 && r == 1 })
	select {
	case <-hs.dialer.dialed:
		t.Error("redialled after the pipeline refused a delivery")
	default:
	}
}

// TestCloseDoesNotWaitForAStuckSettlement: a settlement that hangs in
// go-amqp (its context only bounds the write) holds Close up for at most
// the settle timeout, not for Close's whole budget; closing the connection
// is what ends it.
func TestCloseDoesNotWaitForAStuckSettlement(t *testing.T) {
	gate, entered := make(chan struct{}), make(chan struct{}, 16)
	t.Cleanup(func() { close(gate) })
	hs := newHarness(t, Config{SettleTimeout: time.Millisecond}, nil, func(c *fakeConn) { c.gate, c.entered = gate, entered })
	c := hs.nextConn()
	d := hs.send(c, platformMsg("1"))
	d.Accept()
	<-entered // stuck for good
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		_ = hs.src.Close(ctx)
	}()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		t.Fatal("Close waits for a settlement stuck in go-amqp instead of closing the connection")
	}
}

// slowCredit holds IssueCredit until the test lets it go: entered is
// signalled as it starts.
type slowCredit struct {
	*fakeConn
	entered, release chan struct{}
}

func (c *slowCredit) IssueCredit(n uint32) error {
	c.entered <- struct{}{}
	<-c.release
	return c.fakeConn.IssueCredit(n)
}

// TestCreditAskedAsNextGivesUpIsTaken: Next's wait for credit ends (its
// context) just after the settler took the request: the credit the settler
// is issuing is taken and counted all the same, and nothing is left on the
// hand-over. A grant left there would have the next request's grant block
// the settler, which holds the connection's writes meanwhile.
func TestCreditAskedAsNextGivesUpIsTaken(t *testing.T) {
	src, err := New(filled(Config{Settings: source.Settings{Endpoint: "127.0.0.1:1", Params: testParams}}))
	if err != nil {
		t.Fatal(err)
	}
	fc := newFakeConn(0, "c0")
	c := &slowCredit{fakeConn: fc, entered: make(chan struct{}), release: make(chan struct{})}
	l := newLink(src, c, "c0")
	defer fc.kill(&amqp10.ConnError{})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		n   int
		err error
	}
	asked := make(chan result, 1)
	go func() {
		n, err := l.askCredit(ctx)
		asked <- result{n, err}
	}()
	<-c.entered // the settler took the request and is issuing the credit
	cancel()
	close(c.release)
	r := <-asked
	if r.err != nil || r.n != src.cfg.Credit {
		t.Errorf("askCredit = %d, %v; want the credit issued as it gave up (%d)", r.n, r.err, src.cfg.Credit)
	}
	if _, issued := fc.creditState(); issued != src.cfg.Credit {
		t.Errorf("credit issued %d, want %d", issued, src.cfg.Credit)
	}
	if n := len(l.credited); n != 0 {
		t.Errorf("%d grant(s) left on the hand-over, want none", n)
	}
}
