package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/bench/internal/childbridge"
)

// sample is one look at the bridge and the testbed.
type sample struct {
	T          float64 `json:"t_seconds"` // since the load started
	VmRSSMB    float64 `json:"vmrss_mb"`  // from /proc/<pid>/status
	ProcRSSMB  float64 `json:"process_resident_memory_mb"`
	HeapInuse  float64 `json:"go_memstats_heap_inuse_mb"`
	Goroutines int     `json:"go_goroutines"`
	Forwarded  int64   `json:"forwarded_total"` // iot_mns_bridge_forwarded_total
	Received   int64   `json:"received_total"`
	Reconnects int64   `json:"reconnects_total"` // summed over connections
	Published  int     `json:"published"`
	Stored     int     `json:"stored_unique"`
	// Backlog is published − stored: what is on its way (platform queue,
	// bridge, MNS requests in flight).
	Backlog int `json:"backlog"`
	// PlatformPending is the simulator's queued + unacked deliveries.
	PlatformPending int `json:"platform_pending"`
}

// metricNames are the series read from the bridge's /metrics.
var metricNames = []string{
	"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes",
	"iot_mns_bridge_forwarded_total", "iot_mns_bridge_received_total", "iot_mns_bridge_source_reconnects_total",
}

// parseMetrics reads the Prometheus text format and returns, for each name
// in want, the sum of its samples over all label sets. Names not present
// are absent from the map.
func parseMetrics(r io.Reader, want []string) (map[string]float64, error) {
	wanted := make(map[string]bool, len(want))
	for _, n := range want {
		wanted[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if !wanted[name] {
			continue
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				return nil, fmt.Errorf("parse metrics: unterminated labels in %q", line)
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest) // value [timestamp]
		if len(f) == 0 {
			return nil, fmt.Errorf("parse metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("parse metrics: value of %q: %w", line, err)
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return out, nil
}

// scrape fetches the bridge's /metrics and returns the metricNames.
func scrape(ctx context.Context, client *http.Client, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("scrape bridge metrics: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape bridge metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape bridge metrics: HTTP %s", resp.Status)
	}
	return parseMetrics(resp.Body, metricNames)
}

// takeSample reads the bridge's /metrics and /proc and the testbed's
// counters. A failed scrape leaves the metric fields zero and is returned
// as the error, with the rest of the sample filled.
func (w *world) takeSample(ctx context.Context, client *http.Client, p *childbridge.Proc, t0 time.Time) (sample, error) {
	s := sample{T: time.Since(t0).Seconds()}
	var pub, uniq int
	pub, uniq, _ = w.tr.counts()
	s.Published, s.Stored, s.Backlog = pub, uniq, pub-uniq
	s.PlatformPending = w.sim.Stats().Pending
	st, rssErr := p.Stat()
	rss := st.RSSKB * 1024
	s.VmRSSMB = mb(rss)
	m, err := scrape(ctx, client, p.HTTPAddr)
	if err != nil {
		return s, err
	}
	s.ProcRSSMB = mb(int64(m["process_resident_memory_bytes"]))
	s.HeapInuse = mb(int64(m["go_memstats_heap_inuse_bytes"]))
	s.Goroutines = int(m["go_goroutines"])
	s.Forwarded = int64(m["iot_mns_bridge_forwarded_total"])
	s.Received = int64(m["iot_mns_bridge_received_total"])
	s.Reconnects = int64(m["iot_mns_bridge_source_reconnects_total"])
	return s, rssErr
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
