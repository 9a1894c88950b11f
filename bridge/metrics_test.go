package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gather: %v %v", err, mfs)
	}
	return mfs[0].GetMetric()[0].GetCounter().GetValue()
}

// throttleErr is a sink error with an HTTP status that may say it was
// throttled (like mns.Error for 429 TooManyRequests, or 400
// QpsLimitExceeded).
type throttleErr struct {
	status    int
	throttled bool
}

func (e throttleErr) Error() string   { return fmt.Sprintf("HTTP %d", e.status) }
func (e throttleErr) StatusCode() int { return e.status }
func (e throttleErr) Throttled() bool { return e.throttled }
func (e throttleErr) Retryable() bool { return e.throttled }

// Throttled sends are counted apart, whatever their HTTP status: the legacy
// QpsLimitExceeded comes with 400.
func TestMetricsCountThrottling(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	d := Destination{Kind: Queue, Name: "q"}
	m.request(d, []error{nil, throttleErr{429, true}, fmt.Errorf("wrapped: %w", throttleErr{400, true}), throttleErr{400, false}, errors.New("network")}, time.Millisecond)
	if v := counterValue(t, m.routes.throttled); v != 2 {
		t.Errorf("throttled_total = %v, want 2", v)
	}
	if v := counterValue(t, m.routes.failures.WithLabelValues("400")); v != 2 {
		t.Errorf("send_failures_total{status=400} = %v, want 2", v)
	}
}
