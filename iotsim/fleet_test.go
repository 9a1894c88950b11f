package iotsim

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-stomp/stomp/v3"
)

var fixedClock = func() time.Time { return time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC) }

func TestFleetShapes(t *testing.T) {
	tests := []struct {
		kind   string
		topic  string // regexp
		keys   []string
		checks map[string]any // key → exact JSON value
	}{
		{KindTelemetry, `^/pk1/device-000[01]/user/telemetry$`, []string{"deviceName", "seq", "temperature", "humidity", "timestamp"}, nil},
		{KindStatus, `^/as/mqtt/status/pk1/device-000[01]$`, []string{"status", "productKey", "deviceName", "time", "utcTime", "lastTime", "utcLastTime"},
			map[string]any{"productKey": "pk1", "time": "2024-05-06 15:08:09.123", "utcTime": "2024-05-06T07:08:09.123Z"}},
		{KindProperty, `^/pk1/device-000[01]/thing/event/property/post$`, []string{"iotId", "productKey", "deviceName", "gmtCreate", "deviceType", "items", "checkFailedData"},
			map[string]any{"gmtCreate": float64(fixedClock().UnixMilli())}},
		{KindEvent, `^/pk1/device-000[01]/thing/event/alarm/post$`, []string{"identifier", "name", "type", "iotId", "productKey", "deviceName", "gmtCreate", "value", "time", "checkFailedData"},
			map[string]any{"identifier": "alarm"}},
		{KindLifecycle, `^/pk1/device-000[01]/thing/lifecycle$`, []string{"action", "iotId", "productKey", "deviceName", "messageCreateTime"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			f := Fleet{ProductKey: "pk1", Devices: 2, Types: []string{tt.kind}, Clock: fixedClock}
			for i := range 8 {
				m := f.Message(i)
				if !regexp.MustCompile(tt.topic).MatchString(m.Topic) {
					t.Fatalf("message %d topic %q does not match %s", i, m.Topic, tt.topic)
				}
				var body map[string]any
				if err := json.Unmarshal(m.Body, &body); err != nil {
					t.Fatalf("message %d body %q: %v", i, m.Body, err)
				}
				for _, k := range tt.keys {
					if _, ok := body[k]; !ok {
						t.Errorf("message %d body lacks %q: %s", i, k, m.Body)
					}
				}
				for k, want := range tt.checks {
					if body[k] != want {
						t.Errorf("message %d %s = %v, want %v", i, k, body[k], want)
					}
				}
			}
		})
	}
}

func TestFleetCyclesStateAndKinds(t *testing.T) {
	f := Fleet{ProductKey: "pk", Devices: 1, Types: []string{KindStatus, KindLifecycle}, Clock: fixedClock}
	var got []string
	for i := range 8 {
		var body map[string]any
		json.Unmarshal(f.Message(i).Body, &body)
		v, _ := body["status"].(string)
		if a, ok := body["action"].(string); ok {
			v = a
			if _, has := body["deviceSecret"]; has != (a == "create") {
				t.Errorf("%s body has deviceSecret = %v", a, has)
			}
		}
		if _, has := body["clientIp"]; v == "offline" && has {
			t.Error("offline status carries a clientIp")
		}
		got = append(got, v)
	}
	want := "online create offline enable online disable offline delete"
	if strings.Join(got, " ") != want {
		t.Fatalf("sequence %q, want %q", strings.Join(got, " "), want)
	}
}

func TestFleetBinaryBodies(t *testing.T) {
	f := Fleet{Devices: 3, Types: []string{KindBinary}, Topics: []string{"raw"}, Seed: 7}
	seen := map[string]bool{}
	for i := range 50 {
		m := f.Message(i)
		if !strings.HasSuffix(m.Topic, "/user/raw") {
			t.Fatalf("topic %q", m.Topic)
		}
		if binary.BigEndian.Uint64(m.Body) != uint64(i) || !bytes.Contains(m.Body, []byte{0, 0xff}) {
			t.Fatalf("body %d = %x, want the sequence number then 00 ff", i, m.Body)
		}
		if seen[string(m.Body)] {
			t.Fatalf("body %d repeats", i)
		}
		seen[string(m.Body)] = true
		if again := f.Message(i); !bytes.Equal(again.Body, m.Body) {
			t.Fatalf("body %d is not reproducible", i)
		}
	}
}

func TestFleetTopicsAndDevicesRotate(t *testing.T) {
	f := Fleet{ProductKey: "pk", Devices: 2, Topics: []string{"a", "/b/c/"}}
	var got []string
	for i := range 4 {
		got = append(got, f.Message(i).Topic)
	}
	want := []string{"/pk/device-0000/user/a", "/pk/device-0001/user/a", "/pk/device-0000/user/b/c", "/pk/device-0001/user/b/c"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("topics %v, want %v", got, want)
	}
}

func TestFleetValidate(t *testing.T) {
	err := Fleet{Devices: -1, Rate: -2, Count: -3, Duration: -time.Second, ProductKey: "a/b", Topics: []string{"x/#"}, Types: []string{"telemetry", "gossip"}}.Validate()
	if err == nil {
		t.Fatal("invalid fleet passed")
	}
	for _, field := range []string{"devices:", "rate:", "count:", "duration:", "productKey:", "topics:", `types: "gossip"`} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error lacks %s: %v", field, err)
		}
	}
	if err := (Fleet{Types: Kinds}).Validate(); err != nil {
		t.Fatalf("every kind: %v", err)
	}
	if _, err := (Fleet{Types: []string{"nope"}}).Run(context.Background(), func(Message) {}); err == nil {
		t.Fatal("Run accepted an invalid fleet")
	}
}

func TestFleetRunStopsByItself(t *testing.T) {
	tests := []struct {
		name    string
		fleet   Fleet
		wantMin int
		wantMax int
	}{
		{"count", Fleet{Count: 25, Types: Kinds}, 25, 25},
		{"count with rate", Fleet{Count: 5, Rate: 500}, 5, 5},
		// At most one message per 1/Rate of Duration, plus the one at t=0.
		{"duration with rate", Fleet{Duration: 50 * time.Millisecond, Rate: 200}, 1, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Message
			n, err := tt.fleet.Run(context.Background(), func(m Message) { got = append(got, m) })
			if err != nil {
				t.Fatal(err)
			}
			if n != len(got) || n < tt.wantMin || n > tt.wantMax {
				t.Fatalf("published %d (returned %d), want %d..%d", len(got), n, tt.wantMin, tt.wantMax)
			}
		})
	}
}

func TestFleetRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n, err := Fleet{Rate: 1e6}.Run(ctx, func(m Message) {
		if binaryOrSeq(m) >= 9 {
			cancel()
		}
	})
	if err != nil || n != 10 {
		t.Fatalf("published %d, err %v; want 10 then a stop", n, err)
	}
}

func binaryOrSeq(m Message) int {
	var b struct{ Seq int }
	json.Unmarshal(m.Body, &b)
	return b.Seq
}

func TestFleetThroughServer(t *testing.T) {
	s := startServer(t, Config{})
	sub := subscribe(t, mustDial(t, s, params("fleet")), stomp.AckAuto)
	f := Fleet{Devices: 3, Count: 30, Types: Kinds, Clock: fixedClock}
	if _, err := f.Run(context.Background(), func(m Message) { s.Publish(testGroup, m) }); err != nil {
		t.Fatal(err)
	}
	var topics []string
	for range 30 {
		topics = append(topics, recv(t, sub).Header.Get("topic"))
	}
	var want []string
	for i := range 30 {
		want = append(want, f.Message(i).Topic)
	}
	sort.Strings(topics)
	sort.Strings(want)
	if strings.Join(topics, "\n") != strings.Join(want, "\n") {
		t.Fatalf("topics differ:\n%v\nwant\n%v", topics, want)
	}
}
