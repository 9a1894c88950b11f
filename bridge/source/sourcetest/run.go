package sourcetest

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// limit bounds the waits of Running: a hang guard, never a pass/fail
// threshold.
const limit = 20 * time.Second

// Running is a source's Run in the background, started by Start.
type Running struct {
	// Got receives every delivery when Start was given no handler.
	Got <-chan *bridge.Delivery

	cancel  context.CancelFunc
	done    chan struct{} // closed once Run returned
	err     error         // Run's result; set before done is closed
	checked atomic.Bool   // the test looked at Run's result
}

// Start runs src.Run in the background with h, or, when h is nil, with a
// handler that queues every delivery in Got (1000 at most; it gives up
// when its ctx ends). When t ends it stops intake, closes src within 20 s
// and fails t when Close fails, Run has not returned after Close, or Run
// failed and the test did not look at its result (Err, Wait).
func Start(t testing.TB, src bridge.Source, h bridge.Handler) *Running {
	t.Helper()
	got := make(chan *bridge.Delivery, 1000)
	r := &Running{Got: got, done: make(chan struct{})}
	if h == nil {
		h = func(ctx context.Context, d *bridge.Delivery) error {
			select {
			case got <- d:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = src.Run(ctx, h)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		Close(t, src)
		select {
		case <-r.done:
			if r.err != nil && !r.checked.Load() {
				t.Errorf("Run: %v", r.err)
			}
		case <-time.After(limit):
			t.Errorf("Run did not return within %s after Close", limit)
		}
	})
	return r
}

// Close closes src within 20 s; it fails t when Close fails.
func Close(t testing.TB, src bridge.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	if err := src.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// Stop cancels Run's context: intake stops (a Close stops Run too).
func (r *Running) Stop() { r.cancel() }

// Done is closed once Run has returned; Err is then its result.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is Run's result once Done is closed (nil before).
func (r *Running) Err() error {
	select {
	case <-r.done:
		r.checked.Store(true)
		return r.err
	default:
		return nil
	}
}

// Wait waits for Run to return and returns its result; it fails t when Run
// has not returned within 20 s.
func (r *Running) Wait(t testing.TB) error {
	t.Helper()
	select {
	case <-r.done:
		return r.Err()
	case <-time.After(limit):
		t.Fatalf("Run did not return within %s", limit)
		return nil
	}
}

// Next returns the next delivery of Got; it fails t when none comes within
// 20 s.
func (r *Running) Next(t testing.TB) *bridge.Delivery {
	t.Helper()
	select {
	case d := <-r.Got:
		return d
	case <-time.After(limit):
		t.Fatalf("no delivery within %s", limit)
		return nil
	}
}
