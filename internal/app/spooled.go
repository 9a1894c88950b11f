package app

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// spooled puts the local spool between the source and the pipeline:
//
//	source ──Intake──► spool (group-committed fsync) ──settle upstream──► done
//	                      └──feeder (in key order)──► pipeline ──accepted──► spool.Delete
//
// A delivery is settled upstream as soon as its message is durable in the
// spool (with STOMP client-individual and AMQP that is the ACK/Accept); the
// feeder then forwards from the spool, and a message leaves the spool only
// when MNS accepted it or it was dead-lettered. Released messages (shutdown)
// stay in the spool and are forwarded again on the next start. When the
// spool is full, Intake blocks, so the source stops consuming.
type spooled struct {
	sp       *spool.Spool
	pipeline *bridge.Pipeline
	log      *slog.Logger
	kick     chan struct{}
	full     atomic.Bool
	lost     atomic.Int64 // auto-acked messages the spool failed to store
}

func newSpooled(sp *spool.Spool, p *bridge.Pipeline, log *slog.Logger) *spooled {
	return &spooled{sp: sp, pipeline: p, log: log, kick: make(chan struct{}, 1)}
}

// Intake is the bridge.Handler given to the source.
func (s *spooled) Intake(ctx context.Context, d *bridge.Delivery) error {
	for {
		err := s.sp.Append(ctx, &d.Message, func(_ uint64, err error) {
			if err != nil {
				// Not durable: give it back so the platform redelivers it
				// (a no-op for STOMP ack auto, which settled on receipt).
				s.log.Error("spool write failed; releasing the message", "messageId", d.MessageID, "err", err)
				if !d.Release() {
					s.lost.Add(1)
				}
				return
			}
			d.Accept()
			select {
			case s.kick <- struct{}{}:
			default:
			}
		})
		if err == nil {
			if s.full.CompareAndSwap(true, false) {
				s.log.Info("spool has room again; consuming")
			}
			return nil
		}
		if !errors.Is(err, spool.ErrFull) {
			if !bridge.Retryable(err) {
				// A message larger than the whole spool: forward it directly.
				return s.pipeline.Handle(ctx, d)
			}
			return err
		}
		if s.full.CompareAndSwap(false, true) {
			s.log.Warn("spool full: not consuming until MNS takes messages", "err", err)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// spoolSettler deletes a forwarded message from the spool.
type spoolSettler struct{ sp *spool.Spool }

func (ss spoolSettler) Settle(d *bridge.Delivery, o bridge.Outcome) {
	if o == bridge.Accepted {
		ss.sp.Delete(d.Token.(uint64))
	}
}

// Feed forwards spooled messages into the pipeline in key order, starting
// with what an earlier run left, until ctx is done. It blocks in
// pipeline.Handle when the pipeline is full.
func (s *spooled) Feed(ctx context.Context) {
	settler := spoolSettler{sp: s.sp}
	next := uint64(0)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.sp.ReplayFrom(next, func(key uint64, m bridge.Message) error {
			if err := s.pipeline.Handle(ctx, bridge.NewDelivery(m, settler, key)); err != nil {
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
