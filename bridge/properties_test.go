package bridge

import (
	"fmt"
	"testing"
)

func TestPropertySpecBuild(t *testing.T) {
	m := &Message{Topic: "/sys/pk1/dev-1/thing/event/property/post", MessageID: "id-9", GenerateTime: 1700000000123,
		Properties: map[string]string{"qos": "1", "traceparent": "00-abc-def-01", "other": "x"}}
	spec := &PropertySpec{Platform: true, PlatformProperties: []string{"qos", "missing"}, Trace: true}
	user, sys := spec.Build(m, []Property{{Name: "route", Value: "r1", Type: PropString}, {Name: "qos", Value: "override", Type: PropString}})
	want := "[{topic /sys/pk1/dev-1/thing/event/property/post STRING} {messageId id-9 STRING} {generateTime 1700000000123 NUMBER} " +
		"{productKey pk1 STRING} {deviceName dev-1 STRING} {qos override STRING} {route r1 STRING}]"
	if got := fmt.Sprint(user); got != want {
		t.Errorf("user properties\n%s\nwant\n%s", got, want)
	}
	if fmt.Sprint(sys) != "[{traceparent 00-abc-def-01 STRING}]" {
		t.Errorf("system properties %v", sys)
	}
	// A prefix; no generateTime, no device in the topic: left out.
	user, sys = (&PropertySpec{Platform: true, Prefix: "iot."}).Build(&Message{Topic: "/broadcast", MessageID: "m"}, nil)
	if fmt.Sprint(user) != "[{iot.topic /broadcast STRING} {iot.messageId m STRING}]" || sys != nil {
		t.Errorf("prefixed: %v %v", user, sys)
	}
	// Off: only the route's own.
	var off *PropertySpec
	route := []Property{{Name: "a", Value: "1", Type: PropString}}
	user, sys = off.Build(m, route)
	if fmt.Sprint(user) != "[{a 1 STRING}]" || sys != nil {
		t.Errorf("off: %v %v", user, sys)
	}
	user[0].Value = "changed"
	if route[0].Value != "1" {
		t.Error("Build changed the route's shared properties")
	}
}

func TestRouterGroupIDAndProperties(t *testing.T) {
	r, err := NewRouter([]RouteSpec{
		{Match: "/{productKey}/{deviceName}/user/#", Queue: "fifo-{productKey}", MessageGroupID: "{deviceName}",
			Properties: []RouteProperty{{Name: "device", Value: "{productKey}/{deviceName}"}, {Name: "src", Value: "bridge"}}},
		{Match: "/static/#", Queue: "s", MessageGroupID: "all", Properties: []RouteProperty{{Name: "k", Value: "v"}}},
	}, DefaultRouteSpec{Queue: "d", MessageGroupID: "other", Properties: []RouteProperty{{Name: "unrouted", Value: "true"}}}, NameRules{})
	if err != nil {
		t.Fatal(err)
	}
	rt := r.Route("/pk1/dev-1/user/x")
	if rt.GroupID != "dev-1" || rt.Properties == nil || fmt.Sprint(*rt.Properties) != "[{device pk1/dev-1 STRING} {src bridge STRING}]" {
		t.Errorf("templated: %+v", rt)
	}
	if rt2 := r.Route("/pk1/dev-2/user/x"); rt2.GroupID != "dev-2" || fmt.Sprint(*rt2.Properties) != "[{device pk1/dev-2 STRING} {src bridge STRING}]" {
		t.Errorf("second device: %+v", rt2)
	}
	if rt := r.Route("/static/x"); rt.GroupID != "all" || fmt.Sprint(*rt.Properties) != "[{k v STRING}]" {
		t.Errorf("static: %+v", rt)
	}
	if rt := r.Route("/nothing"); rt.GroupID != "other" || fmt.Sprint(*rt.Properties) != "[{unrouted true STRING}]" {
		t.Errorf("default: %+v", rt)
	}

}
