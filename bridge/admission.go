package bridge

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/broadcast"
)

// heldOverhead is what a held delivery costs beyond its body, topic, id and
// properties: the Delivery, the pipeline's item and the source's token,
// about 0.5 KB measured. It is counted so that the byte bound also holds
// for many small messages.
const heldOverhead = 512

// heldSize is what a delivery counts against the pipeline's byte bound: its
// body as the heap holds it (heapSize of its capacity), its topic, id and
// properties, and heldOverhead.
func heldSize(m *Message) int64 {
	n := heldOverhead + heapSize(cap(m.Body)) + len(m.Topic) + len(m.MessageID)
	for k, v := range m.Properties {
		n += len(k) + len(v) + 16
	}
	return int64(n)
}

// heapSize is what an allocation of n bytes takes on the Go heap: above
// 32 KiB whole 8 KiB pages (a 45 KiB body's base64 text, 61,440 bytes,
// takes 65,536). Below, the size classes waste at most 12.5% and
// heldOverhead covers it.
func heapSize(n int) int {
	const page, large = 8 << 10, 32 << 10
	if n <= large {
		return n
	}
	return (n + page - 1) &^ (page - 1)
}

// admission bounds what the pipeline holds at once, in deliveries and in
// bytes (heldSize). acquire blocks while either bound is reached, which is
// how backpressure reaches the sources: a STOMP connection stops reading
// its socket, an AMQP link stops issuing credit. With the spool on, the
// spool's feeder is what blocks: the source goes on into the spool until
// it is full. One delivery is always
// admitted when nothing is held, whatever its size, so a message larger
// than the byte bound cannot stall the pipeline.
//
// Reaching a bound is logged once, and clearing it (when the pipeline holds
// at most half of both bounds again) once; when the bounds are reached again
// and again, at most once a stateLogEvery. Safe for concurrent use.
type admission struct {
	maxCount, maxBytes int64
	names              Names // what the log calls the bounds
	log                *slog.Logger
	now                func() time.Time

	mu        sync.Mutex
	count     int64
	bytes     int64
	released  broadcast.Signal
	full      bool      // a bound was reached and logged, not yet cleared
	fullSince time.Time // when it was
	lastLog   time.Time // when reaching a bound was last logged
}

func newAdmission(maxCount int, maxBytes int64, names Names, log *slog.Logger, now func() time.Time) *admission {
	return &admission{maxCount: int64(maxCount), maxBytes: maxBytes, names: names, log: log, now: now}
}

// acquire takes room for one delivery of n bytes. When there is room it
// never fails, even if ctx is done; otherwise it waits until a release
// makes room, ctx is done (ctx's error) or closed is closed (ErrClosed).
func (a *admission) acquire(ctx context.Context, closed <-chan struct{}, n int64) error {
	for {
		a.mu.Lock()
		if a.count == 0 || (a.count < a.maxCount && a.bytes+n <= a.maxBytes) {
			a.count++
			a.bytes += n
			a.mu.Unlock()
			return nil
		}
		if now := a.now(); !a.full && (a.lastLog.IsZero() || now.Sub(a.lastLog) >= stateLogEvery) {
			a.full, a.fullSince, a.lastLog = true, now, now
			bound := a.names.Of(FieldMaxInFlightBytes)
			if a.count >= a.maxCount {
				bound = a.names.Of(FieldMaxInFlight)
			}
			a.log.Warn("the pipeline holds as much as it may; nothing more enters it until MNS takes messages (the source stops reading; with the spool on, the source goes on into the spool)",
				"bound", bound, "messages", a.count, "bytes", a.bytes,
				"max_in_flight", a.maxCount, "max_in_flight_bytes", a.maxBytes)
		}
		wake := a.released.Wait()
		a.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return ErrClosed
		}
	}
}

// release gives back the room of one delivery of n bytes.
func (a *admission) release(n int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.count--
	a.bytes -= n
	a.released.Notify()
	if a.full && a.count <= a.maxCount/2 && a.bytes <= a.maxBytes/2 {
		a.full = false
		a.log.Info("the pipeline has room again; messages enter it again",
			"messages", a.count, "bytes", a.bytes, "after", a.now().Sub(a.fullSince).Round(time.Millisecond))
	}
}

// held returns the deliveries and bytes held.
func (a *admission) held() (count, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count, a.bytes
}
