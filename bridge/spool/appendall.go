package spool

import (
	"context"
	"sync"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
)

// AppendAll appends the messages of ds and waits for their commits (at most
// 10 s); it returns the deliveries whose message is not in the spool. The
// bridge stores with it, at shutdown, what no upstream would send again
// (bridge.Keeper), for the next start to send.
func (s *Spool) AppendAll(ds []*bridge.Delivery) []*bridge.Delivery {
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
		err := s.Append(ctx, &d.Message, func(_ uint64, err error) {
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
