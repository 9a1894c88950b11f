package mns

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
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
	c, err := newClient(Config{Endpoint: srv.URL, AccessKeyID: "ak", AccessKeySecret: "sk", MaxConns: 16})
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

// BenchmarkPropertiesPerMessage is the client-side cost of the platform
// properties (five, as mns.properties.platform attaches them) and a group
// id on one message: the limits check and the XML. One op is one message.
func BenchmarkPropertiesPerMessage(b *testing.B) {
	m := bridge.Outgoing{Body: make([]byte, 256), ID: "1733055600000000001", GroupID: "dev-01", Properties: []bridge.Property{
		{Name: "topic", Value: "/a1BenchProduct/dev-01/user/telemetry", Type: bridge.PropString},
		{Name: "messageId", Value: "1733055600000000001", Type: bridge.PropString},
		{Name: "generateTime", Value: "1733055600123", Type: bridge.PropNumber},
		{Name: "productKey", Value: "a1BenchProduct", Type: bridge.PropString},
		{Name: "deviceName", Value: "dev-01", Type: bridge.PropString},
	}}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for range b.N {
		if _, _, err := checkProps(&m); err != nil {
			b.Fatal(err)
		}
		buf = appendProps(buf[:0], &m)
	}
	b.ReportMetric(float64(len(buf)), "xml-bytes/msg")
}

// BenchmarkSign compares the per-request cost of the V2 and V4 signatures
// (one op is one request of a batch of 16).
func BenchmarkSign(b *testing.B) {
	h := http.Header{"Content-Type": {contentType}, "X-Mns-Version": {APIVersion}, "X-Mns-User-Request-Id": {"0123456789abcdef0123456789abcdef"},
		"Date": {"Mon, 30 Nov 2026 12:00:00 GMT"}}
	b.Run("v2", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			var sb [256]byte
			sts := appendStringToSign(sb[:0], "POST", "", contentType, "Mon, 30 Nov 2026 12:00:00 GMT", canonUserRequestID+"0123456789abcdef0123456789abcdef\n"+canonVersion, "/queues/telemetry-a1/messages")
			_ = authorization("ak", "sk", sts)
		}
	})
	b.Run("v4", func(b *testing.B) {
		var kc v4KeyCache
		b.ReportAllocs()
		for range b.N {
			var cb [256]byte
			canon := appendV4CanonicalRequest(cb[:0], "POST", "/queues/telemetry-a1/messages", nil, h)
			_ = v4Aliyun.authorization("ak", "20261130T120000Z", "cn-hangzhou", kc.get("sk", "20261130", "cn-hangzhou"), canon)
		}
	})
}
