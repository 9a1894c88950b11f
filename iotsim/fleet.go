package iotsim

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Message kinds a Fleet generates, with the platform's topics and body
// shapes (protocol brief section 5).
const (
	// KindTelemetry: custom topic /{pk}/{dn}/user/{topic}, a JSON body.
	KindTelemetry = "telemetry"
	// KindBinary: custom topic /{pk}/{dn}/user/{topic}, raw bytes that
	// include NUL and invalid UTF-8; the first 8 bytes are the sequence
	// number, big endian, so every body differs.
	KindBinary = "binary"
	// KindStatus: /as/mqtt/status/{pk}/{dn}, online and offline in turn.
	KindStatus = "status"
	// KindProperty: /{pk}/{dn}/thing/event/property/post, the platform's
	// formatted property body with items.
	KindProperty = "property"
	// KindEvent: /{pk}/{dn}/thing/event/alarm/post.
	KindEvent = "event"
	// KindLifecycle: /{pk}/{dn}/thing/lifecycle, create, enable, disable
	// and delete in turn.
	KindLifecycle = "lifecycle"
)

// Kinds lists every kind a Fleet knows.
var Kinds = []string{KindTelemetry, KindBinary, KindStatus, KindProperty, KindEvent, KindLifecycle}

// Fleet generates platform-shaped device messages. The zero value is one
// device sending telemetry as fast as the publisher takes it, forever.
//
// Message i comes from device i mod Devices; each device cycles through
// Types, and custom kinds cycle through Topics. Bodies depend only on i,
// the fleet's fields and the clock, so a test can rebuild them.
type Fleet struct {
	ProductKey string        // default "a1SimProduct"
	Devices    int           // default 1; names are device-0000, device-0001, ...
	Rate       float64       // messages per second for the whole fleet; 0: no limit
	Count      int           // stop after this many messages; 0: no limit
	Duration   time.Duration // stop after this long; 0: no limit
	Topics     []string      // custom topic suffixes after /user/; default ["telemetry"]
	Types      []string      // kinds (see Kinds); default ["telemetry"]
	Seed       uint64        // seeds the values and binary bytes
	// Clock is the time source for timestamps in bodies; nil is time.Now.
	Clock func() time.Time
}

// Validate reports every problem at once, each naming its field.
func (f Fleet) Validate() error {
	var errs []error
	if f.Devices < 0 {
		errs = append(errs, fmt.Errorf("devices: must be 0 or more, got %d", f.Devices))
	}
	if f.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate: must be 0 (no limit) or more, got %g", f.Rate))
	}
	if f.Count < 0 {
		errs = append(errs, fmt.Errorf("count: must be 0 (no limit) or more, got %d", f.Count))
	}
	if f.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration: must be 0 (no limit) or more, got %s", f.Duration))
	}
	if strings.ContainsAny(f.ProductKey, "/+#") {
		errs = append(errs, fmt.Errorf("productKey: %q must not contain '/', '+' or '#'", f.ProductKey))
	}
	for _, t := range f.Topics {
		if t = strings.Trim(t, "/"); t == "" || strings.ContainsAny(t, "+#") {
			errs = append(errs, fmt.Errorf("topics: %q is not a topic suffix such as telemetry or sensors/temp", t))
		}
	}
	for _, k := range f.Types {
		known := false
		for _, ok := range Kinds {
			known = known || k == ok
		}
		if !known {
			errs = append(errs, fmt.Errorf("types: %q is not one of %s", k, strings.Join(Kinds, ", ")))
		}
	}
	return errors.Join(errs...)
}

func (f Fleet) withDefaults() Fleet {
	if f.ProductKey == "" {
		f.ProductKey = "a1SimProduct"
	}
	if f.Devices == 0 {
		f.Devices = 1
	}
	if len(f.Topics) == 0 {
		f.Topics = []string{"telemetry"}
	}
	if len(f.Types) == 0 {
		f.Types = []string{KindTelemetry}
	}
	if f.Clock == nil {
		f.Clock = time.Now
	}
	return f
}

// Run calls publish for each message until Count messages are out, Duration
// has passed, or ctx is done, whichever comes first, pacing them at Rate. It
// blocks while publish blocks (that is the backpressure). It returns how
// many messages it published, and an error only for an invalid Fleet.
func (f Fleet) Run(ctx context.Context, publish func(Message)) (int, error) {
	if err := f.Validate(); err != nil {
		return 0, fmt.Errorf("iotsim: fleet: %w", err)
	}
	f = f.withDefaults()
	start := time.Now()
	var end time.Time
	if f.Duration > 0 {
		end = start.Add(f.Duration)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	n := 0
	for f.Count == 0 || n < f.Count {
		if ctx.Err() != nil {
			return n, nil
		}
		due := start
		if f.Rate > 0 {
			due = start.Add(time.Duration(float64(n) / f.Rate * float64(time.Second)))
		}
		if !end.IsZero() && !due.Before(end) {
			return n, nil
		}
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return n, nil
			case <-timer.C:
			}
		}
		if !end.IsZero() && !time.Now().Before(end) {
			return n, nil
		}
		publish(f.Message(n))
		n++
	}
	return n, nil
}

// Message returns the fleet's i-th message (i ≥ 0), without MessageID and
// GenerateTime (the server assigns them).
func (f Fleet) Message(i int) Message {
	f = f.withDefaults()
	dev := i % f.Devices
	turn := i / f.Devices // how many messages this device sent before
	kind := f.Types[turn%len(f.Types)]
	suffix := strings.Trim(f.Topics[(turn/len(f.Types))%len(f.Topics)], "/")
	pk, dn := f.ProductKey, fmt.Sprintf("device-%04d", dev)
	now := f.Clock()
	ms := now.UnixMilli()
	rnd := rand.New(rand.NewPCG(f.Seed, uint64(i)))
	iotID := iotIDOf(pk, dn)

	var topic string
	var body any
	switch kind {
	case KindBinary:
		b := make([]byte, 8, 8+2+8+rnd.IntN(48))
		binary.BigEndian.PutUint64(b, uint64(i))
		b = append(b, 0x00, 0xff)
		for len(b) < cap(b) {
			b = append(b, byte(rnd.UintN(256)))
		}
		return Message{Topic: "/" + pk + "/" + dn + "/user/" + suffix, Body: b}
	case KindTelemetry:
		topic = "/" + pk + "/" + dn + "/user/" + suffix
		body = struct {
			DeviceName  string  `json:"deviceName"`
			Seq         int     `json:"seq"`
			Temperature float64 `json:"temperature"`
			Humidity    int     `json:"humidity"`
			Timestamp   int64   `json:"timestamp"`
		}{dn, i, round1(15 + rnd.Float64()*20), 30 + rnd.IntN(60), ms}
	case KindStatus:
		topic = "/as/mqtt/status/" + pk + "/" + dn
		st := statusBody{Status: "online", ProductKey: pk, DeviceName: dn,
			Time: cst(now), UTCTime: utc(now), LastTime: cst(now), UTCLastTime: utc(now),
			ClientIP: fmt.Sprintf("192.0.2.%d", 1+dev%254)}
		if (turn/len(f.Types))%2 == 1 {
			st.Status, st.ClientIP = "offline", ""
		}
		body = st
	case KindProperty:
		topic = "/" + pk + "/" + dn + "/thing/event/property/post"
		type item struct {
			Value any   `json:"value"`
			Time  int64 `json:"time"`
		}
		body = struct {
			IotID           string          `json:"iotId"`
			ProductKey      string          `json:"productKey"`
			DeviceName      string          `json:"deviceName"`
			GmtCreate       int64           `json:"gmtCreate"`
			DeviceType      string          `json:"deviceType"`
			Items           map[string]item `json:"items"`
			CheckFailedData struct{}        `json:"checkFailedData"`
		}{IotID: iotID, ProductKey: pk, DeviceName: dn, GmtCreate: ms, DeviceType: "CustomCategory",
			Items: map[string]item{
				"Temperature": {round1(15 + rnd.Float64()*20), ms},
				"PowerSwitch": {rnd.IntN(2), ms},
			}}
	case KindEvent:
		topic = "/" + pk + "/" + dn + "/thing/event/alarm/post"
		body = struct {
			Identifier      string         `json:"identifier"`
			Name            string         `json:"name"`
			Type            string         `json:"type"`
			IotID           string         `json:"iotId"`
			ProductKey      string         `json:"productKey"`
			DeviceName      string         `json:"deviceName"`
			GmtCreate       int64          `json:"gmtCreate"`
			Value           map[string]any `json:"value"`
			Time            int64          `json:"time"`
			CheckFailedData struct{}       `json:"checkFailedData"`
		}{Identifier: "alarm", Name: "Alarm", Type: "alert", IotID: iotID, ProductKey: pk, DeviceName: dn,
			GmtCreate: ms, Value: map[string]any{"level": 1 + rnd.IntN(3), "code": "E01"}, Time: ms}
	case KindLifecycle:
		topic = "/" + pk + "/" + dn + "/thing/lifecycle"
		actions := []string{"create", "enable", "disable", "delete"}
		lc := lifecycleBody{Action: actions[(turn/len(f.Types))%len(actions)], IotID: iotID,
			ProductKey: pk, DeviceName: dn, MessageCreateTime: ms}
		if lc.Action == "create" {
			lc.DeviceSecret = fmt.Sprintf("simDeviceSecret%016x", rnd.Uint64())
		}
		body = lc
	default:
		panic("iotsim: unknown kind " + kind) // Validate refuses it
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic(err) // only plain values above
	}
	return Message{Topic: topic, Body: b}
}

type statusBody struct {
	Status      string `json:"status"`
	ProductKey  string `json:"productKey"`
	DeviceName  string `json:"deviceName"`
	Time        string `json:"time"`
	UTCTime     string `json:"utcTime"`
	LastTime    string `json:"lastTime"`
	UTCLastTime string `json:"utcLastTime"`
	ClientIP    string `json:"clientIp,omitempty"`
}

type lifecycleBody struct {
	Action            string `json:"action"`
	IotID             string `json:"iotId"`
	ProductKey        string `json:"productKey"`
	DeviceName        string `json:"deviceName"`
	DeviceSecret      string `json:"deviceSecret,omitempty"`
	MessageCreateTime int64  `json:"messageCreateTime"`
}

// The platform's console time zone (China Standard Time).
var chinaTime = time.FixedZone("CST", 8*3600)

func cst(t time.Time) string { return t.In(chinaTime).Format("2006-01-02 15:04:05.000") }
func utc(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func round1(v float64) float64 { return float64(int(v*10)) / 10 }

func iotIDOf(pk, dn string) string {
	sum := sha256.Sum256([]byte(pk + "/" + dn))
	return hex.EncodeToString(sum[:10]) + "000100"
}
