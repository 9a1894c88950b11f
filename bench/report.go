package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/figures"
)

// Report is the JSON file the harness writes.
type Report struct {
	Date      string    `json:"date"`
	Command   string    `json:"command"`
	Machine   Machine   `json:"machine"`
	LatencyMs float64   `json:"mns_latency_ms"`
	Results   []Result  `json:"results"`
	Ratios    []Ratio   `json:"ratios,omitempty"`
	Targets   []Target  `json:"targets,omitempty"`
	Elapsed   float64   `json:"elapsed_seconds"`
	Errors    []string  `json:"errors,omitempty"`
	started   time.Time `json:"-"`
}

// Machine describes where the figures were taken.
type Machine struct {
	Cores     int    `json:"cores"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	// LoadBefore and LoadAfter are /proc/loadavg at the start and the end:
	// other processes share the cores.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

// Ratio is the bridge's throughput over another figure.
type Ratio struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// Target is one target of the issue, with what was measured.
type Target struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH, LoadBefore: figures.LoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

func (r *Report) result(name string) *Result {
	for i := range r.Results {
		if r.Results[i].Name == name {
			return &r.Results[i]
		}
	}
	return nil
}

// evaluate fills Ratios and Targets from the results present.
func (r *Report) evaluate() {
	br := r.result("throughput")
	ratio := func(name, other string) {
		if o := r.result(other); br != nil && o != nil && o.MsgsPerSec > 0 {
			r.Ratios = append(r.Ratios, Ratio{Name: name, Value: br.MsgsPerSec / o.MsgsPerSec})
		}
	}
	ratio("bridge / ceiling a (source alone)", "ceiling-source")
	ratio("bridge / ceiling b (MNS client alone)", "ceiling-mns")
	ratio("bridge / reference forwarder", "reference")
	if c4, b4 := r.result("ceiling-source-4conn"), r.result("throughput-4conn"); c4 != nil && b4 != nil && c4.MsgsPerSec > 0 {
		r.Ratios = append(r.Ratios, Ratio{Name: "bridge 4 conn / ceiling a 4 conn", Value: b4.MsgsPerSec / c4.MsgsPerSec})
	}
	// The goals of issue 16 (cost per message flat in the rate), with the
	// older ones they replace kept where they still say something.
	latencyMs := r.LatencyMs
	if br != nil {
		r.Targets = append(r.Targets,
			Target{Name: "throughput, one bridge process (msgs/s)", Want: ">= 60000", Got: br.MsgsPerSec, Met: br.MsgsPerSec >= 60000 && br.Lost == 0},
			Target{Name: "peak RSS at full rate (MB)", Want: "<= 48", Got: br.PeakRSSMB, Met: br.PeakRSSMB > 0 && br.PeakRSSMB <= 48},
			Target{Name: "bridge CPU per message, full rate (us)", Want: "<= 10", Got: br.CPUPerMsgUs, Met: br.CPUPerMsgUs > 0 && br.CPUPerMsgUs <= 10})
		if ref := r.result("reference"); ref != nil && ref.MsgsPerSec > 0 {
			v := br.MsgsPerSec / ref.MsgsPerSec
			r.Targets = append(r.Targets, Target{Name: "throughput / reference forwarder", Want: ">= 100", Got: v, Met: v >= 100})
		}
		ca, cb := r.result("ceiling-source"), r.result("ceiling-mns")
		if ca != nil && cb != nil && ca.MsgsPerSec > 0 && cb.MsgsPerSec > 0 {
			v := br.MsgsPerSec / min(ca.MsgsPerSec, cb.MsgsPerSec)
			r.Targets = append(r.Targets, Target{Name: "throughput / lower ceiling", Want: ">= 0.70", Got: v, Met: v >= 0.7})
		}
		if sp := r.result("throughput-spool"); sp != nil && br.CPUPerMsgUs > 0 {
			v := sp.CPUPerMsgUs / br.CPUPerMsgUs
			r.Targets = append(r.Targets, Target{Name: "CPU/msg spool on / spool off, full rate", Want: "<= 1.5", Got: v, Met: v > 0 && v <= 1.5})
		}
	}
	if l := r.result("latency"); l != nil {
		want := latencyMs + 8
		r.Targets = append(r.Targets,
			Target{Name: "p99 latency at 5000 msgs/s (ms)", Want: fmt.Sprintf("<= %.0f", want), Got: l.P99Ms, Met: l.P99Ms > 0 && l.P99Ms <= want && l.Lost == 0},
			Target{Name: "bridge CPU per message, 5000 msgs/s (us)", Want: "<= 15", Got: l.CPUPerMsgUs, Met: l.CPUPerMsgUs > 0 && l.CPUPerMsgUs <= 15})
	}
	for _, name := range []string{"outage", "outage-spool", "outage-amqp", "outage-45k"} {
		if o := r.result(name); o != nil {
			r.Targets = append(r.Targets, Target{Name: name + ": messages lost", Want: "0", Got: float64(o.Lost), Met: o.Lost == 0})
		}
	}
	if o := r.result("outage-45k"); o != nil {
		// delivery.max_in_flight_bytes (64 MiB) + 40 MiB (PeakRSSMB is in MiB).
		limit := 64.0 + 40
		r.Targets = append(r.Targets, Target{Name: "outage-45k: peak RSS (MB)", Want: fmt.Sprintf("<= %.0f", limit), Got: o.PeakRSSMB, Met: o.PeakRSSMB > 0 && o.PeakRSSMB <= limit})
	}
}

// print writes the results table, the ratios and the targets.
func (r *Report) print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\n%s  %d cores  %s  %s  load %s -> %s  MNS latency %gms\n\n", r.Date, m.Cores, m.CPUModel, m.GoVersion, m.LoadBefore, m.LoadAfter, r.LatencyMs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tmsgs\tmsgs/s\tp50 ms\tp99 ms\tp99.9 ms\tCPU s/100k\tµs/msg\tRSS MB\tlost\tdup\tdrain s\t")
	f := func(v float64, format string) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	for _, x := range r.Results {
		drain := "-"
		if strings.HasPrefix(x.Name, "outage") {
			drain = fmt.Sprintf("%.1f (resume %.1f)", x.DrainSec, x.ResumeSec)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t\n", x.Name, x.Messages, x.MsgsPerSec,
			f(x.P50Ms, "%.1f"), f(x.P99Ms, "%.1f"), f(x.P999Ms, "%.1f"), f(x.CPUPer100k, "%.2f"), f(x.CPUPerMsgUs, "%.1f"),
			f(x.PeakRSSMB, "%.1f"), x.Lost, x.Duplicates, drain)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, x := range r.Results {
		line := fmt.Sprintf("  %-22s %s", x.Name, x.What)
		if x.DrainSec > 0 {
			line += fmt.Sprintf("; backlog %d at the end of the outage, drained at %.0f msgs/s", x.Backlog, x.DrainRate)
		}
		if x.PeakRSSMB > 0 {
			line += fmt.Sprintf("; RSS at end %.1f MB anon + %.1f MB file; CPU bridge %.1f s + harness %.1f s in %.1f s",
				x.RssAnonMB, x.RssFileMB, x.BridgeCPU, x.HarnessCPU, x.Seconds)
		}
		if x.SwitchesPerMsg > 0 {
			line += fmt.Sprintf("; %.1f context switches a message", x.SwitchesPerMsg)
		}
		if x.IdleSeconds > 0 {
			line += fmt.Sprintf("; idle %.0f s: %.1f ms CPU a minute, %.1f context switches a second, %d MNS requests",
				x.IdleSeconds, x.IdleCPUMsPerMin, x.IdleSwitchesPerSec, x.MNSRequests)
		}
		if x.MsgsPerRequest > 0 {
			line += fmt.Sprintf("; %.1f msgs per MNS request", x.MsgsPerRequest)
		}
		if x.Note != "" {
			line += " (" + x.Note + ")"
		}
		fmt.Fprintln(w, line)
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nRatios (throughput):")
		for _, x := range r.Ratios {
			fmt.Fprintf(w, "  %-40s %8.2f\n", x.Name, x.Value)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets:")
		for _, t := range r.Targets {
			ok := "MET"
			if !t.Met {
				ok = "NOT MET"
			}
			fmt.Fprintf(w, "  %-42s want %-8s got %10.2f  %s\n", t.Name, t.Want, t.Got, ok)
		}
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "\nERROR: %s\n", e)
	}
}
