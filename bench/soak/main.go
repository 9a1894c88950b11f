// Command soak runs iot-mns-bridge for a long time under a steady load
// while injecting a fault every minute, and reports whether anything was
// lost, how long the bridge took to recover from each fault and whether its
// memory and goroutines stay flat.
//
// The IoT platform simulator (iotsim, behind a fault proxy) and the MNS
// emulator (mnsemu) run in this process on 127.0.0.1; the bridge runs as a
// child process (this binary re-executed), so its RSS is its own. It is
// not part of the product.
//
//	go run ./bench/soak [-duration 10m] [-rate 5000] [-fault-every 1m] [-json bench/results/soak.json]
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/figures"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/syncbuf"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
)

// options are the command-line flags.
type options struct {
	Duration     time.Duration // of the load
	Rate         float64       // messages a second
	FaultEvery   time.Duration // one fault each; 0: none
	SampleEvery  time.Duration
	Latency      time.Duration // MNS emulator, per request
	DrainTimeout time.Duration // after the load, for the last messages
	Bridge       bridgeSpec
	JSON         string // report path; "" writes none
	Keep         bool   // keep the working directory (config, bridge log)
	Command      string // for the report
}

func main() {
	childbridge.RunIfChild()
	var o options
	flag.DurationVar(&o.Duration, "duration", 10*time.Minute, "length of the load")
	flag.Float64Var(&o.Rate, "rate", 5000, "messages a second published to the simulator")
	flag.DurationVar(&o.FaultEvery, "fault-every", time.Minute, "inject one fault this often, cycling through the kinds (0: none); each lasts at most half of it")
	flag.DurationVar(&o.SampleEvery, "sample-every", 10*time.Second, "sample the bridge's memory, goroutines and counters this often")
	flag.DurationVar(&o.Latency, "latency", 20*time.Millisecond, "MNS emulator latency per request")
	flag.DurationVar(&o.DrainTimeout, "drain-timeout", 5*time.Minute, "after the load, how long to wait for the last messages to reach MNS")
	flag.StringVar(&o.Bridge.Ack, "ack", "client-individual", "bridge source.stomp.ack: client-individual | auto")
	flag.IntVar(&o.Bridge.Connections, "connections", 8, "bridge source.connections (the simulator lets one connection hold 32 unacked deliveries)")
	flag.BoolVar(&o.Bridge.Spool, "spool", false, "run the bridge with the local spool (recommended with -ack auto)")
	flag.StringVar(&o.JSON, "json", "", "write the report as JSON to this file (e.g. bench/results/soak.json)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the working directory with the bridge's config and log")
	flag.Parse()
	o.Command = "go run ./bench/soak " + strings.Join(os.Args[1:], " ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
	if !rep.Pass {
		os.Exit(2)
	}
}

// run runs one soak and returns its report; it writes progress and the
// table to out and the JSON to o.JSON. It blocks for o.Duration plus the
// drain (at most o.DrainTimeout) and a bounded start and stop; when ctx is
// cancelled it stops the bridge and returns ctx's error.
func run(ctx context.Context, o options, out io.Writer) (*Report, error) {
	if o.Duration <= 0 || o.Rate <= 0 || o.SampleEvery <= 0 {
		return nil, errors.New("-duration, -rate and -sample-every must be positive")
	}
	if o.Bridge.Connections <= 0 {
		o.Bridge.Connections = 1
	}
	out = &syncbuf.Buffer{To: out} // the fault goroutine reports progress too
	// A hard cap: the run stops by itself whatever happens.
	ctx, cancel := context.WithTimeout(ctx, o.Duration+o.DrainTimeout+3*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp("", "iot-mns-soak-")
	if err != nil {
		return nil, fmt.Errorf("soak: working directory: %w", err)
	}
	if o.Keep {
		fmt.Fprintf(out, "working directory (kept): %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	n := int(o.Rate * o.Duration.Seconds())
	tr := newTracker(n, time.Now())
	w, err := newWorld(dir, o.Latency, tr)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	p, err := w.startBridge(o.Bridge)
	if err != nil {
		return nil, err
	}
	defer p.Kill()
	if err := p.WaitReady(ctx, time.Minute); err != nil {
		return nil, fmt.Errorf("soak: %w", err)
	}

	rep := &Report{Command: o.Command, Started: time.Now().Format(time.RFC3339), GoVersion: runtime.Version(),
		CPUs: runtime.NumCPU(), DurationSec: o.Duration.Seconds(), Rate: o.Rate, FaultEvery: o.FaultEvery.Seconds(),
		LatencyMs: float64(o.Latency) / float64(time.Millisecond), Ack: o.Bridge.Ack, Spool: o.Bridge.Spool,
		Connections: o.Bridge.Connections, Sent: n}
	rep.LoadAvg[0] = loadAvg()
	plan := schedule(o.Duration, o.FaultEvery)
	fmt.Fprintf(out, "bridge ready (pid %d); publishing %d messages at %.0f msgs/s for %s with %d faults\n",
		p.Cmd.Process.Pid, n, o.Rate, o.Duration, len(plan))

	t0 := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	var pubErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		pubErr = publish(loadCtx, w.sim, tr, n, o.Rate, t0)
	}()
	var faults []injected
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, f := range plan {
			if !sleepUntil(loadCtx, t0.Add(f.At)) {
				return
			}
			in := w.inject(loadCtx, f, o.Rate)
			faults = append(faults, in)
			fmt.Fprintf(out, "%6.0fs fault %s for %s, over %s later %s\n", in.Start.Sub(t0).Seconds(), f.Kind, f.For,
				in.End.Sub(in.Start).Round(time.Millisecond), in.Note)
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(o.SampleEvery)
	for sampling := true; sampling; {
		select {
		case <-ctx.Done():
			tick.Stop()
			stopLoad()
			wg.Wait()
			return nil, fmt.Errorf("soak: %w", ctx.Err())
		case <-tick.C:
			s, err := w.takeSample(ctx, client, p, t0)
			if err != nil {
				rep.SampleErrs++
				fmt.Fprintf(out, "%6.0fs sample: %v\n", s.T, err)
				break
			}
			rep.Samples = append(rep.Samples, s)
			fmt.Fprintf(out, "%6.0fs rss %.1f MB heap %.1f MB goroutines %d forwarded %d backlog %d platform pending %d reconnects %d\n",
				s.T, s.VmRSSMB, s.HeapInuse, s.Goroutines, s.Forwarded, s.Backlog, s.PlatformPending, s.Reconnects)
			sampling = time.Since(t0)+o.SampleEvery/2 < o.Duration
		}
	}
	tick.Stop()
	wg.Wait() // the publisher ends at o.Duration, the faults before it
	if pubErr != nil {
		return nil, fmt.Errorf("soak: %w", pubErr)
	}
	loadEnd := time.Now()
	published, _, _ := tr.counts()
	rep.AchievedRate = float64(published) / loadEnd.Sub(t0).Seconds()
	fmt.Fprintf(out, "%6.0fs load done: %d published; waiting up to %s for the rest to reach MNS\n", time.Since(t0).Seconds(), published, o.DrainTimeout)

	waitDrained(ctx, tr, n, o.DrainTimeout)
	if d, ok := tr.recovery(tr.since(loadEnd)); ok {
		rep.DrainSec = d.Seconds()
	}
	if s, err := w.takeSample(ctx, client, p, t0); err == nil {
		rep.AfterDrain = &s
	}
	if err := p.Stop(time.Minute); err != nil {
		rep.BridgeExitErr = err.Error()
	}
	rep.LoadAvg[1] = loadAvg()

	base := tr.since(t0)
	for _, f := range faults {
		end := tr.since(f.End)
		pubBefore, storedBefore := tr.backlogAt(end)
		rec, ok := tr.recovery(end)
		rep.Faults = append(rep.Faults, faultResult{Kind: f.Kind.String(), What: faultInfo[f.Kind].what,
			AtSec: (tr.since(f.Start) - base).Seconds(), ForSec: f.End.Sub(f.Start).Seconds(), Note: f.Note,
			BacklogAtEnd: pubBefore - storedBefore, RecoverySec: rec.Seconds(), Recovered: ok})
	}
	_, rep.Arrived, rep.Duplicates = tr.counts()
	rep.Lost, rep.LostFirst = tr.lost(20)
	tr.mu.Lock()
	rep.Foreign = tr.foreign
	tr.mu.Unlock()
	lat := figures.LatenciesOf(tr.latencies())
	rep.P50Ms, rep.P99Ms, rep.P999Ms, rep.MaxMs = lat.P50, lat.P99, lat.P999, lat.Max
	rep.BridgeWarn, rep.BridgeErrors = logLines(p)
	es := w.emu.Stats()
	rep.MNSRequests, rep.MNSThrottled, rep.MNSInjectedErrors, rep.MNSPartialFailures = es.Requests, es.Throttled, es.InjectedErrors, es.PartialFailures
	ss := w.sim.Stats()
	rep.PlatformDelivered, rep.PlatformRedelivered, rep.PlatformExpired, rep.PlatformLogins = ss.Delivered, ss.Redelivered, ss.Expired, ss.LoginsOK
	rep.analyse()
	rep.writeTable(out)
	if err := figures.Save(out, o.JSON, rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// publish publishes messages 0..n-1 to the soak group at rate a second,
// paced every millisecond against t0 so it does not drift, and records each
// in tr. It stops early when ctx is done (returning nil).
func publish(ctx context.Context, sim *iotsim.Server, tr *tracker, n int, rate float64, t0 time.Time) error {
	for i := 0; i < n; {
		due := min(n, int(time.Since(t0).Seconds()*rate)+1)
		for ; i < due; i++ {
			now := time.Now()
			dev := "dev-" + strconv.Itoa(i%soakDevices)
			m := iotsim.Message{Topic: "/" + soakProductKey + "/" + dev + "/user/telemetry",
				MessageID: "soak-" + strconv.Itoa(i), GenerateTime: now.UnixMilli(), Body: makeBody(i, dev)}
			if err := sim.PublishContext(ctx, soakGroup, m); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("publish message %d: %w", i, err)
			}
			tr.markPublished(i, now)
		}
		if i < n && !sleepUntil(ctx, time.Now().Add(time.Millisecond)) {
			return nil
		}
	}
	return nil
}

// waitDrained waits until all n messages are stored, ctx is done or
// timeout passes.
func waitDrained(ctx context.Context, tr *tracker, n int, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		if _, u, _ := tr.counts(); u >= n {
			return
		}
		if time.Now().After(deadline) || !sleepUntil(ctx, time.Now().Add(50*time.Millisecond)) {
			return
		}
	}
}

// sleepUntil sleeps until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// loadAvg returns the first three fields of /proc/loadavg, "?" when they
// cannot be read.
func loadAvg() string { return cmp.Or(figures.LoadAvg(), "?") }

// durationOf converts seconds to a Duration.
func durationOf(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
