package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// bodySize is the size of every device message body.
const bodySize = 256

// makeBody returns a 256-byte JSON telemetry body that carries its sequence
// number and the publish time in Unix nanoseconds, so that latency is
// measured from the body (the bridge runs with envelope: raw), at a finer
// grain than the millisecond generateTime header.
func makeBody(seq int, sentNs int64) []byte {
	return makeBodySized(seq, sentNs, bodySize)
}

// makeBodySized is makeBody with a body of size bytes (at least about 120).
func makeBodySized(seq int, sentNs int64, size int) []byte {
	b := make([]byte, 0, size)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, sentNs, 10)
	b = append(b, `,"device":"dev-`...)
	b = strconv.AppendInt(b, int64(seq%benchDevices), 10)
	b = append(b, `","temperature":21.5,"humidity":48.2,"battery":97,"pad":"`...)
	for len(b) < size-2 {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// parseBody reads seq and ts back from a makeBody body.
func parseBody(b []byte) (seq int, sentNs int64, ok bool) {
	num := func(key string) (int64, bool) {
		i := bytes.Index(b, []byte(key))
		if i < 0 {
			return 0, false
		}
		j := i + len(key)
		k := j
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		v, err := strconv.ParseInt(string(b[j:k]), 10, 64)
		return v, err == nil
	}
	s, ok1 := num(`{"seq":`)
	t, ok2 := num(`,"ts":`)
	return int(s), t, ok1 && ok2
}

// messageSized returns message seq as the platform would push it, with a
// body of size bytes.
func messageSized(seq int, now time.Time, size int) iotsim.Message {
	dev := "dev-" + strconv.Itoa(seq%benchDevices)
	return iotsim.Message{
		Topic:        "/" + benchProductKey + "/" + dev + "/user/telemetry",
		MessageID:    "bench-" + strconv.Itoa(seq),
		GenerateTime: now.UnixMilli(),
		Body:         makeBodySized(seq, now.UnixNano(), size),
	}
}

// publish publishes messages 0..n-1 to group, as fast as the simulator
// takes them when rate is 0, else at rate messages a second (paced every
// millisecond against the start time, so it does not drift). It returns the
// time of the first publish. It stops early when ctx is done.
func publish(ctx context.Context, sim *iotsim.Server, group string, n int, rate float64) (time.Time, error) {
	return publishSized(ctx, sim, group, n, rate, bodySize)
}

// publishSized is publish with bodies of size bytes.
func publishSized(ctx context.Context, sim *iotsim.Server, group string, n int, rate float64, size int) (time.Time, error) {
	start := time.Now()
	for i := 0; i < n; {
		due := n
		if rate > 0 {
			due = min(n, int(time.Since(start).Seconds()*rate)+1)
		}
		for ; i < due; i++ {
			if err := sim.PublishContext(ctx, group, messageSized(i, time.Now(), size)); err != nil {
				return start, fmt.Errorf("publish message %d: %w", i, err)
			}
		}
		if rate > 0 && i < n {
			select {
			case <-ctx.Done():
				return start, ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	return start, nil
}

// arrivals is what reached the emulator, by sequence number.
type arrivals struct {
	n          int
	stored     []time.Time // first EnqueueTime of seq; zero when lost
	sentNs     []int64     // publish time of seq
	unique     int
	duplicates int
	foreign    int // bodies that are not ours
	last       time.Time
}

func (a arrivals) lost() int { return a.n - a.unique }

// collect reads everything stored in the bench queue and matches it to
// messages 0..n-1.
func collect(emu *mnsemu.Emulator, n int) arrivals {
	a := arrivals{n: n, stored: make([]time.Time, n), sentNs: make([]int64, n)}
	for _, m := range emu.Messages(benchQueue) {
		body, err := m.DecodedBody()
		if err != nil {
			a.foreign++
			continue
		}
		seq, ts, ok := parseBody(body)
		if !ok || seq < 0 || seq >= n {
			a.foreign++
			continue
		}
		if !a.stored[seq].IsZero() {
			a.duplicates++
			continue
		}
		a.stored[seq], a.sentNs[seq] = m.EnqueueTime, ts
		a.unique++
		if m.EnqueueTime.After(a.last) {
			a.last = m.EnqueueTime
		}
	}
	return a
}

// waitStored waits until all n messages are in the emulator, ctx is done or
// timeout passes, and returns what arrived.
func waitStored(ctx context.Context, emu *mnsemu.Emulator, n int, timeout time.Duration) arrivals {
	deadline := time.Now().Add(timeout)
	for {
		if emu.Stats().Sent >= int64(n) {
			a := collect(emu, n)
			if a.lost() == 0 {
				return a
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return collect(emu, n)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// latencies returns the sorted publish-to-stored latencies of the messages
// that arrived.
func (a arrivals) latencies() []time.Duration {
	out := make([]time.Duration, 0, a.unique)
	for i, t := range a.stored {
		if !t.IsZero() {
			out = append(out, t.Sub(time.Unix(0, a.sentNs[i])))
		}
	}
	slices.Sort(out)
	return out
}
