package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/reference"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/source"
	"github.com/iot-mns-bridge/iot-mns-bridge/bridge/stompsrc"
	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotauth"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// bridgeRequestsPerDestination is the bridge's
// delivery.max_requests_per_destination (its default, or -requests):
// ceiling (b) sends with the same concurrency, since every bench message
// goes to one queue.
var bridgeRequestsPerDestination = config.Default().Delivery.MaxRequestsPerDestination

// bridgeReadGather is source.stomp.read_gather of the bridge runs when not
// negative (-read-gather); negative keeps the bridge's default.
var bridgeReadGather time.Duration = -1

// bridgeMaxProcs is runtime.max_procs of the bridge runs when not negative
// (-max-procs); negative keeps the bridge's default.
var bridgeMaxProcs = -1

// bridgeCommitInterval is spool.commit_interval of the bridge runs with the
// spool when not negative (-commit-interval); negative keeps the default.
var bridgeCommitInterval time.Duration = -1

func (h *harness) params(clientID, group string) iotauth.Params {
	return iotauth.Params{ClientID: clientID, AccessKeyID: benchAccessKeyID, AccessKeySecret: benchAccessKeySecret,
		ConsumerGroupID: group, SignMethod: iotauth.HMACSHA1}
}

// ceilingSource is ceiling (a): the product's STOMP source alone
// (bridge/stompsrc, ack auto, conns connections) into a handler that
// accepts each delivery at once, in the harness process. It measures how
// fast the simulator can push and the source can take.
func (h *harness) ceilingSource(ctx context.Context, name string, conns, n int) (Result, error) {
	res := Result{Name: name, What: fmt.Sprintf("ceiling a: STOMP source alone (%d conn) -> discard", conns), Messages: n,
		Note: "in the harness process; no bridge CPU/RSS"}
	group := "bench-" + name
	d := config.Default().Source // the bridge's settings, as the wiring passes them
	if bridgeReadGather >= 0 {
		d.STOMP.ReadGather = bridgeReadGather
	}
	src, err := stompsrc.New(stompsrc.Config{
		Settings: source.Settings{
			Endpoint: h.tb.sim.Addr(), TLS: source.TLSOptions{CAFile: h.tb.caFile, ServerName: "localhost"},
			Params:      func() (iotauth.Params, error) { return h.params("bench-ceiling", group), nil },
			Connections: conns, DialTimeout: d.DialTimeout,
			Limiter:    source.NewAttemptLimiter(d.ConnectAttemptsPerMinute, time.Minute),
			MinBackoff: d.ReconnectMinBackoff, MaxBackoff: d.ReconnectMaxBackoff,
		},
		Destination: d.STOMP.Destination, Ack: d.STOMP.Ack,
		HeartBeat: d.STOMP.HeartBeat, CheckInterval: d.STOMP.CheckInterval, ReadGather: d.STOMP.ReadGather,
	})
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	var count atomic.Int64
	var last atomic.Int64 // unix nanos of the n-th delivery
	done := make(chan struct{})
	handler := func(ctx context.Context, d *bridge.Delivery) error {
		d.Accept()
		if count.Add(1) == int64(n) {
			last.Store(time.Now().UnixNano())
			close(done)
		}
		return nil
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(sctx, handler) }()
	defer func() {
		cancel()
		<-srcDone
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		src.Close(cctx)
		ccancel()
	}()
	if err := h.waitConnections(ctx, conns); err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	t0 := time.Now()
	pubErr := make(chan error, 1)
	go func() {
		_, err := publish(sctx, h.tb.sim, group, n, 0)
		pubErr <- err
	}()
	timeout := 60*time.Second + time.Duration(n)*500*time.Microsecond
	select {
	case <-done:
	case <-time.After(timeout):
		return res, fmt.Errorf("%s: only %d of %d delivered within %s", name, count.Load(), n, timeout)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	if err := <-pubErr; err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	res.Seconds = time.Unix(0, last.Load()).Sub(t0).Seconds()
	res.MsgsPerSec = float64(n) / res.Seconds
	return res, nil
}

// waitConnections waits until the simulator has n logged-in connections.
func (h *harness) waitConnections(ctx context.Context, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for h.tb.sim.Stats().Connections < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d connections logged in within 30s", h.tb.sim.Stats().Connections, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Let the SUBSCRIBE frames follow the logins.
	time.Sleep(50 * time.Millisecond)
	return nil
}

// mnsConfig is the MNS client of the ceilings: the emulator, the bench's
// key, the product's default settings (config.Default()) and maxConns
// connections.
func (h *harness) mnsConfig(maxConns int) mns.Config {
	d := config.Default()
	return mns.Config{Endpoint: h.tb.mnsURL, AccessKeyID: benchAccessKeyID, AccessKeySecret: benchAccessKeySecret, MaxConns: maxConns,
		Timeout: d.MNS.RequestTimeout, BodyEncoding: d.MNS.BodyEncoding, SignatureVersion: d.MNS.SignatureVersion}
}

// ceilingMNS is ceiling (b): the product's MNS client alone sending batches
// of 16 bodies of 256 bytes to the emulator at the configured latency, with
// the bridge's per-destination concurrency.
func (h *harness) ceilingMNS(ctx context.Context, name string, n int) (Result, error) {
	res := Result{Name: name, Messages: n, Note: "in the harness process; no bridge CPU/RSS",
		What: fmt.Sprintf("ceiling b: MNS client alone, batches of %d x %d concurrent", mns.MaxBatchCount, bridgeRequestsPerDestination)}
	h.tb.resetMNS(h.latency)
	c, err := mns.NewClient(h.mnsConfig(2 * bridgeRequestsPerDestination))
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	batches := make(chan [][]byte, bridgeRequestsPerDestination)
	var failed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	t0 := time.Now()
	for range bridgeRequestsPerDestination {
		wg.Go(func() {
			for b := range batches {
				_, errs := c.BatchSendMessage(ctx, benchQueue, b)
				for _, err := range errs {
					if err != nil {
						failed.Add(1)
						once.Do(func() { firstErr = err })
					}
				}
			}
		})
	}
	for i := 0; i < n; i += mns.MaxBatchCount {
		b := make([][]byte, 0, mns.MaxBatchCount)
		for j := i; j < min(n, i+mns.MaxBatchCount); j++ {
			b = append(b, makeBody(j, time.Now().UnixNano()))
		}
		select {
		case batches <- b:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(batches)
	wg.Wait()
	elapsed := time.Since(t0)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if firstErr != nil {
		return res, fmt.Errorf("%s: %d sends failed, first: %w", name, failed.Load(), firstErr)
	}
	res.Seconds = elapsed.Seconds()
	res.MsgsPerSec = float64(n) / res.Seconds
	return res, nil
}

// reference measures the reference forwarder (bench/reference) for
// sz.ReferenceFor after its first message reached MNS.
func (h *harness) reference(ctx context.Context, name string) (Result, error) {
	res := Result{Name: name, What: "reference forwarder: ack auto, 1 SendMessage per message, sequential",
		Note: "in the harness process"}
	group := "bench-" + name
	h.tb.resetMNS(h.latency)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.tb.sim.CACertPEM())
	c, err := mns.NewClient(h.mnsConfig(1))
	if err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	// Far more than it can forward in the window: it never runs dry.
	n := int(h.sz.ReferenceFor.Seconds()*2/h.latency.Seconds()) + 100
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var st reference.Stats
	runErr := make(chan error, 1)
	go func() {
		runErr <- reference.Run(rctx, reference.Config{Addr: h.tb.sim.Addr(), TLS: &tls.Config{RootCAs: pool, ServerName: "localhost"},
			Params: h.params("bench-reference", group), MNS: c, Queue: benchQueue}, &st)
	}()
	if _, err := publish(rctx, h.tb.sim, group, n, 0); err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for st.Sent.Load() == 0 {
		select {
		case err := <-runErr:
			return res, fmt.Errorf("%s: stopped before forwarding anything: %w", name, err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%s: nothing forwarded within 30s", name)
		}
	}
	sent0, t0 := st.Sent.Load(), time.Now()
	select {
	case <-time.After(h.sz.ReferenceFor):
	case err := <-runErr:
		return res, fmt.Errorf("%s: stopped: %w", name, err)
	case <-ctx.Done():
		return res, ctx.Err()
	}
	sent1, elapsed := st.Sent.Load(), time.Since(t0)
	cancel()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	res.Messages = int(sent1 - sent0)
	res.Seconds = elapsed.Seconds()
	res.MsgsPerSec = float64(res.Messages) / res.Seconds
	if f := st.Failed.Load(); f > 0 {
		res.Note += fmt.Sprintf("; %d sends failed (dropped)", f)
	}
	return res, nil
}
