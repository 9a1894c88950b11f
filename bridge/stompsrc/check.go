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

	type result struct {
		err      error // the first server ERROR on the subscription
		messages int
	}
	res := make(chan result, 1)
	go func() {
		var r result
		for m := range l.sub.C {
			switch {
			case m.Err == nil:
				r.messages++
			case r.err == nil && isServerError(m.Err):
				r.err = m.Err
			}
		}
		res <- r
	}()
	// DISCONNECT with a receipt: the server handles frames in order, so the
	// receipt proves it took the SUBSCRIBE. (go-stomp's Unsubscribe can miss
	// its own wake-up and time out, so it is not used.)
	derr := l.conn.Disconnect()
	l.raw.Close() // ends the subscription channel in every case; no ACK was sent
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		return fmt.Errorf("stomp check %s: %w", cfg.Endpoint, ctx.Err())
	}
	if r.messages > 0 {
		log.Warn("messages arrived during the check; not acknowledged, so the platform sends them again", "count", r.messages, "configured_ack", configured)
	}
	switch {
	case r.err != nil:
		return fmt.Errorf("stomp check %s: subscribe to %s refused: %w", cfg.Endpoint, cfg.Destination, l.ended(r.err))
	case derr != nil && isServerError(derr):
		return fmt.Errorf("stomp check %s: subscribe to %s refused: %w", cfg.Endpoint, cfg.Destination, l.ended(derr))
	case derr != nil:
		return fmt.Errorf("stomp check %s: disconnect after subscribing to %s: %w", cfg.Endpoint, cfg.Destination, derr)
	}
	return nil
}
