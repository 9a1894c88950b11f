package main

import (
	"context"
	"fmt"
	"time"
)

// smallBoxRates are the rates of the smallbox scenario: what an edge box
// with one core forwards (1–500 msgs/s), where the cost of a message is
// not the full rate's (a request carries few messages, timers and
// wake-ups are paid by few messages).
var smallBoxRates = []float64{10, 100, 500}

// smallBox runs the bridge with spec at each of smallBoxRates for
// sz.SmallFor, at full rate (sz.Messages) and idle for sz.IdleFor, each
// run a bridge of its own that settles for a few seconds after it is
// ready before its figures are taken. Name prefixes every result's name.
func (h *harness) smallBox(ctx context.Context, name, what string, spec bridgeSpec, add func(Result, error)) {
	spec.Settle = h.sz.Settle
	for _, rate := range smallBoxRates {
		n := max(1, int(rate*h.sz.SmallFor.Seconds()))
		add(h.bridgeLoad(ctx, fmt.Sprintf("%s-%.0f", name, rate), fmt.Sprintf("%s, %.0f msgs/s", what, rate), spec, n, rate, ""))
	}
	add(h.bridgeLoad(ctx, name+"-max", what+", max rate", spec, h.sz.Messages, 0, ""))
	add(h.idle(ctx, name+"-idle", what+", idle", spec))
}

// idle runs the bridge with spec and publishes nothing for sz.IdleFor: its
// CPU and wake-ups while a box has no traffic.
func (h *harness) idle(ctx context.Context, name, what string, spec bridgeSpec) (Result, error) {
	res := Result{Name: name, What: what}
	r, err := h.startLoad(ctx, name, spec, "", func(context.Context, string) error { return nil })
	if err != nil {
		return res, err
	}
	defer r.close()
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(h.sz.IdleFor):
	}
	after, err := r.p.Stat()
	if err != nil {
		return res, err
	}
	res.IdleSeconds = time.Since(r.t0).Seconds()
	if err := r.usage(&res); err != nil {
		return res, err
	}
	res.IdleCPUMsPerMin = res.BridgeCPU * 1000 / (res.IdleSeconds / 60)
	res.IdleSwitchesPerSec = float64(after.Switches-r.before.Switches) / res.IdleSeconds
	res.MNSRequests = h.tb.emu.Stats().Requests - r.requests0
	if err := r.stop(name); err != nil {
		return res, err
	}
	return res, nil
}
