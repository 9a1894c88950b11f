package amqpsrc

import (
	"context"
	"fmt"
)

// CheckConnect logs in once with cfg (the first connection slot's client
// id), attaches the receiver and closes cleanly, without receiving
// anything. It does not retry. The error says which step failed and the
// likely cause (endpoint, TLS CA, credentials, address). It blocks until
// done or ctx ends; the close is bounded by cfg.AttachTimeout.
func CheckConnect(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	sl := s.slots[0]
	c, err := s.dial(ctx, sl.index, sl.id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.AttachTimeout)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		return fmt.Errorf("amqp check %s: connected and attached, but the close did not finish: %w", sl.id, err)
	}
	return nil
}
