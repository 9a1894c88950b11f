package bridge

import (
	"context"
	"sync"
)

// Keeper collects, at shutdown, the deliveries that must not be dropped:
// taken from a source that will not send them again (not Redeliverable:
// STOMP ack auto) and not yet accepted by the sink. The caller stores what
// Take returns (the spool, the dead-letter file). Safe for concurrent use;
// the zero value is ready.
type Keeper struct {
	mu   sync.Mutex
	held []*Delivery
}

// Add keeps ds.
func (k *Keeper) Add(ds ...*Delivery) {
	k.mu.Lock()
	k.held = append(k.held, ds...)
	k.mu.Unlock()
}

// Take returns what is kept and empties the keeper.
func (k *Keeper) Take() []*Delivery {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := k.held
	k.held = nil
	return out
}

// Wrap returns intake for the shutdown: a delivery that intake refuses once
// ctx is done (the pipeline is closing, the spool is closed or cannot take
// it before the hand-over deadline) and that no upstream would redeliver is
// kept instead of being lost; the source then sees it taken (nil).
func (k *Keeper) Wrap(intake Handler) Handler {
	return func(ctx context.Context, d *Delivery) error {
		err := intake(ctx, d)
		if err != nil && !d.Redeliverable() && ctx.Err() != nil {
			k.Add(d)
			return nil
		}
		return err
	}
}
