package app

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// ShutdownReason is the dead-letter reason of a message that MNS had not
// accepted at shutdown and that the platform will not send again (STOMP ack
// auto without the spool). `iot-mns-bridge replay` sends such entries like
// any other.
const ShutdownReason = "shutdown: not yet accepted by MNS when shutdown_timeout passed, and the source does not redeliver it (stomp ack auto without a spool); send it with iot-mns-bridge replay"

// keeper collects the deliveries that must not be dropped at shutdown: taken
// from a source that will not send them again (STOMP ack auto), and not yet
// accepted by MNS. Safe for concurrent use.
type keeper struct {
	mu   sync.Mutex
	held []*bridge.Delivery
}

func (k *keeper) add(ds ...*bridge.Delivery) {
	k.mu.Lock()
	k.held = append(k.held, ds...)
	k.mu.Unlock()
}

func (k *keeper) take() []*bridge.Delivery {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.held
	k.held = nil
	return out
}

// keeping wraps intake for the shutdown: a delivery that intake refuses
// (the pipeline is closing, the spool is closed or cannot take it before
// the hand-over deadline) and that no upstream would redeliver is kept
// instead of being lost; the source then sees it taken.
func keeping(intake bridge.Handler, k *keeper) bridge.Handler {
	return func(ctx context.Context, d *bridge.Delivery) error {
		err := intake(ctx, d)
		if err != nil && !d.Redeliverable() && ctx.Err() != nil {
			k.add(d)
			return nil
		}
		return err
	}
}

// keepCounts says where the kept messages went.
type keepCounts struct {
	spooled, deadLettered, lost int
}

// store puts the kept messages where the next start (spool) or `replay`
// (dead-letter file) finds them: the spool when one is open and takes them,
// else the dead-letter file. What neither takes is lost and logged by id.
func (b *Bridge) store(kept []*bridge.Delivery, sp *spool.Spool) keepCounts {
	var c keepCounts
	if len(kept) == 0 {
		return c
	}
	rest := kept
	if sp != nil {
		rest = appendAll(sp, kept)
		c.spooled = len(kept) - len(rest)
	}
	if len(rest) == 0 {
		return c
	}
	msgs := make([]bridge.Message, len(rest))
	for i, d := range rest {
		msgs[i] = d.Message
	}
	if err := b.dead.WriteFile(msgs, ShutdownReason, time.Now()); err != nil {
		ids := make([]string, 0, min(len(rest), 20))
		for _, d := range rest[:min(len(rest), 20)] {
			ids = append(ids, d.MessageID)
		}
		b.log.Error("LOST at shutdown: messages MNS had not accepted could be written neither to the spool nor to the dead-letter file",
			"count", len(rest), "err", err, "message_ids", strings.Join(ids, ","))
		c.lost = len(rest)
		return c
	}
	c.deadLettered = len(rest)
	return c
}

// appendAll appends ds to the spool and waits for the commits; it returns
// the deliveries whose message is not in the spool.
func appendAll(sp *spool.Spool, ds []*bridge.Delivery) []*bridge.Delivery {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		failed []*bridge.Delivery
	)
	fail := func(d *bridge.Delivery) {
		mu.Lock()
		failed = append(failed, d)
		mu.Unlock()
	}
	for _, d := range ds {
		wg.Add(1)
		err := sp.Append(ctx, &d.Message, func(_ uint64, err error) {
			if err != nil {
				fail(d)
			}
			wg.Done()
		})
		if err != nil {
			wg.Done()
			fail(d)
		}
	}
	wg.Wait()
	return failed
}
