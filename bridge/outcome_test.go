package bridge

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// tooLarge is a sink error that classifies itself, as mns.ErrBodyTooLarge
// does.
type tooLarge struct{}

func (tooLarge) Error() string                    { return "body over the limit" }
func (tooLarge) DeadLetterClass() DeadLetterClass { return ClassTooLarge }

// TestDeadLetterClassesAreSetWhereDecided: the sink's classified refusal
// keeps its class through wrapping, any other refusal is "rejected", and the
// dead_lettered_total label is the class, not a guess from the reason text
// (the reason here says "too large" but the error is not classified).
func TestDeadLetterClassesAreSetWhereDecided(t *testing.T) {
	sink := newFakeSink(func(call, i int, o Outgoing) error {
		switch {
		case strings.HasSuffix(o.ID, "1"):
			return Permanent(fmt.Errorf("message %s: %w", o.ID, tooLarge{}))
		case strings.HasSuffix(o.ID, "2"):
			return Permanent(errors.New("InvalidArgument: the body is too large, says the server"))
		}
		return nil
	})
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	h := newHarness(t, sink, func(c *PipelineConfig) { c.Metrics = m })
	h.feed(t, 10, userTopic)
	h.settleAll(t, 10, Accepted)
	if e, ok := h.dead.has("m00001"); !ok || e.Class != ClassTooLarge {
		t.Errorf("classified refusal: %+v %v, want class %s", e, ok, ClassTooLarge)
	}
	if e, ok := h.dead.has("m00002"); !ok || e.Class != ClassRejected {
		t.Errorf("plain refusal: %+v %v, want class %s", e, ok, ClassRejected)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "iot_mns_bridge_dead_lettered_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				got[l.GetValue()] += mt.GetCounter().GetValue()
			}
		}
	}
	if want := map[string]float64{"too_large": 1, "rejected": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("dead_lettered_total by reason = %v, want %v", got, want)
	}
}

func TestClassOf(t *testing.T) {
	if got := ClassOf(fmt.Errorf("wrapped: %w", Permanent(tooLarge{})), ClassRejected); got != ClassTooLarge {
		t.Errorf("ClassOf(wrapped classified) = %s", got)
	}
	if got := ClassOf(errors.New("x"), ClassRejected); got != ClassRejected {
		t.Errorf("ClassOf(plain) = %s, want the default", got)
	}
}
