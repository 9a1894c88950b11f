// Package figures is what the benchmark harness (bench) and the soak
// (bench/soak) compute and write alike: the percentiles of a run's
// latencies, the machine's load average and the JSON report file.
//
// Not part of the product.
package figures

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Latencies summarises a run's publish-to-stored latencies, in
// milliseconds; all zero when nothing arrived.
type Latencies struct {
	P50, P99, P999, Max float64
}

// LatenciesOf summarises sorted (ascending) latencies.
func LatenciesOf(sorted []time.Duration) Latencies {
	l := Latencies{P50: Percentile(sorted, 0.50), P99: Percentile(sorted, 0.99), P999: Percentile(sorted, 0.999)}
	if len(sorted) > 0 {
		l.Max = ms(sorted[len(sorted)-1])
	}
	return l
}

// Percentile returns the p-th (0..1) of sorted (ascending) durations, in
// milliseconds; 0 when sorted is empty.
func Percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return ms(sorted[min(len(sorted)-1, int(float64(len(sorted))*p))])
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// LoadAvg returns the first three fields of /proc/loadavg (the load
// averages over 1, 5 and 15 minutes), "" when they cannot be read: other
// processes share the cores, and a report says how busy the machine was.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Save writes report as indented JSON to path, creating its directory,
// and tells out that it did. An empty path writes nothing.
func Save(out io.Writer, path string, report any) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	b, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	fmt.Fprintf(out, "\nwrote %s\n", path)
	return nil
}
