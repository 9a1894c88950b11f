package stompsrc

import (
	"context"
	"fmt"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
)

// CheckConnect logs in once and disconnects cleanly (DISCONNECT with a
// receipt), for `check -connect`. It blocks until done, within ctx and
// cfg.DialTimeout for each step. It logs in as source.CheckClientID of the
// configured client id, so that it does not displace a running bridge's
// connection.
//
// It never takes a message, whatever cfg.Ack says: it does not subscribe, so
// the platform has nowhere to push one. (A subscription without ACKs would
// not be enough: the platform documents only ack auto for STOMP, under which
// a message pushed to the check is settled on sending.) The login proves the
// endpoint, the certificate, the credentials, the instance and the consumer
// group, which the username carries; the destination is not checked.
//
// The error says what is likely wrong: the server's own message for a
// refused login, the CA or server name for certificate errors, the endpoint
// and network for timeouts.
func CheckConnect(ctx context.Context, cfg Config) error {
	cfg, err := cfg.checked()
	if err != nil {
		return err
	}
	log := cfg.Log("stomp").With("op", "check")
	tc, err := cfg.TLSConfig()
	if err != nil {
		return err
	}
	p, err := cfg.Params()
	if err != nil {
		return cfg.Names.Bad(source.FieldParams, "%w", err)
	}
	l, err := dialAs(ctx, cfg, tc, "stomp check", source.CheckClientID(p.ClientID), log, false)
	if err != nil {
		return err
	}
	defer l.close()

	// DISCONNECT with a receipt: the receipt proves the server took the
	// login and the session ended cleanly.
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	messages := 0
	_, derr := l.disconnect(dctx, func(*inFrame) { messages++ })
	if messages > 0 {
		log.Warn("the server pushed messages to the check's connection, which never subscribed; they were not acknowledged", "count", messages)
	}
	switch {
	case derr != nil && isServerError(derr):
		return fmt.Errorf("stomp check %s: the server ended the session after the login: %w", cfg.Endpoint, l.ended(derr))
	case derr != nil && ctx.Err() != nil:
		return fmt.Errorf("stomp check %s: %w", cfg.Endpoint, ctx.Err())
	case derr != nil:
		return fmt.Errorf("stomp check %s: disconnect after the login: %w", cfg.Endpoint, derr)
	}
	return nil
}
