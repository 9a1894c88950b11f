package mns

import (
	"context"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// BenchmarkBatchSend sends batches of 16 messages of 256 bytes from the
// client to the emulator over loopback, from 8 concurrent senders (as the
// pipeline's per-destination requests would). One op is one batch. It
// reports messages per second and allocations per message for client and
// emulator together (both run in this process).
func BenchmarkBatchSend(b *testing.B) {
	emu := mnsemu.New(mnsemu.Config{AccessKeys: map[string]string{"ak": "sk"}, Queues: []string{"bench"}, StoreLimit: 4096})
	srv := httptest.NewServer(emu)
	defer srv.Close()
	c, err := NewClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk", MaxConns: 16})
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, MaxBatchCount)
	for i := range bodies {
		bodies[i] = make([]byte, 256)
		for j := range bodies[i] {
			bodies[i][j] = byte(i + j)
		}
	}
	const senders = 8
	var next sync.WaitGroup
	work := make(chan struct{}, senders)
	var failed error
	var fmu sync.Mutex
	for range senders {
		next.Go(func() {
			for range work {
				_, errs := c.BatchSendMessage(context.Background(), "bench", bodies)
				for _, err := range errs {
					if err != nil {
						fmu.Lock()
						failed = err
						fmu.Unlock()
					}
				}
			}
		})
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	next.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&ms1)
	if failed != nil {
		b.Fatal(failed)
	}
	msgs := float64(b.N * MaxBatchCount)
	b.ReportMetric(msgs/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/msgs, "allocs/msg")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/msgs, "B/msg")
	b.ReportMetric(float64(elapsed.Nanoseconds())/msgs, "ns/msg")
}
