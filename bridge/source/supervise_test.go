package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

func TestAttemptLimiterBoundsAttemptsPerWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewAttemptLimiter(3, time.Minute)
	l.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := l.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a 4th attempt in the window = %v, want it to wait", err)
	}
	now = now.Add(time.Minute)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// recordHandler keeps every log record's message.
type recordHandler struct{ msgs chan string }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.msgs <- r.Message
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// TestSupervisorRedialsAndLogsStateChangesOnce: a session that fails the
// same way five times is logged as failing once (then at debug), a
// successful connect once, a loss once; reconnects are counted, and a
// fatal error ends Run.
func TestSupervisorRedialsAndLogsStateChangesOnce(t *testing.T) {
	s, count := superviseUntilFatal(t, func(s *Supervisor, calls int, connected func()) error {
		if calls <= 5 {
			return errors.New("login refused: bad signature")
		}
		connected()
		if st := s.State(); !st.Connected {
			t.Errorf("state after connected: %+v", st)
		}
		return errors.New("connection lost")
	})
	if count["source connect failed; retrying with backoff"] != 1 || count["source connect failed again"] != 4 {
		t.Errorf("connect failures logged %v", count)
	}
	if count["source connected"] != 2 || count["source connection lost; reconnecting"] != 2 {
		t.Errorf("connects and losses logged %v", count)
	}
	if st := s.State(); st.Connected || st.Reconnects != 1 || st.LastError == "" || st.Name != "c-0" {
		t.Errorf("final state %+v", st)
	}
}

// TestSupervisorLogsAFailureThatDiffersInNumbersOnce: a server that quotes
// each login's timestamp (the simulator's -max-skew refusal), or an error
// naming the new connection's local port, makes every attempt's text new;
// it is still one failure, logged once, and another failure is logged.
func TestSupervisorLogsAFailureThatDiffersInNumbersOnce(t *testing.T) {
	_, count := superviseUntilFatal(t, func(_ *Supervisor, calls int, _ func()) error {
		if calls <= 4 {
			return fmt.Errorf(`login refused: "timestamp %d is 20m0s away from the server clock (limit 5m0s)"`, int64(1796117570067)+1000*int64(calls))
		}
		return fmt.Errorf("read tcp 127.0.0.1:%d->127.0.0.1:61614: read: connection reset by peer", 40000+calls*7)
	})
	if count["source connect failed; retrying with backoff"] != 2 || count["source connect failed again"] != 5 {
		t.Errorf("connect failures logged %v, want 2 (one per failure) and 5 again", count)
	}
}

// superviseUntilFatal runs a Supervisor (backoff 1-2 ms) over session,
// called with the call's number, for 7 calls; the 8th session fails with
// ErrFatal, which must end Run. It returns the Supervisor and how often
// each message was logged.
func superviseUntilFatal(t *testing.T, session func(s *Supervisor, calls int, connected func()) error) (*Supervisor, map[string]int) {
	t.Helper()
	h := recordHandler{msgs: make(chan string, 100)}
	s := &Supervisor{Name: "c-0", Backoff: bridge.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Logger: slog.New(h)}
	calls := 0
	err := s.Run(context.Background(), func(ctx context.Context, connected func()) error {
		calls++
		if calls == 8 {
			return fmt.Errorf("%w: signing parameters invalid", ErrFatal)
		}
		return session(s, calls, connected)
	})
	if !errors.Is(err, ErrFatal) || calls != 8 {
		t.Fatalf("Run = %v after %d calls, want the fatal error after 8", err, calls)
	}
	close(h.msgs)
	count := map[string]int{}
	for m := range h.msgs {
		count[m]++
	}
	return s, count
}

func TestSupervisorStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	// The failure is logged right before the backoff starts: that line is
	// the sign it is waiting its hour.
	backingOff := make(chan struct{}, 1)
	log := slog.New(&signalHandler{msg: "source connect failed; retrying with backoff", c: backingOff})
	s := &Supervisor{Backoff: bridge.Backoff{Min: time.Hour, Max: time.Hour}, Logger: log}
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(context.Context, func()) error { calls++; return errors.New("down") })
	}()
	<-backingOff
	cancel()
	if err := <-done; err != nil || calls != 1 {
		t.Fatalf("Run after cancel = %v after %d sessions, want nil after 1", err, calls)
	}
}

// signalHandler sends on c when a record with message msg is logged.
type signalHandler struct {
	msg string
	c   chan<- struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.c <- struct{}{}:
		default:
		}
	}
	return nil
}
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalHandler) WithGroup(string) slog.Handler      { return h }
