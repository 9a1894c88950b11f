package amqpsrc

import (
	"context"
	"fmt"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// CheckConnect logs in once, attaches the receiver with zero credit (the
// platform cannot send a message on it) and closes cleanly: it never takes a
// message. It logs in as source.CheckClientID of the configured client id,
// so that it does not displace a running bridge's connection. It does not retry. The error says which step failed and the
// likely cause (endpoint, TLS CA, credentials, address). It blocks until
// done or ctx ends; the close is bounded by cfg.AttachTimeout.
func CheckConnect(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	p, err := s.cfg.Params()
	if err != nil {
		return s.cfg.Names.Bad(source.FieldParams, "%w", err)
	}
	id := source.CheckClientID(p.ClientID)
	// The dialer attaches with manual credit and issues none: zero credit.
	c, err := s.dial(ctx, 0, id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.AttachTimeout)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		return fmt.Errorf("amqp check %s: connected and attached, but the close did not finish: %w", id, err)
	}
	return nil
}
