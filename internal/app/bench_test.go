package app

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/spool"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// ackCounter is a fake source's settler: it counts accepted deliveries.
type ackCounter struct{ n atomic.Int64 }

func (a *ackCounter) Settle(_ *bridge.Delivery, o bridge.Outcome) {
	if o == bridge.Accepted {
		a.n.Add(1)
	}
}

// BenchmarkPipelineToEmulator drives the real pipeline and MNS sink from a
// fake source (deliveries handed straight to the intake) into the MNS
// emulator over loopback with 20 ms latency per request, spool off and on.
// It reports messages per second, the mean batch fill and allocations per
// message (allocs/op: one op is one message).
func BenchmarkPipelineToEmulator(b *testing.B) {
	for _, spooled := range []bool{false, true} {
		name := "spool=off"
		if spooled {
			name = "spool=on"
		}
		b.Run(name, func(b *testing.B) { benchPipeline(b, spooled) })
	}
}

func benchPipeline(b *testing.B, withSpool bool) {
	p := startPeers(b, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, StoreLimit: 1000, Faults: mnsemu.Faults{Latency: 20 * time.Millisecond}}, iotsim.Config{})
	c := p.config()
	if withSpool {
		c.Spool.Dir = filepath.Join(p.dir, fmt.Sprintf("spool-%d", b.N))
	}
	path := p.writeConfig(b, c)
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	br, err := New(cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	intake := br.pipeline.Handle
	if withSpool {
		sp, err := spool.Open(spool.Options{Dir: cfg.Spool.Dir, MaxBytes: int64(cfg.Spool.MaxBytes), CommitInterval: cfg.Spool.CommitInterval})
		if err != nil {
			b.Fatal(err)
		}
		defer sp.Close()
		s := spool.NewStage(sp, br.pipeline.Handle, slog.New(slog.DiscardHandler))
		intake = s.Intake
		go s.Feed(ctx)
	}
	body := []byte(`{"temperature":21.5,"humidity":40,"voltage":3.31,"seq":0000000,"pad":"` + strings.Repeat("x", 180) + `"}`)
	acks := &ackCounter{}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		m := bridge.Message{Topic: "/pk1/dev1/user/telemetry", MessageID: fmt.Sprintf("b-%d", i), Body: body}
		if err := intake(ctx, bridge.NewDelivery(m, acks, nil)); err != nil {
			b.Fatal(err)
		}
	}
	for br.pipeline.Stats().Forwarded < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := br.pipeline.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Forwarded)/float64(max(st.Requests, 1)), "msgs/request")
	drainCtx, c2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer c2()
	br.pipeline.Drain(drainCtx)
}
