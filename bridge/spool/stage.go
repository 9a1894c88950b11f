package spool

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// Stage puts the local spool between the source and the pipeline:
//
//	source ──Intake──► spool (group-committed fsync) ──settle upstream──► done
//	                      └──feeder (in key order)──► pipeline ──accepted──► spool.Delete
//
// A delivery is settled upstream as soon as its message is durable in the
// spool (with STOMP client-individual and AMQP that is the ACK/Accept); the
// feeder then forwards from the spool, and a message leaves the spool only
// when MNS accepted it or it was dead-lettered. Released messages (shutdown)
// stay in the spool and are forwarded again on the next start.
//
// When the spool is full (Options.MaxBytes) or its commits fail (disk full,
// I/O errors), Intake blocks, so the source stops consuming: the messages
// whose commit failed are kept in memory and appended again with backoff
// until a commit succeeds. They are never released while the bridge runs
// (with STOMP ack auto a release would lose them; with client acks it would
// make the platform redeliver in a storm); at shutdown they are released
// when the platform redelivers them and handed back (Close) when not.
type Stage struct {
	sp       *Spool
	pipeline bridge.Handler
	log      *slog.Logger
	kick     chan struct{}

	mu      sync.Mutex
	failed  []*bridge.Delivery // commits failed: to append again
	failing error              // the last commit error while commits fail, nil when healthy
	full    bool               // the last Append found the spool full
}

// NewStage returns the stage that spools deliveries in sp and forwards
// them to next (the pipeline's Handle); Feed must run for them to leave the
// spool.
func NewStage(sp *Spool, next bridge.Handler, log *slog.Logger) *Stage {
	return &Stage{sp: sp, pipeline: next, log: log, kick: make(chan struct{}, 1)}
}

// retryWait is the pause between attempts while the spool is full or its
// commits fail.
const retryWait = 200 * time.Millisecond

// Intake is the bridge.Handler given to the source. It returns once d is
// queued for a durable write; it blocks while the spool is full or its
// commits fail, until they succeed again or ctx is done.
func (s *Stage) Intake(ctx context.Context, d *bridge.Delivery) error {
	for {
		if err := s.retryFailed(ctx); err != nil {
			return err
		}
		err := s.sp.Append(ctx, &d.Message, s.committed(d))
		if err == nil {
			s.setFull(false)
			return nil
		}
		switch {
		case errors.Is(err, ErrFull):
			s.setFull(true, err)
		case !bridge.Retryable(err):
			// A message larger than the whole spool: forward it directly.
			return s.pipeline(ctx, d)
		default:
			return err
		}
		if err := sleep(ctx, retryWait); err != nil {
			return err
		}
	}
}

// committed returns the Append callback for d: on success it settles d
// upstream and wakes the feeder; on failure it keeps d for another append.
// It runs on the spool's writer goroutine and must not block.
func (s *Stage) committed(d *bridge.Delivery) func(uint64, error) {
	return func(_ uint64, err error) {
		s.mu.Lock()
		if err != nil {
			s.failed = append(s.failed, d)
			if s.failing == nil {
				s.log.Error("spool writes failing: not consuming until they succeed; the messages are held in memory", "err", err)
			}
			s.failing = err
			s.mu.Unlock()
			return
		}
		if s.failing != nil {
			s.failing = nil
			s.log.Info("spool writes succeed again; consuming")
		}
		s.mu.Unlock()
		d.Accept()
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// retryFailed blocks while commits fail: it appends the held messages again
// every retryWait until a commit succeeds, or returns ctx's error.
func (s *Stage) retryFailed(ctx context.Context) error {
	for {
		s.mu.Lock()
		failing, retry := s.failing != nil, s.failed
		s.failed = nil
		s.mu.Unlock()
		for i, d := range retry {
			if err := s.sp.Append(ctx, &d.Message, s.committed(d)); err != nil {
				s.mu.Lock()
				s.failed = append(s.failed, retry[i:]...)
				s.mu.Unlock()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				break
			}
		}
		if !failing {
			return nil
		}
		if err := sleep(ctx, retryWait); err != nil {
			return err
		}
	}
}

// Close releases the messages still held after failed commits (shutdown)
// that the platform redelivers, and returns the others (STOMP ack auto) for
// the caller to keep: releasing those would lose them.
func (s *Stage) Close() (keep []*bridge.Delivery) {
	s.mu.Lock()
	held := s.failed
	s.failed = nil
	s.mu.Unlock()
	released := 0
	for _, d := range held {
		if !d.Redeliverable() {
			keep = append(keep, d)
			continue
		}
		d.Release()
		released++
	}
	if released > 0 {
		s.log.Warn("released messages that never reached the spool (the platform redelivers them)", "count", released)
	}
	return keep
}

func (s *Stage) setFull(full bool, err ...error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if full && !s.full {
		s.log.Warn("spool full: not consuming until MNS takes messages", "err", err[0])
	}
	if !full && s.full {
		s.log.Info("spool has room again; consuming")
	}
	s.full = full
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// spoolSettler deletes a forwarded message from the spool.
type spoolSettler struct{ sp *Spool }

func (ss spoolSettler) Settle(d *bridge.Delivery, o bridge.Outcome) {
	if o == bridge.Accepted {
		ss.sp.Delete(d.Token.(uint64))
	}
}

// Feed forwards spooled messages into the pipeline in key order, starting
// with what an earlier run left, until ctx is done. It blocks in the next
// handler when the pipeline is full.
func (s *Stage) Feed(ctx context.Context) {
	settler := spoolSettler{sp: s.sp}
	next := uint64(0)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.sp.ReplayFrom(next, func(key uint64, m bridge.Message) error {
			if err := s.pipeline(ctx, bridge.NewDelivery(m, settler, key)); err != nil {
				return err
			}
			next = key + 1
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Error("reading the spool failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
	}
}
