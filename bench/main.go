// Command bench is the iot-mns-bridge benchmark harness: NOT part of the
// product. It runs the bridge as a separate process between the IoT
// platform simulator (STOMP over TLS) and the MNS emulator (with a
// per-request latency), both on 127.0.0.1 in this process, and measures
// throughput, latency, CPU, memory and recovery from an MNS outage, next to
// a reference forwarder that behaves like the official samples (package
// bench/reference) and to two ceilings: the STOMP source alone and the MNS
// client alone.
//
//	go run ./bench [-scenarios all|throughput,latency,outage,spool,connections,properties,amqp]
//	               [-latency 20ms] [-messages 200000] [-json bench/results/latest.json] [-short]
//	go run ./bench -profile cpu.out   # CPU (and cpu.out.allocs allocation) profile of the bridge process at full rate
//	go run ./bench -profile cpu.out -profile-amqp -profile-credit 1000   # the same over AMQP (-profile-connections N)
//
// It prints a table and writes a JSON report. Every run stops by itself.
// See bench/README.md for the figures and what limits them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/figures"
)

// scenarioNames are the values of -scenarios, in the order they run;
// allScenarios are those -scenarios all runs (smallbox, about 7 minutes,
// only when named).
var (
	scenarioNames = append(slices.Clone(allScenarios), "smallbox")
	allScenarios  = []string{"throughput", "latency", "outage", "spool", "connections", "properties", "amqp", "memory"}
)

// options are the harness's flags.
type options struct {
	Scenarios []string
	Latency   time.Duration
	Sizes     sizes
	JSON      string
	Profile   string
	// ProfileRate is the publish rate of the profile run; 0 is max.
	ProfileRate float64
	// ProfileSpool runs the profile with the spool on.
	ProfileSpool bool
	// ProfileAMQP, when Protocol is "amqp", runs the profile over the
	// simulator's AMQP listener with its connections and credit.
	ProfileAMQP bridgeSpec
	Command     string
	// BoundOnly runs only the memory scenario's first row (the defaults),
	// not the count-only comparison.
	BoundOnly bool
}

func main() {
	childbridge.RunIfChild()
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Minute)
	defer cancel()
	if _, err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, errOut io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(errOut)
	scen := fs.String("scenarios", "all", "comma-separated: "+strings.Join(scenarioNames, ",")+" (or all: all but smallbox)")
	latency := fs.Duration("latency", 20*time.Millisecond, "latency the MNS emulator adds to every request")
	messages := fs.Int("messages", 0, "messages of each throughput run (default 200000, 20000 with -short)")
	jsonPath := fs.String("json", "bench/results/latest.json", "where to write the JSON report (empty: none)")
	short := fs.Bool("short", false, "small loads and a 5 s outage: the whole harness in about a minute")
	profile := fs.String("profile", "", "instead of the scenarios, write a CPU profile of the bridge process at full rate to `FILE` (and its allocation profile to FILE.allocs)")
	profileRate := fs.Float64("profile-rate", 0, "messages/s of the -profile run (0: as fast as possible)")
	profileSpool := fs.Bool("profile-spool", false, "the -profile run with the spool on")
	profileAMQP := fs.Bool("profile-amqp", false, "the -profile run over the simulator's AMQP 1.0 listener")
	profileConns := fs.Int("profile-connections", 1, "connections of the -profile run")
	profileCredit := fs.Int("profile-credit", 0, "source.amqp.credit of the -profile-amqp run (0: the default)")
	boundOnly := fs.Bool("memory-bound-only", false, "memory scenario: run only the row with the defaults (outage-45k), not the count-only comparison")
	gather := fs.Duration("read-gather", -1, "source.stomp.read_gather of the bridge runs (negative: the bridge's default)")
	maxProcs := fs.Int("max-procs", -1, "runtime.max_procs of the bridge runs (negative: the bridge's default; 0: automatic)")
	commitInterval := fs.Duration("commit-interval", -1, "spool.commit_interval of the bridge runs with the spool (negative: the bridge's default)")
	smallFor := fs.Duration("small-for", 0, "smallbox: length of each run at a rate (default 20s, 3s with -short)")
	idleFor := fs.Duration("idle", 0, "smallbox: length of the idle run (default 1m, 5s with -short)")
	requests := fs.Int("requests", 0, "delivery.max_requests_per_destination of the bridge runs and the concurrency of ceiling b (0: the bridge's default)")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	o := options{Latency: *latency, JSON: *jsonPath, Profile: *profile, ProfileRate: *profileRate, Sizes: fullSizes, BoundOnly: *boundOnly,
		Command: strings.TrimSpace("go run ./bench " + strings.Join(args, " "))}
	if *short {
		o.Sizes = shortSizes
	}
	if *messages > 0 {
		o.Sizes.Messages = *messages
	}
	if *smallFor > 0 {
		o.Sizes.SmallFor = *smallFor
	}
	if *idleFor > 0 {
		o.Sizes.IdleFor = *idleFor
	}
	if *requests < 0 {
		return o, errors.New("-requests must not be negative")
	}
	bridgeReadGather = *gather
	bridgeMaxProcs = *maxProcs
	bridgeCommitInterval = *commitInterval
	o.ProfileSpool = *profileSpool
	if *profileConns < 1 || *profileCredit < 0 {
		return o, errors.New("-profile-connections must be at least 1 and -profile-credit not negative")
	}
	o.ProfileAMQP = bridgeSpec{Connections: *profileConns, Credit: *profileCredit}
	if *profileAMQP {
		o.ProfileAMQP.Protocol = "amqp"
	}
	if *requests > 0 {
		bridgeRequestsPerDestination = *requests
	}
	if o.Latency <= 0 {
		return o, errors.New("-latency must be positive")
	}
	if *scen == "all" {
		o.Scenarios = allScenarios
	} else {
		for _, s := range strings.Split(*scen, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(scenarioNames, s) {
				return o, fmt.Errorf("-scenarios: unknown %q (use %s or all)", s, strings.Join(scenarioNames, ","))
			}
			o.Scenarios = append(o.Scenarios, s)
		}
	}
	return o, nil
}

// run runs the selected scenarios (or the profile), prints the table to out
// and writes the JSON report. Scenario failures are recorded in the report
// and make run return an error after all have run.
func run(ctx context.Context, o options, out io.Writer) (*Report, error) {
	dir, err := os.MkdirTemp("", "iot-mns-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	tb, err := newTestbed(dir)
	if err != nil {
		return nil, err
	}
	defer tb.Close()
	h := &harness{tb: tb, latency: o.Latency, sz: o.Sizes, log: out}
	rep := &Report{Date: time.Now().Format(time.RFC3339), Command: o.Command, Machine: machine(),
		LatencyMs: float64(o.Latency) / float64(time.Millisecond), started: time.Now()}

	if o.Profile != "" {
		spec := o.ProfileAMQP
		spec.Spool = o.ProfileSpool
		return rep, h.profile(ctx, o.Profile, o.ProfileRate, spec, out)
	}
	last := time.Now()
	add := func(r Result, err error) {
		took := time.Since(last)
		last = time.Now()
		if err != nil {
			fmt.Fprintf(out, "  FAILED: %v\n", err)
			rep.Errors = append(rep.Errors, err.Error())
			return
		}
		fmt.Fprintf(out, "  %-22s %8.0f msgs/s  lost %d  (run took %.1f s)\n", r.Name, r.MsgsPerSec, r.Lost, took.Seconds())
		rep.Results = append(rep.Results, r)
	}
	sz := o.Sizes
	latencyN := int(sz.Rate * sz.LatencyFor.Seconds())
	for _, s := range o.Scenarios {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(out, "== %s\n", s)
		switch s {
		case "throughput":
			add(h.ceilingSource(ctx, "ceiling-source", 1, sz.Messages))
			add(h.ceilingMNS(ctx, "ceiling-mns", sz.Messages))
			add(h.reference(ctx, "reference"))
			add(h.bridgeLoad(ctx, "throughput", "bridge, 1 conn, spool off, max rate", bridgeSpec{Connections: 1}, sz.Messages, 0, ""))
		case "latency":
			add(h.bridgeLoad(ctx, "latency", fmt.Sprintf("bridge, 1 conn, spool off, %.0f msgs/s", sz.Rate), bridgeSpec{Connections: 1}, latencyN, sz.Rate, ""))
		case "outage":
			add(h.outage(ctx, "outage", fmt.Sprintf("bridge, spool off, %.0f msgs/s, MNS 503 for %s", sz.Rate, sz.Outage), bridgeSpec{Connections: 1}))
		case "spool":
			add(h.bridgeLoad(ctx, "throughput-spool", "bridge, 1 conn, spool on, max rate", bridgeSpec{Connections: 1, Spool: true}, sz.Messages, 0, ""))
			add(h.bridgeLoad(ctx, "latency-spool", fmt.Sprintf("bridge, 1 conn, spool on, %.0f msgs/s", sz.Rate), bridgeSpec{Connections: 1, Spool: true}, latencyN, sz.Rate, ""))
			add(h.outage(ctx, "outage-spool", fmt.Sprintf("bridge, spool on, %.0f msgs/s, MNS 503 for %s", sz.Rate, sz.Outage), bridgeSpec{Connections: 1, Spool: true}))
		case "properties":
			// The cost of MNS message properties: the same load without and
			// with mns.properties.platform (five properties and a group id a
			// message), back to back.
			add(h.bridgeLoad(ctx, "throughput-noprops", "bridge, 1 conn, spool off, max rate, no properties", bridgeSpec{Connections: 1}, sz.Messages, 0, ""))
			add(h.withProperties(ctx, "throughput-props", "bridge, 1 conn, spool off, max rate, platform properties + group id", sz.Messages))
		case "amqp":
			// The same runs as throughput, latency and outage, over the
			// simulator's AMQP 1.0 listener (the platform's rules).
			amqp := bridgeSpec{Protocol: "amqp", Connections: 1}
			add(h.bridgeLoad(ctx, "throughput-amqp", "bridge, AMQP, 1 conn, spool off, max rate", amqp, sz.Messages, 0, ""))
			add(h.bridgeLoad(ctx, "latency-amqp", fmt.Sprintf("bridge, AMQP, 1 conn, spool off, %.0f msgs/s", sz.Rate), amqp, latencyN, sz.Rate, ""))
			add(h.outage(ctx, "outage-amqp", fmt.Sprintf("bridge, AMQP, spool off, %.0f msgs/s, MNS 503 for %s", sz.Rate, sz.Outage), amqp))
			// The link credit bounds what is in flight per connection (64
			// by default): at most credit messages per MNS round trip.
			add(h.bridgeLoad(ctx, "throughput-amqp-credit1000", "bridge, AMQP, 1 conn, spool off, max rate, source.amqp.credit 1000",
				bridgeSpec{Protocol: "amqp", Connections: 1, Credit: 1000}, sz.Messages, 0, ""))
			// The platform pushes about 1,000 msgs/s per connection: 5,000
			// msgs/s takes five connections there.
			add(h.bridgeLoad(ctx, "latency-amqp-5conn", fmt.Sprintf("bridge, AMQP, 5 conn, spool off, %.0f msgs/s", sz.Rate),
				bridgeSpec{Protocol: "amqp", Connections: 5}, latencyN, sz.Rate, ""))
		case "memory":
			// Large bodies through an MNS outage: what the bridge holds is
			// bounded in bytes (delivery.max_in_flight_bytes, 64 MiB), not
			// only in messages (8,192, which is ~370 MB of 45 KB bodies).
			// The second row lifts the byte bound to 1 GiB: the count bound
			// alone, as before it existed.
			what := fmt.Sprintf("bridge, spool off, 45 KB bodies at %.0f msgs/s, MNS 503 for %s", sz.BigRate, sz.Outage)
			add(h.outageSized(ctx, "outage-45k", what+", max_in_flight_bytes 64MiB", bridgeSpec{Connections: 1}, sz.BigRate, bigBodySize))
			if o.BoundOnly {
				break
			}
			add(h.outageSized(ctx, "outage-45k-count-only", what+", max_in_flight_bytes 1GiB (count bound only)", bridgeSpec{Connections: 1, MaxInFlightBytes: "1GiB"}, sz.BigRate, bigBodySize))
		case "smallbox":
			// What a small edge box pays: CPU per message at 10, 100
			// and 500 msgs/s and at full rate, and idle, over STOMP
			// without and with the spool (with ack auto the default)
			// and over AMQP.
			h.smallBox(ctx, "small-stomp", "bridge, STOMP, 1 conn, spool off", bridgeSpec{Connections: 1}, add)
			h.smallBox(ctx, "small-spool", "bridge, STOMP, 1 conn, spool on", bridgeSpec{Connections: 1, Spool: true}, add)
			h.smallBox(ctx, "small-amqp", "bridge, AMQP, 1 conn", bridgeSpec{Protocol: "amqp", Connections: 1}, add)
		case "connections":
			add(h.ceilingSource(ctx, "ceiling-source-4conn", 4, sz.Messages))
			add(h.bridgeLoad(ctx, "throughput-4conn", "bridge, 4 conn, spool off, max rate", bridgeSpec{Connections: 4}, sz.Messages, 0, ""))
		}
	}
	rep.Machine.LoadAfter = figures.LoadAvg()
	rep.Elapsed = time.Since(rep.started).Seconds()
	rep.evaluate()
	rep.print(out)
	if err := figures.Save(out, o.JSON, rep); err != nil {
		return rep, err
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("bench: stopped: %w", ctx.Err())
	}
	if len(rep.Errors) > 0 {
		return rep, fmt.Errorf("bench: %d runs failed (see above)", len(rep.Errors))
	}
	return rep, nil
}

// profile runs the bridge process at full rate with a CPU profile of
// itself (so the profile holds the bridge alone, not the simulator and the
// emulator) and prints the top entries.
func (h *harness) profile(ctx context.Context, path string, rate float64, spec bridgeSpec, out io.Writer) error {
	spool := "off"
	if spec.Spool {
		spool = "on"
	}
	proto := "STOMP"
	if spec.Protocol == "amqp" {
		proto = "AMQP"
		if spec.Credit > 0 {
			proto = fmt.Sprintf("AMQP credit %d", spec.Credit)
		}
	}
	fmt.Fprintf(out, "== profile: bridge process, %s, %d conn, spool %s, %d messages at %s\n", proto, spec.Connections, spool, h.sz.Messages, rateText(rate))
	r, err := h.bridgeLoad(ctx, "profile", "bridge under CPU profile", spec, h.sz.Messages, rate, path)
	if err != nil {
		return err
	}
	lat := ""
	if rate > 0 {
		lat = fmt.Sprintf(", p50 %.1f ms, p99 %.1f ms", r.P50Ms, r.P99Ms)
	}
	fmt.Fprintf(out, "  %.0f msgs/s, %.1f µs CPU/msg, peak RSS %.1f MB (with the profiler on), %.1f msgs per MNS request%s\n",
		r.MsgsPerSec, r.CPUPerMsgUs, r.PeakRSSMB, r.MsgsPerRequest, lat)
	fmt.Fprintf(out, "  profile: %s  (go tool pprof -top %s)\n", path, path)
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", path)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(out, "  (go tool pprof failed: %v)\n", err)
	}
	allocs := path + ".allocs"
	fmt.Fprintf(out, "  allocation profile: %s  (go tool pprof -sample_index=alloc_space -top %s)\n", allocs, allocs)
	cmd = exec.CommandContext(ctx, "go", "tool", "pprof", "-sample_index=alloc_space", "-top", "-nodecount=20", allocs)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(out, "  (go tool pprof failed: %v)\n", err)
	}
	return nil
}

func rateText(rate float64) string {
	if rate <= 0 {
		return "max rate"
	}
	return fmt.Sprintf("%.0f msgs/s", rate)
}
