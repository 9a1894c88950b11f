package stompsrc

import (
	"context"
	"fmt"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
)

// checkSuffix is appended to the client id of CheckConnect's connection so
// that it does not displace a running bridge's connection.
const checkSuffix = "-check"

// CheckConnect logs in once, subscribes and disconnects cleanly (DISCONNECT
// with a receipt), for `check -connect`. It blocks until done, within ctx and
// cfg.DialTimeout for each step. Its client id is the configured one with
// "-check" appended (cut to the platform's 64 characters).
//
// It never takes a message, whatever cfg.Ack says: it subscribes with ack
// client-individual and sends no ACK, so a message the platform pushes in the
// moment between SUBSCRIBE and DISCONNECT stays the platform's and is sent
// again (to the running bridge). Such messages are counted in a warning on
// cfg.Logger.
//
// The error says what is likely wrong: the server's own message for a
// refused login or subscription, the CA or server name for certificate
// errors, the endpoint and network for timeouts.
func CheckConnect(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	log := cfg.Logger.With("source", "stomp", "op", "check")
	p, err := cfg.Params()
	if err != nil {
		return fmt.Errorf("stomp check: signing parameters: %w", err)
	}
	id := []rune(p.ClientID)
	if n := iotauth.MaxClientIDLen - len(checkSuffix); len(id) > n {
		id = id[:n]
	}
	p.ClientID = string(id) + checkSuffix
	p.EncodeBase64 = cfg.EncodeBase64
	configured := cfg.Ack
	cfg.Ack = AckClientIndividual // never ACKed: nothing is taken

	l, err := dialAs(ctx, cfg, p, log)
	if err != nil {
		return err
	}
	defer l.close()

	// DISCONNECT with a receipt: the server handles frames in order, so the
	// receipt proves it took the SUBSCRIBE; a refused SUBSCRIBE comes back
	// as an ERROR frame before it.
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	messages := 0
	_, derr := l.disconnect(dctx, func(*inFrame) { messages++ })
	if messages > 0 {
		log.Warn("messages arrived during the check; not acknowledged, so the platform sends them again", "count", messages, "configured_ack", configured)
	}
	switch {
	case derr != nil && isServerError(derr):
		return fmt.Errorf("stomp check %s: subscribe to %s refused: %w", cfg.Endpoint, cfg.Destination, l.ended(derr))
	case derr != nil && ctx.Err() != nil:
		return fmt.Errorf("stomp check %s: %w", cfg.Endpoint, ctx.Err())
	case derr != nil:
		return fmt.Errorf("stomp check %s: disconnect after subscribing to %s: %w", cfg.Endpoint, cfg.Destination, derr)
	}
	return nil
}
