package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/figures"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// sizes are the loads of one harness run.
type sizes struct {
	Messages     int           // messages of each throughput run
	Rate         float64       // messages/s of the latency and outage runs
	LatencyFor   time.Duration // length of a latency run
	OutageBefore time.Duration // outage run: normal traffic before the outage,
	Outage       time.Duration // the outage (every MNS request fails with 503),
	OutageAfter  time.Duration // and normal traffic after it
	ReferenceFor time.Duration // how long the reference forwarder is measured
	// BigRate is the rate of the memory scenario's outage runs, whose
	// bodies are bigBodySize bytes.
	BigRate float64
	// SmallFor is the length of each smallbox run at a rate, IdleFor of
	// its idle run, Settle the wait after the bridge is ready before a
	// smallbox run takes its figures.
	SmallFor, IdleFor, Settle time.Duration
}

// bigBodySize is the body size of the memory scenario: large messages.
const bigBodySize = 45 << 10

// fullSizes and shortSizes are the loads of a normal and a -short run.
var (
	fullSizes = sizes{Messages: 200_000, Rate: 5000, LatencyFor: 20 * time.Second,
		OutageBefore: 15 * time.Second, Outage: 30 * time.Second, OutageAfter: 15 * time.Second, ReferenceFor: 10 * time.Second,
		BigRate: 100, SmallFor: 20 * time.Second, IdleFor: time.Minute, Settle: 3 * time.Second}
	shortSizes = sizes{Messages: 20_000, Rate: 5000, LatencyFor: 3 * time.Second,
		OutageBefore: 2 * time.Second, Outage: 5 * time.Second, OutageAfter: 2 * time.Second, ReferenceFor: 3 * time.Second,
		BigRate: 100, SmallFor: 3 * time.Second, IdleFor: 5 * time.Second, Settle: time.Second}
)

// Result is the outcome of one measured run.
type Result struct {
	Name        string  `json:"name"`
	What        string  `json:"what"`
	Messages    int     `json:"messages"`
	Lost        int     `json:"lost"`
	Duplicates  int     `json:"duplicates"`
	Seconds     float64 `json:"seconds"`
	MsgsPerSec  float64 `json:"msgs_per_sec"`
	P50Ms       float64 `json:"p50_ms,omitempty"`
	P99Ms       float64 `json:"p99_ms,omitempty"`
	P999Ms      float64 `json:"p999_ms,omitempty"`
	MaxMs       float64 `json:"max_ms,omitempty"`
	BridgeCPU   float64 `json:"bridge_cpu_seconds,omitempty"`
	CPUPer100k  float64 `json:"bridge_cpu_seconds_per_100k,omitempty"`
	CPUPerMsgUs float64 `json:"bridge_cpu_us_per_msg,omitempty"`
	PeakRSSMB   float64 `json:"bridge_peak_rss_mb,omitempty"`
	// RSS split at the end of the load (not the peak).
	RssAnonMB float64 `json:"bridge_rss_anon_mb_at_end,omitempty"`
	RssFileMB float64 `json:"bridge_rss_file_mb_at_end,omitempty"`
	// HarnessCPU is the CPU seconds of the harness process (simulator,
	// emulator, publisher) during the load: with BridgeCPU, how much of
	// the machine the run used.
	HarnessCPU float64 `json:"harness_cpu_seconds,omitempty"`
	// MNSRequests is how many requests the emulator answered during the
	// load; MsgsPerRequest is messages stored per request (the batch size
	// the bridge reached).
	MNSRequests    int64   `json:"mns_requests,omitempty"`
	MsgsPerRequest float64 `json:"msgs_per_request,omitempty"`
	DrainSec       float64 `json:"drain_seconds,omitempty"`
	// ResumeSec is the time from the end of the outage to the first message
	// stored after it: how long the bridge's retry backoff left MNS idle.
	ResumeSec float64 `json:"resume_seconds,omitempty"`
	// DrainRate is messages stored a second between the end of the outage
	// and the end of the drain (the backlog plus the new traffic).
	DrainRate float64 `json:"drain_msgs_per_sec,omitempty"`
	Backlog   int     `json:"backlog_at_outage_end,omitempty"`
	Note      string  `json:"note,omitempty"`
	// SwitchesPerMsg is the bridge's context switches (its threads'
	// wake-ups) a message during the load.
	SwitchesPerMsg float64 `json:"bridge_switches_per_msg,omitempty"`
	// IdleSeconds, IdleCPUMsPerMin and IdleSwitchesPerSec are the figures
	// of an idle run (smallbox): nothing published for IdleSeconds.
	IdleSeconds        float64 `json:"idle_seconds,omitempty"`
	IdleCPUMsPerMin    float64 `json:"idle_cpu_ms_per_min,omitempty"`
	IdleSwitchesPerSec float64 `json:"idle_switches_per_sec,omitempty"`
}

// harness runs scenarios against one testbed.
type harness struct {
	tb      *testbed
	latency time.Duration
	sz      sizes
	log     io.Writer // progress lines
}

// bridgeLoad runs the bridge as a child process with spec, publishes n
// messages (at rate a second, or as fast as possible when rate is 0) and
// waits until all are in MNS. profile, when set, is where the child writes
// a CPU profile.
func (h *harness) bridgeLoad(ctx context.Context, name, what string, spec bridgeSpec, n int, rate float64, profile string) (Result, error) {
	res := Result{Name: name, What: what, Messages: n}
	r, err := h.startLoad(ctx, name, spec, profile, func(ctx context.Context, group string) error {
		_, err := publish(ctx, h.tb.sim, group, n, rate)
		return err
	})
	if err != nil {
		return res, err
	}
	defer r.close()
	timeout := 60 * time.Second
	if rate > 0 {
		timeout += time.Duration(float64(n) / rate * float64(time.Second))
	} else {
		timeout += time.Duration(n) * 500 * time.Microsecond // as slow as 2,000 msgs/s
	}
	a := waitStored(ctx, h.tb.emu, n, timeout)
	if err := r.usage(&res); err != nil {
		return res, err
	}
	res.MNSRequests = h.tb.emu.Stats().Requests - r.requests0
	if err := r.stop(name); err != nil {
		return res, err
	}
	res.fill(a, r.t0)
	if res.MNSRequests > 0 {
		res.MsgsPerRequest = float64(a.unique) / float64(res.MNSRequests)
	}
	if rate > 0 {
		res.latency(a)
	}
	if a.lost() > 0 {
		res.Note = fmt.Sprintf("%d not in MNS after %s", a.lost(), timeout)
	}
	return res, nil
}

// loadRun is a measured run under way: the bridge child, ready, and the
// publisher sending to it.
type loadRun struct {
	p         *childbridge.Proc
	before    childbridge.Stat
	self0     time.Duration // the harness's CPU time at the start
	requests0 int64         // the emulator's request count at the start
	t0        time.Time     // when publishing started
	cancel    context.CancelFunc
	pubErr    chan error
}

// startLoad starts the bridge for run name with spec (profile: see
// bridgeLoad) on an emptied MNS, waits until it is ready, takes the
// figures the run is measured from and starts pub with the run's consumer
// group.
func (h *harness) startLoad(ctx context.Context, name string, spec bridgeSpec, profile string, pub func(ctx context.Context, group string) error) (*loadRun, error) {
	group := "bench-" + name
	h.tb.resetMNS(h.latency)
	p, err := h.tb.startBridge(name, group, spec, profile)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, 30*time.Second); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if spec.Settle > 0 {
		select {
		case <-ctx.Done():
			p.Kill()
			return nil, ctx.Err()
		case <-time.After(spec.Settle):
		}
	}
	before, err := p.Stat()
	if err != nil {
		p.Kill()
		return nil, err
	}
	r := &loadRun{p: p, before: before, self0: selfCPU(), requests0: h.tb.emu.Stats().Requests, pubErr: make(chan error, 1)}
	pctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	r.t0 = time.Now()
	go func() { r.pubErr <- pub(pctx, group) }()
	return r, nil
}

// usage sets res's CPU (the bridge's and the harness's) and memory figures
// since the start.
func (r *loadRun) usage(res *Result) error {
	after, err := r.p.Stat()
	if err != nil {
		return err
	}
	res.HarnessCPU = (selfCPU() - r.self0).Seconds()
	res.bridgeUsage(r.before, after)
	return nil
}

// stop ends the publisher and stops the bridge (it drains first).
func (r *loadRun) stop(name string) error {
	r.cancel()
	if err := <-r.pubErr; err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := r.p.Stop(30 * time.Second); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// close kills what is left of the run (error paths).
func (r *loadRun) close() {
	r.cancel()
	r.p.Kill()
}

// fill sets counts and throughput from what arrived.
func (r *Result) fill(a arrivals, t0 time.Time) {
	r.Lost, r.Duplicates = a.lost(), a.duplicates
	if a.unique > 0 {
		r.Seconds = a.last.Sub(t0).Seconds()
		r.MsgsPerSec = float64(a.unique) / r.Seconds
	}
}

// bridgeUsage sets the bridge process's CPU and peak RSS. The CPU is its
// threads' run time (Stat.Run) when /proc has it, else its CPU ticks.
func (r *Result) bridgeUsage(before, after childbridge.Stat) {
	cpu := (after.CPU - before.CPU).Seconds()
	if after.Run > 0 {
		cpu = (after.Run - before.Run).Seconds()
	}
	r.BridgeCPU = cpu
	if r.Messages > 0 {
		r.CPUPer100k = cpu / float64(r.Messages) * 100_000
		r.CPUPerMsgUs = cpu / float64(r.Messages) * 1e6
	}
	if r.Messages > 0 {
		r.SwitchesPerMsg = float64(after.Switches-before.Switches) / float64(r.Messages)
	}
	r.PeakRSSMB = float64(after.PeakRSSKB) / 1024
	r.RssAnonMB, r.RssFileMB = float64(after.RssAnonKB)/1024, float64(after.RssFileKB)/1024
}

// latency sets the percentiles of publish-to-stored latency.
func (r *Result) latency(a arrivals) {
	l := figures.LatenciesOf(a.latencies())
	r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs = l.P50, l.P99, l.P999, l.Max
}

// outage publishes at a fixed rate while MNS answers every request with 503
// ServiceUnavailable for sz.Outage in the middle, then checks that every
// message arrived and measures the drain: the time from the end of the
// outage until the last message published before that end was in MNS.
func (h *harness) outage(ctx context.Context, name, what string, spec bridgeSpec) (Result, error) {
	return h.outageSized(ctx, name, what, spec, h.sz.Rate, bodySize)
}

// outageSized is outage at rate messages a second with bodies of size
// bytes.
func (h *harness) outageSized(ctx context.Context, name, what string, spec bridgeSpec, rate float64, size int) (Result, error) {
	sz := h.sz
	n := int(rate * (sz.OutageBefore + sz.Outage + sz.OutageAfter).Seconds())
	res := Result{Name: name, What: what, Messages: n}
	r, err := h.startLoad(ctx, name, spec, "", func(ctx context.Context, group string) error {
		_, err := publishSized(ctx, h.tb.sim, group, n, rate, size)
		return err
	})
	if err != nil {
		return res, err
	}
	defer r.close()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(sz.OutageBefore); err != nil {
		return res, err
	}
	h.tb.emu.SetFaults(mnsemu.Faults{Latency: h.latency, ErrorRate: 1, ErrorStatus: 503})
	failed0 := h.tb.emu.Stats().InjectedErrors
	fmt.Fprintf(h.log, "  MNS outage: every request fails with 503 for %s\n", sz.Outage)
	if err := sleep(sz.Outage); err != nil {
		return res, err
	}
	h.tb.emu.SetFaults(mnsemu.Faults{Latency: h.latency})
	outageEnd := time.Now()
	storedAtEnd := h.tb.emu.Stats().Sent
	failed := h.tb.emu.Stats().InjectedErrors - failed0
	fmt.Fprintf(h.log, "  MNS back; %d requests failed in the outage (%.1f/s)\n", failed, float64(failed)/sz.Outage.Seconds())
	timeout := sz.OutageAfter + 3*time.Minute
	a := waitStored(ctx, h.tb.emu, n, timeout)
	if err := r.usage(&res); err != nil {
		return res, err
	}
	if err := r.stop(name); err != nil {
		return res, err
	}
	res.fill(a, r.t0)
	res.latency(a)
	var drained, resumed time.Time
	publishedBeforeEnd := 0
	for i, t := range a.stored {
		if t.After(outageEnd) && (resumed.IsZero() || t.Before(resumed)) {
			resumed = t
		}
		if a.sentNs[i] != 0 && a.sentNs[i] < outageEnd.UnixNano() {
			publishedBeforeEnd++
			if t.After(drained) {
				drained = t
			}
		}
	}
	if !drained.IsZero() {
		res.DrainSec = drained.Sub(outageEnd).Seconds()
		inDrain := 0
		for _, t := range a.stored {
			if t.After(outageEnd) && !t.After(drained) {
				inDrain++
			}
		}
		if res.DrainSec > 0 {
			res.DrainRate = float64(inDrain) / res.DrainSec
		}
	}
	if !resumed.IsZero() {
		res.ResumeSec = resumed.Sub(outageEnd).Seconds()
	}
	res.Backlog = publishedBeforeEnd - int(storedAtEnd)
	if a.lost() > 0 {
		res.Note = fmt.Sprintf("LOST %d (not in MNS %s after the outage)", a.lost(), timeout)
	}
	return res, nil
}

// selfCPU is the user + system CPU time of the harness process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// withProperties is bridgeLoad with mns.properties.platform and a group id
// per device, and checks that every stored message carries them.
func (h *harness) withProperties(ctx context.Context, name, what string, n int) (Result, error) {
	res, err := h.bridgeLoad(ctx, name, what, bridgeSpec{Connections: 1, Properties: true}, n, 0, "")
	if err != nil {
		return res, err
	}
	missing := 0
	for _, m := range h.tb.emu.Messages(benchQueue) {
		_, topic := m.UserProperty("topic")
		_, id := m.UserProperty("messageId")
		_, gen := m.UserProperty("generateTime")
		if !topic || !id || !gen || m.MessageGroupID == "" {
			missing++
		}
	}
	if missing > 0 {
		return res, fmt.Errorf("%s: %d stored messages lack the platform properties or the group id", name, missing)
	}
	return res, nil
}
