package app

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/iotsim"
	"github.com/iot-mns-bridge/iot-mns-bridge/mnsemu"
)

// TestRunWithPropertiesEveryMessageCarriesThePlatformMetadata: a bridge with
// mns.properties.platform on, V4 signing and a FIFO group id per device
// stores every message at MNS with topic, messageId, generateTime (NUMBER),
// productKey and deviceName as user properties, the route's own property
// and the group id.
func TestRunWithPropertiesEveryMessageCarriesThePlatformMetadata(t *testing.T) {
	p := startPeers(t, mnsemu.Config{Queues: []string{"telemetry-pk1", "unrouted"}, Region: "cn-hangzhou"}, iotsim.Config{})
	path := p.writeConfig(t, "    ack: client-individual", "")
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MNS.SignatureVersion, cfg.MNS.Region = "v4", "cn-hangzhou"
	cfg.MNS.Properties.Platform = true
	cfg.Routes[0].MessageGroupID = "{deviceName}"
	cfg.Routes[0].Properties = map[string]string{"device": "{productKey}.{deviceName}"}
	b, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const n = 500
	type sent struct {
		topic, dev string
		gen        int64
	}
	want := map[string]sent{}
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixMilli()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("prop-%04d", i)
		dev := fmt.Sprintf("dev-%d", i%5)
		s := sent{topic: "/pk1/" + dev + "/user/data", dev: dev, gen: base + int64(i)}
		want[id] = s
		p.sim.Publish("g1", iotsim.Message{Topic: s.topic, MessageID: id, GenerateTime: s.gen, Body: []byte("payload " + id)})
	}
	waitFor(t, "every message at the emulator", 2*time.Minute, func() bool { return len(p.emu.Messages("telemetry-pk1")) >= n })

	seen := map[string]bool{}
	for _, m := range p.emu.Messages("telemetry-pk1") {
		id, _ := m.UserProperty("messageId")
		w, ok := want[id]
		if !ok {
			t.Fatalf("stored message without a known messageId property: %+v", m)
		}
		seen[id] = true
		props := map[string]string{}
		types := map[string]string{}
		for _, pr := range m.UserProperties {
			props[pr.Name], types[pr.Name] = pr.Value, pr.Type
		}
		body, _ := m.DecodedBody()
		if props["topic"] != w.topic || props["generateTime"] != strconv.FormatInt(w.gen, 10) || types["generateTime"] != "NUMBER" ||
			props["productKey"] != "pk1" || props["deviceName"] != w.dev || props["device"] != "pk1."+w.dev ||
			m.MessageGroupID != w.dev || string(body) != "payload "+id {
			t.Fatalf("message %s: properties %v types %v group %q body %q", id, props, types, m.MessageGroupID, body)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d of %d messages carry their metadata", len(seen), n)
	}
}
