//go:build unix

package mns

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkBatchRequestGoroutine is BenchmarkBatchRequest's request of one
// message from a goroutine kept between requests (as the pipeline's
// senders are since bridge/senders.go) and from a new goroutine each
// request (as before): the new goroutine starts with a small stack and
// grows it, copying it each time, during the request. cpu-µs/op is the
// process's CPU time (client and loopback server), so the difference of
// the two is what a new goroutine per request costs; at 500 msgs/s a
// request carries about 4–5 messages.
func BenchmarkBatchRequestGoroutine(b *testing.B) {
	b.Run("kept", func(b *testing.B) {
		send := cannedBatch(b, 1)
		cpu0 := processCPU(b)
		for b.Loop() {
			send()
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	})
	b.Run("new", func(b *testing.B) {
		send := cannedBatch(b, 1)
		done := make(chan struct{})
		cpu0 := processCPU(b)
		for b.Loop() {
			go func() {
				send()
				done <- struct{}{}
			}()
			<-done
		}
		b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
	})
}

// processCPU is the process's user plus system time.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
