package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/internal/faultproxy"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// faultKind is one of the faults the soak cycles through.
type faultKind int

const (
	faultServerClose faultKind = iota // the platform closes every connection
	faultMNS503                       // every MNS request answers 503
	faultMNS429                       // MNS throttles at half the offered rate
	faultBlackhole                    // the source connection goes silent
	faultPartial                      // 10 % of batch messages fail
	faultReset                        // the source connection is reset mid-frame
	numFaults
)

// faultInfo describes a fault kind: its name and how long it lasts (0 for
// a single event).
var faultInfo = [numFaults]struct {
	name string
	dur  time.Duration
	what string
}{
	faultServerClose: {"server-close", 0, "iotsim CloseConnections: every source connection closed server-side"},
	faultMNS503:      {"mns-503", 15 * time.Second, "every MNS request answers 503 ServiceUnavailable"},
	faultMNS429:      {"mns-429", 30 * time.Second, "MNS answers 429 TooManyRequests (held 500 ms) above half the offered rate"},
	faultBlackhole:   {"src-blackhole", 10 * time.Second, "fault proxy blackhole: no byte moves on the source connections, nothing closes"},
	faultPartial:     {"mns-partial", 30 * time.Second, "10% of the messages of every BatchSendMessage fail with InternalError"},
	faultReset:       {"src-reset", 0, "fault proxy: source connections reset (RST) 700 bytes into the next downstream chunk"},
}

func (k faultKind) String() string { return faultInfo[k].name }

// plannedFault is a fault at an offset from the start of the load.
type plannedFault struct {
	Kind faultKind
	At   time.Duration // offset from the start of the load
	For  time.Duration // length; 0 for a single event
}

// schedule returns the faults of a run: one every `every` from `every` on,
// cycling through the kinds, each lasting its nominal length but at most
// half of `every`, and only those that end before `total`.
func schedule(total, every time.Duration) []plannedFault {
	if every <= 0 {
		return nil
	}
	var out []plannedFault
	for i := 0; ; i++ {
		at := time.Duration(i+1) * every
		k := faultKind(i % int(numFaults))
		d := min(faultInfo[k].dur, every/2)
		if at+d >= total {
			return out
		}
		out = append(out, plannedFault{Kind: k, At: at, For: d})
	}
}

// injected is what happened when a fault was injected.
type injected struct {
	plannedFault
	Start, End time.Time
	Note       string // e.g. connections affected
}

// inject starts fault f, waits its length (or until ctx is done) and ends
// it. It blocks for at most f.For (plus the time to arm a reset).
func (w *world) inject(ctx context.Context, f plannedFault, rate float64) injected {
	in := injected{plannedFault: f, Start: time.Now()}
	wait := func() {
		t := time.NewTimer(f.For)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	switch f.Kind {
	case faultServerClose:
		in.Note = fmt.Sprintf("%d connections logged in", w.sim.Stats().Connections)
		w.sim.CloseConnections()
	case faultMNS503:
		w.setMNSFaults(mnsemu.Faults{ErrorRate: 1, ErrorStatus: 503}, 0)
		wait()
		w.setMNSFaults(mnsemu.Faults{}, 0)
	case faultMNS429:
		w.setMNSFaults(mnsemu.Faults{ThrottleRate: rate / 2, ThrottleHold: 500 * time.Millisecond}, 0)
		wait()
		w.setMNSFaults(mnsemu.Faults{}, 0)
	case faultBlackhole:
		w.srcProxy.SetBlackhole(true)
		wait()
		w.srcProxy.SetBlackhole(false)
	case faultPartial:
		w.setMNSFaults(mnsemu.Faults{}, 0.10)
		wait()
		w.setMNSFaults(mnsemu.Faults{}, 0)
	case faultReset:
		before := w.srcProxy.Stats().Resets
		armed := w.srcProxy.ResetAfter(faultproxy.Downstream, 700)
		// A connection resets on its next chunk; wait (bounded) to report it.
		deadline := time.Now().Add(5 * time.Second)
		for w.srcProxy.Stats().Resets-before < int64(armed) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		in.Note = fmt.Sprintf("%d armed, %d reset", armed, w.srcProxy.Stats().Resets-before)
	}
	in.End = time.Now()
	return in
}

// randFloat returns a uniform float in [0, 1); safe for concurrent use.
func randFloat() float64 { return rand.Float64() }
