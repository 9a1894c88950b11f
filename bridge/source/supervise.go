package source

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// AttemptLimiter bounds connection attempts in any sliding minute. The
// platform refuses more than 100 connection requests a minute per consumer
// group, so all connections of one group share one limiter. It is safe for
// concurrent use.
type AttemptLimiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	times  []time.Time // start times of recent attempts, oldest first
	now    func() time.Time
}

// NewAttemptLimiter allows at most max attempts in any window.
func NewAttemptLimiter(max int, window time.Duration) *AttemptLimiter {
	if max < 1 {
		max = 1
	}
	return &AttemptLimiter{max: max, window: window, now: time.Now}
}

// Wait blocks until an attempt is allowed, records it and returns nil, or
// returns ctx's error.
func (l *AttemptLimiter) Wait(ctx context.Context) error {
	for {
		l.mu.Lock()
		now := l.now()
		for len(l.times) > 0 && now.Sub(l.times[0]) >= l.window {
			l.times = l.times[1:]
		}
		if len(l.times) < l.max {
			l.times = append(l.times, now)
			l.mu.Unlock()
			return nil
		}
		wait := l.window - now.Sub(l.times[0])
		l.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Session is one connection's life: it dials, signs, subscribes and
// receives until the connection fails or ctx is done. It calls connected
// once the connection is ready to receive, and returns the reason it ended.
type Session func(ctx context.Context, connected func()) error

// Supervisor keeps one connection slot alive: it runs a Session again and
// again, with jittered exponential backoff between failures (reset once a
// connection has been stable for StableAfter) and under a shared
// AttemptLimiter. Never two sessions at once for one slot: the next dial
// starts only after the previous session returned.
type Supervisor struct {
	Name        string // the slot, e.g. the client id "edge-gw-01-0"
	Backoff     bridge.Backoff
	StableAfter time.Duration // default 1 minute
	Limiter     *AttemptLimiter
	Logger      *slog.Logger
	// Group, when set, is shared with the other connections of the
	// source: it logs their first connects, connect failures, losses and
	// reconnects together (see FailureGroup), and Run logs this
	// connection's at debug.
	Group *FailureGroup

	mu    sync.Mutex
	state bridge.ConnState
}

// ErrFatal wraps a session error that reconnecting cannot fix; Run returns
// it instead of redialling.
var ErrFatal = errors.New("fatal")

// State returns the slot's current state. Safe for concurrent use.
func (s *Supervisor) State() bridge.ConnState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	st.Name = s.Name
	return st
}

func (s *Supervisor) setState(f func(*bridge.ConnState)) {
	s.mu.Lock()
	f(&s.state)
	s.mu.Unlock()
}

// Run supervises sessions until ctx is done (then it returns nil) or a
// session returns an error wrapping ErrFatal. It logs each state change once:
// a connect, a loss, and the first of a run of failures that differ at most
// in their numbers (see FailureShape).
func (s *Supervisor) Run(ctx context.Context, session Session) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stable := s.StableAfter
	if stable <= 0 {
		stable = time.Minute
	}
	everConnected := false
	lastErr := ""
	for {
		if s.Limiter != nil {
			if err := s.Limiter.Wait(ctx); err != nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var connectedAt time.Time
		err := session(ctx, func() {
			connectedAt = time.Now()
			reconnect := everConnected
			everConnected = true
			lastErr = ""
			if s.Group != nil {
				s.Group.Connected(s.Name)
			}
			s.setState(func(st *bridge.ConnState) {
				st.Connected = true
				st.LastError = ""
				if reconnect {
					st.Reconnects++
				}
			})
			if s.Group != nil {
				// The group says when every connection is up, and when
				// the connections it saw lost are all back.
				log.Debug("source connected", "conn", s.Name, "reconnect", reconnect)
			} else {
				log.Info("source connected", "conn", s.Name, "reconnect", reconnect)
			}
		})
		wasConnected := !connectedAt.IsZero()
		msg := "session ended"
		if err != nil {
			msg = err.Error()
		}
		s.setState(func(st *bridge.ConnState) {
			st.Connected = false
			st.LastError = msg
		})
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrFatal) {
			log.Error("source connection failed permanently", "conn", s.Name, "err", msg)
			return err
		}
		if wasConnected {
			if time.Since(connectedAt) >= stable {
				s.Backoff.Reset()
			}
			if s.Group != nil {
				s.Group.Lost(s.Name, msg)
			} else {
				log.Warn("source connection lost; reconnecting", "conn", s.Name, "err", msg)
			}
		} else if s.Group != nil {
			s.Group.Failed(s.Name, msg)
		} else if shape := FailureShape(msg); shape != lastErr {
			log.Error("source connect failed; retrying with backoff", "conn", s.Name, "err", msg)
			lastErr = shape
		} else {
			log.Debug("source connect failed again", "conn", s.Name, "err", msg)
		}
		d := s.Backoff.Next()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// FailureShape is a failure's text with every run of digits as "#" and
// every Go duration (100ms, 2.6s, 1m30s) as "#s": the same failure again
// may differ in numbers only (a server that quotes the login's timestamp,
// the local port of each new connection, the credentials' "next attempt
// in 2.6s" counting down), and must not be logged (or reported to the
// service manager) as a new one at every attempt.
func FailureShape(msg string) string {
	b := make([]byte, 0, len(msg))
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		switch {
		case c < '0' || c > '9':
			b = append(b, c)
		case i > 0 && msg[i-1] >= '0' && msg[i-1] <= '9':
			// the run's "#" is written
		case i > 0 && isLetter(msg[i-1]):
			b = append(b, '#')
		default:
			if n := durationAt(msg[i:]); n > 0 {
				b = append(b, "#s"...)
				i += n - 1
				continue
			}
			b = append(b, '#')
		}
	}
	return string(b)
}

// durationAt returns the length of the Go duration that s starts with (as
// time.Duration's String writes them: 100ms, 2.6s, 1m30s, 900µs), or 0
// when s does not start with one or it runs on into a word (3messages).
func durationAt(s string) int {
	j := 0
	for {
		k := j
		for k < len(s) && (s[k] >= '0' && s[k] <= '9' || s[k] == '.') {
			k++
		}
		if k == j {
			break
		}
		u := 0
		for _, unit := range []string{"ns", "us", "µs", "ms", "s", "m", "h"} {
			if strings.HasPrefix(s[k:], unit) {
				u = len(unit)
				break
			}
		}
		if u == 0 {
			return 0 // a number without its unit: not a duration, or not one alone
		}
		j = k + u
	}
	if j == 0 || j < len(s) && isLetter(s[j]) {
		return 0
	}
	if _, err := time.ParseDuration(s[:j]); err != nil {
		return 0
	}
	return j
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
