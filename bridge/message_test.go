package bridge

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"testing"
)

func TestIsCanonicalBase64(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 100} {
		b := bytes.Repeat([]byte{0xa7}, n)
		if s := base64.StdEncoding.EncodeToString(b); !IsCanonicalBase64([]byte(s)) {
			t.Errorf("the encoding of %d bytes %q is not canonical", n, s)
		}
	}
	for _, s := range []string{
		"aGk", "aGk=\n", "aG\nk=", "aGk==", "a===", "aGl=", "aR==", "aGk*", "aGk-", "=aGk", "aG=k", "aGk_",
	} {
		if IsCanonicalBase64([]byte(s)) {
			t.Errorf("%q passes as canonical base64", s)
		}
	}
}

func FuzzIsCanonicalBase64(f *testing.F) {
	f.Add([]byte("aGk="))
	f.Add([]byte("aGl="))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !IsCanonicalBase64(b) {
			return
		}
		dec, err := base64.StdEncoding.DecodeString(string(b))
		if err != nil || base64.StdEncoding.EncodeToString(dec) != string(b) {
			t.Fatalf("%q passed as canonical: decodes with %v, encodes back to something else", b, err)
		}
	})
}

func TestMessagePayloadAndDecodeBody(t *testing.T) {
	m := Message{MessageID: "1", Body: []byte("aGk="), Base64: true}
	if p, err := m.Payload(); err != nil || string(p) != "hi" {
		t.Fatalf("Payload = %q, %v", p, err)
	}
	if err := m.DecodeBody(); err != nil || m.Base64 || string(m.Body) != "hi" {
		t.Fatalf("DecodeBody: %v, %+v", err, m)
	}
	bad := Message{MessageID: "2", Body: []byte("!!"), Base64: true}
	if err := bad.DecodeBody(); err == nil || !bad.Base64 {
		t.Fatalf("a bad base64 body decoded: %v %+v", err, bad)
	}
}

// TestEnumNames: the kinds and outcomes print their names (metric labels,
// log lines); a value outside the enum prints "unknown".
func TestEnumNames(t *testing.T) {
	for _, c := range []struct {
		v    fmt.Stringer
		want string
	}{
		{Queue, "queue"}, {Topic, "topic"}, {DestinationKind(0), "unknown"}, {DestinationKind(3), "unknown"},
		{Accepted, "accepted"}, {Released, "released"}, {Outcome(0), "unknown"}, {Outcome(-1), "unknown"},
		{Outcome(3), "unknown"},
	} {
		if got := c.v.String(); got != c.want {
			t.Errorf("%#v.String() = %q, want %q", c.v, got, c.want)
		}
	}
}

// TestDeviceFromTopic: the product key and device name of each topic form
// the platform forwards (its message types: custom topics, TSL, status,
// lifecycle, topology, sub-device discovery, OTA, tags), with and without
// the /sys prefix. An OTA job's status topic, /{pk}/{packageId}/{jobId}/
// ota/job/status, names a product and no device: its second segment is the
// package's id, which must not reach a consumer as a device name.
func TestDeviceFromTopic(t *testing.T) {
	for _, tc := range []struct{ topic, pk, dn string }{
		{"/a1pk/dev-01/user/telemetry", "a1pk", "dev-01"},
		{"/a1pk/dev-01/thing/event/property/post", "a1pk", "dev-01"},
		{"/sys/a1pk/dev-01/thing/event/property/post", "a1pk", "dev-01"},
		{"/a1pk/dev-01/thing/event/alarm/post", "a1pk", "dev-01"},
		{"/as/mqtt/status/a1pk/dev-01", "a1pk", "dev-01"},
		{"/a1pk/dev-01/thing/lifecycle", "a1pk", "dev-01"},
		{"/a1pk/gw-01/thing/topo/lifecycle", "a1pk", "gw-01"},
		{"/a1pk/gw-01/thing/list/found", "a1pk", "gw-01"},
		{"/a1pk/dev-01/thing/downlink/reply/message", "a1pk", "dev-01"},
		{"/a1pk/dev-01/thing/event/property/history/post", "a1pk", "dev-01"},
		{"/a1pk/dev-01/ota/upgrade", "a1pk", "dev-01"},
		{"/sys/a1pk/dev-01/ota/upgrade", "a1pk", "dev-01"},
		{"/a1pk/dev-01/ota/version/post", "a1pk", "dev-01"},
		{"/a1pk/dev-01/thing/deviceinfo/update", "a1pk", "dev-01"},
		{"/a1pk/pkg-1234/job-5678/ota/job/status", "a1pk", ""},
		{"/sys/a1pk/pkg-1234/job-5678/ota/job/status", "a1pk", ""},
		{"/a1pk/dev-01/user/ota/job/status", "a1pk", "dev-01"},
		{"/as/mqtt/status/a1pk", "", ""},
		{"no-slash", "", ""},
		{"/a1pk", "", ""},
		{"/a1pk/dev-01/user", "a1pk", "dev-01"},
	} {
		if pk, dn := DeviceFromTopic(tc.topic); pk != tc.pk || dn != tc.dn {
			t.Errorf("DeviceFromTopic(%q) = %q, %q, want %q, %q", tc.topic, pk, dn, tc.pk, tc.dn)
		}
	}
}
