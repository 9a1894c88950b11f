package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
)

// ShutdownReason is the dead-letter reason of a message that MNS had not
// accepted at shutdown and that the platform will not send again (STOMP ack
// auto without the spool). `iot-mns-bridge replay` sends such entries like
// any other.
const ShutdownReason = "shutdown: not yet accepted by MNS when shutdown_timeout passed, and the source does not redeliver it (stomp ack auto without a spool); send it with iot-mns-bridge replay"

// SpoolRefusedReason is the dead-letter reason of such a message when the
// spool is on but did not take it: its writes failed (a full disk), so the
// message was held in memory and never reached the spool.
const SpoolRefusedReason = "shutdown: not yet accepted by MNS, and the spool could not store it (its writes failed: see the log's spool lines); the source does not redeliver it (stomp ack auto); send it with iot-mns-bridge replay"

// keepCounts says where the kept messages went, and the reason the
// dead-letter file's entries were given.
type keepCounts struct {
	spooled, deadLettered, lost int
	reason                      string
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
		rest = sp.AppendAll(kept)
		c.spooled = len(kept) - len(rest)
	}
	if len(rest) == 0 {
		return c
	}
	msgs := make([]bridge.Message, len(rest))
	for i, d := range rest {
		msgs[i] = d.Message
	}
	c.reason = ShutdownReason
	if sp != nil {
		c.reason = SpoolRefusedReason
	}
	if err := b.dead.WriteFile(msgs, c.reason, time.Now()); err != nil {
		ids := make([]string, 0, min(len(rest), 20))
		for _, d := range rest[:min(len(rest), 20)] {
			ids = append(ids, d.MessageID)
		}
		b.log.Error("LOST at shutdown: messages MNS had not accepted could be written neither to the spool nor to the dead-letter file",
			"count", len(rest), "err", fmt.Errorf("delivery.dead_letter.file: %w", err), "message_ids", strings.Join(ids, ","))
		c.lost = len(rest)
		return c
	}
	c.deadLettered = len(rest)
	return c
}
