// The route tests are an external test package so that they check the
// router with the MNS sink's own naming rules (sinks/mns imports bridge).
package bridge_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	. "github.com/iot-mns-bridge/iot-mns-bridge/bridge"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/errtext"
	"github.com/iot-mns-bridge/iot-mns-bridge/sinks/mns"
)

// refMatch is a deliberately naive reference matcher (split and compare)
// that the router is checked against.
func refMatch(pattern, topic string) (map[string]string, bool) {
	try := func(p, t string) (map[string]string, bool) {
		if p == "#" { // MQTT's "everything" is "/#"
			p = "/#"
		}
		if p == "" || t == "" || p[0] != '/' || t[0] != '/' {
			return nil, false
		}
		ps, ts := strings.Split(p[1:], "/"), strings.Split(t[1:], "/")
		caps := map[string]string{}
		for i, s := range ps {
			if s == "#" {
				return caps, true
			}
			if i >= len(ts) {
				return nil, false
			}
			switch {
			case s == "+":
			case strings.HasPrefix(s, "{"):
				if ts[i] == "" {
					return nil, false
				}
				caps[s[1:len(s)-1]] = ts[i]
			case s != ts[i]:
				return nil, false
			}
		}
		return caps, len(ps) == len(ts)
	}
	strip := func(s string) string {
		if strings.HasPrefix(s, "/sys/") {
			return s[len("/sys"):]
		}
		return s
	}
	if c, ok := try(strip(pattern), strip(topic)); ok {
		return c, true
	}
	return try(pattern, topic)
}

func mustRouter(t testing.TB, rules []RouteSpec, def DefaultRouteSpec) *Router {
	t.Helper()
	r, err := NewRouter(rules, def, mns.NameRules)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return r
}

func TestRouteMatching(t *testing.T) {
	const prop = "/{productKey}/{deviceName}/thing/event/property/post"
	tests := []struct {
		name, pattern, queue, topic string
		want                        string // rendered queue name; "" means no match
	}{
		{"named", prop, "p-{productKey}-{deviceName}", "/a1/d1/thing/event/property/post", "p-a1-d1"},
		{"named, topic with /sys", prop, "p-{productKey}-{deviceName}", "/sys/a1/d1/thing/event/property/post", "p-a1-d1"},
		{"pattern with /sys, topic without", "/sys/{pk}/{dn}/thing/#", "p-{pk}-{dn}", "/a1/d1/thing/x", "p-a1-d1"},
		{"pattern with /sys, topic with", "/sys/{pk}/{dn}/thing/#", "p-{pk}-{dn}", "/sys/a1/d1/thing", "p-a1-d1"},
		{"named prefers the topic without /sys", "/{a}/{b}/#", "p-{a}-{b}", "/sys/x/y", "p-x-y"},
		{"as written when only that fits", "/+/+/{c}", "p-{c}", "/sys/a/b", "p-b"},
		{"plus", "/+/{dn}/user/+", "q-{dn}", "/a/d/user/x", "q-d"},
		{"plus matches an empty segment", "/+/{dn}/user/+", "q-{dn}", "/a/d/user/", "q-d"},
		{"plus is one segment only", "/+/{dn}/user/+", "q-{dn}", "/a/d/user/x/y", ""},
		{"plus needs its segment", "/+/{dn}/user/+", "q-{dn}", "/a/d/user", ""},
		{"hash zero segments", "/{pk}/{dn}/user/#", "t-{pk}", "/a/d/user", "t-a"},
		{"hash many segments", "/{pk}/{dn}/user/#", "t-{pk}", "/a/d/user/x/y/z", "t-a"},
		{"hash after a mismatch", "/{pk}/{dn}/user/#", "t-{pk}", "/a/d/usr/x", ""},
		{"root hash matches /", "/#", "all", "/", "all"},
		{"root hash matches anything rooted", "/#", "all", "/x/y", "all"},
		{"root hash does not match unrooted", "/#", "all", "x/y", ""},
		{"empty topic", "/#", "all", "", ""},
		{"named segment is never empty", "/{pk}/{dn}/user/#", "t-{pk}", "//d/user/x", ""},
		{"literal is case sensitive", "/A/b", "q", "/a/b", ""},
		{"trailing slash is a segment", "/status", "q", "/status/", ""},
		{"status topic", "/as/mqtt/status/{pk}/{dn}", "s-{pk}", "/as/mqtt/status/a1/d1", "s-a1"},
		{"status topic too long", "/as/mqtt/status/{pk}/{dn}", "s-{pk}", "/as/mqtt/status/a1/d1/x", ""},
		{"non-UTF-8 topic, valid capture", "/+/{dn}/user/#", "q-{dn}", "/a\xff/d/user/x", "q-d"},
		{"non-UTF-8 literal does not match", "/a/{dn}", "q-{dn}", "/a\xff/d", ""},
		{"sys alone is a literal", "/sys", "q", "/sys", "q"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRouter(t, []RouteSpec{{Match: tt.pattern, Queue: tt.queue}}, DefaultRouteSpec{DeadLetter: true})
			got := r.Route(tt.topic)
			if tt.want == "" {
				if got.Rule != -1 || !got.DeadLetter {
					t.Fatalf("Route(%q) = %+v, want no match", tt.topic, got)
				}
				if want := fmt.Sprintf("no route matches topic %q", tt.topic); got.Reason != want {
					t.Errorf("Reason = %q, want %q", got.Reason, want)
				}
				if got.Class != ClassUnrouted {
					t.Errorf("Class = %q, want %q", got.Class, ClassUnrouted)
				}
				return
			}
			want := Route{Dest: Destination{Kind: Queue, Name: tt.want}, Rule: 0, Fixed: !strings.Contains(tt.queue, "{")}
			if got != want {
				t.Fatalf("Route(%q) = %+v, want %+v", tt.topic, got, want)
			}
			if _, ok := refMatch(tt.pattern, tt.topic); !ok {
				t.Errorf("reference matcher disagrees: no match")
			}
		})
	}
}

func TestRouteFirstMatchWins(t *testing.T) {
	r := mustRouter(t, []RouteSpec{
		{Match: "/as/mqtt/status/{productKey}/{deviceName}", Topic: "device-status", MessageTag: "{productKey}"},
		{Match: "/{productKey}/{deviceName}/thing/event/property/post", Queue: "props-{productKey}"},
		{Match: "/{productKey}/{deviceName}/thing/#", Queue: "thing"},
		{Match: "/{productKey}/+/user/alarm", Queue: "alarms"},
		{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"},
	}, DefaultRouteSpec{Queue: "iot-unrouted"})
	tests := []struct {
		topic string
		want  Route
	}{
		{"/as/mqtt/status/pk1/dev-1", Route{Dest: Destination{Topic, "device-status"}, Tag: "pk1", Rule: 0, Fixed: true}},
		{"/pk1/dev-1/thing/event/property/post", Route{Dest: Destination{Queue, "props-pk1"}, Rule: 1}},
		{"/sys/pk1/dev-1/thing/event/property/post", Route{Dest: Destination{Queue, "props-pk1"}, Rule: 1}},
		{"/pk1/dev-1/thing/lifecycle", Route{Dest: Destination{Queue, "thing"}, Rule: 2, Fixed: true}},
		{"/pk1/dev-1/user/alarm", Route{Dest: Destination{Queue, "alarms"}, Rule: 3, Fixed: true}},
		{"/pk1/dev-1/user/telemetry", Route{Dest: Destination{Queue, "telemetry-pk1"}, Rule: 4}},
		{"/pk1/dev-1/other", Route{Dest: Destination{Queue, "iot-unrouted"}, Rule: -1, Fixed: true}},
		{"", Route{Dest: Destination{Queue, "iot-unrouted"}, Rule: -1, Fixed: true}},
	}
	for _, tt := range tests {
		if got := r.Route(tt.topic); got != tt.want {
			t.Errorf("Route(%q) = %+v, want %+v", tt.topic, got, tt.want)
		}
	}
}

func TestRouteTemplates(t *testing.T) {
	rules := []RouteSpec{
		{Match: "/as/mqtt/status/{productKey}/{deviceName}", Topic: "status-{productKey}", MessageTag: "{deviceName}"},
		{Match: "/{productKey}/{deviceName}/user/#", Queue: "t-{productKey}-{deviceName}"},
	}
	tests := []struct {
		name, topic string
		def         DefaultRouteSpec
		want        Route
	}{
		{"topic and tag", "/as/mqtt/status/pk/dev-01", DefaultRouteSpec{},
			Route{Dest: Destination{Topic, "status-pk"}, Tag: "dev-01", Rule: 0}},
		{"tag may hold what names may not", "/as/mqtt/status/pk/dev_01", DefaultRouteSpec{},
			Route{Dest: Destination{Topic, "status-pk"}, Tag: "dev_01", Rule: 0}},
		{"invalid rendered name", "/pk/dev_01/user/x", DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: 1, Class: ClassInvalidName, Reason: `routes[1]: rendered queue name "t-pk-dev_01" is invalid: letters, digits and '-' only, not '_'`}},
		{"rendered name too long", "/pk/" + strings.Repeat("d", 120) + "/user/x", DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: 1, Class: ClassInvalidName, Reason: `routes[1]: rendered queue name "t-pk-` + strings.Repeat("d", 120) + `" is invalid: it is 125 characters long, the limit is 120`}},
		{"rendered tag too long", "/as/mqtt/status/pk/" + strings.Repeat("d", 17), DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: 0, Class: ClassInvalidName, Reason: `routes[0]: rendered message tag "` + strings.Repeat("d", 17) + `" is invalid: it is 17 characters long, the limit is 16`}},
		{"rendered tag of 16 characters", "/as/mqtt/status/pk/" + strings.Repeat("é", 16), DefaultRouteSpec{},
			Route{Dest: Destination{Topic, "status-pk"}, Tag: strings.Repeat("é", 16), Rule: 0}},
		{"rendered tag not UTF-8", "/as/mqtt/status/pk/d\xff", DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: 0, Class: ClassInvalidName, Reason: `routes[0]: rendered message tag "d\xff" is invalid: it is not valid UTF-8`}},
		{"rendered tag with a control character", "/as/mqtt/status/pk/d\n", DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: 0, Class: ClassInvalidName, Reason: `routes[0]: rendered message tag "d\n" is invalid: it must not contain control characters, has '\n'`}},
		{"unmatched, no default", "/x", DefaultRouteSpec{},
			Route{DeadLetter: true, Rule: -1, Class: ClassUnrouted, Reason: `no route matches topic "/x"`}},
		{"unmatched, dead_letter default", "/x\xff", DefaultRouteSpec{DeadLetter: true},
			Route{DeadLetter: true, Rule: -1, Class: ClassUnrouted, Reason: `no route matches topic "/x\xff"`}},
		{"unmatched, default queue", "/x", DefaultRouteSpec{Queue: "unrouted"},
			Route{Dest: Destination{Queue, "unrouted"}, Rule: -1, Fixed: true}},
		{"unmatched, default topic with tag", "/x", DefaultRouteSpec{Topic: "unrouted", MessageTag: "other"},
			Route{Dest: Destination{Topic, "unrouted"}, Tag: "other", Rule: -1, Fixed: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustRouter(t, rules, tt.def)
			for i := 0; i < 2; i++ { // the second answer comes from the cache
				if got := r.Route(tt.topic); got != tt.want {
					t.Fatalf("Route(%q) #%d =\n%+v, want\n%+v", tt.topic, i, got, tt.want)
				}
			}
		})
	}
}

func TestRouteUsesValidName(t *testing.T) {
	errReserved := errors.New("reserved")
	valid := func(s string) error {
		if strings.HasSuffix(s, "reserved") {
			return errReserved
		}
		return mns.ValidName(s)
	}
	names := NameRules{Name: valid, Tag: mns.ValidTag}
	r, err := NewRouter([]RouteSpec{{Match: "/{pk}/#", Queue: "q-{pk}"}}, DefaultRouteSpec{}, names)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Route("/ok/x"); got.DeadLetter || got.Dest.Name != "q-ok" {
		t.Errorf("Route(/ok/x) = %+v", got)
	}
	if got := r.Route("/reserved/x"); !got.DeadLetter || !strings.Contains(got.Reason, "reserved") {
		t.Errorf("Route(/reserved/x) = %+v, want dead-letter naming the validator's reason", got)
	}
	_, err = NewRouter([]RouteSpec{{Match: "/#", Queue: "reserved"}}, DefaultRouteSpec{}, names)
	if !errors.Is(err, errReserved) {
		t.Errorf("NewRouter with a literal the validator rejects: err = %v, want it wrapping %v", err, errReserved)
	}
}

func TestNewRouterErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules []RouteSpec
		def   DefaultRouteSpec
		want  []string // each must appear in the error
	}{
		{"no match", []RouteSpec{{Queue: "q"}}, DefaultRouteSpec{},
			[]string{"routes[0].match: required"}},
		{"unrooted pattern", []RouteSpec{{Match: "a/b", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "a/b" must start with '/'`}},
		{"hash not last", []RouteSpec{{Match: "/a/#/b", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "/a/#/b" has '#' before the last segment`}},
		{"mixed wildcard", []RouteSpec{{Match: "/a+/b", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "/a+/b": segment "a+" mixes text`}},
		{"partial placeholder", []RouteSpec{{Match: "/x{pk}/b", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`segment "x{pk}" mixes text`}},
		{"empty segment", []RouteSpec{{Match: "/a//b", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "/a//b" has an empty segment`}},
		{"bad segment name", []RouteSpec{{Match: "/{1pk}", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "/{1pk}": segment "{1pk}" is not a name: use letters, digits and '_'`}},
		{"duplicate name", []RouteSpec{{Match: "/{a}/{a}", Queue: "q"}}, DefaultRouteSpec{},
			[]string{`routes[0].match: "/{a}/{a}" names two segments {a}`}},
		{"neither queue nor topic", []RouteSpec{{Match: "/#"}}, DefaultRouteSpec{},
			[]string{"routes[0]: set queue or topic"}},
		{"both queue and topic", []RouteSpec{{Match: "/#", Queue: "q", Topic: "t"}}, DefaultRouteSpec{},
			[]string{"routes[0]: set queue or topic, not both"}},
		{"tag on a queue", []RouteSpec{{Match: "/#", Queue: "q", MessageTag: "x"}}, DefaultRouteSpec{},
			[]string{"routes[0].message_tag: applies to topics only: a message tag needs an MNS topic"}},
		{"unknown name", []RouteSpec{{Match: "/{pk}/#", Queue: "q-{deviceName}"}}, DefaultRouteSpec{},
			[]string{`routes[0].queue: template uses {deviceName} but match "/{pk}/#" has no such segment`}},
		{"unknown name in tag", []RouteSpec{{Match: "/{pk}/#", Topic: "t", MessageTag: "{dn}"}}, DefaultRouteSpec{},
			[]string{`routes[0].message_tag: template uses {dn} but match "/{pk}/#" has no such segment`}},
		{"unclosed brace", []RouteSpec{{Match: "/{pk}/#", Queue: "q-{pk"}}, DefaultRouteSpec{},
			[]string{`routes[0].queue: "q-{pk" has a '{' without its '}'`}},
		{"stray brace", []RouteSpec{{Match: "/{pk}/#", Queue: "q-pk}"}}, DefaultRouteSpec{},
			[]string{`routes[0].queue: "q-pk}" has a '}' without its '{'`}},
		{"bad literal character", []RouteSpec{{Match: "/{pk}/#", Topic: "t_{pk}"}}, DefaultRouteSpec{},
			[]string{`routes[0].topic: template "t_{pk}" can never render a valid MNS topic name: letters, digits and '-' only, not '_'`}},
		{"bad literal name", []RouteSpec{{Match: "/#", Queue: "my_queue"}}, DefaultRouteSpec{},
			[]string{`routes[0].queue: "my_queue" is not a valid MNS queue name`}},
		{"never valid: leading dash", []RouteSpec{{Match: "/{pk}/#", Queue: "-{pk}"}}, DefaultRouteSpec{},
			[]string{`routes[0].queue: template "-{pk}" can never render a valid MNS queue name`}},
		{"never valid: too long", []RouteSpec{{Match: "/{pk}/#", Queue: strings.Repeat("q", 120) + "{pk}"}}, DefaultRouteSpec{},
			[]string{"can never render a valid MNS queue name"}},
		{"tag literal too long", []RouteSpec{{Match: "/{pk}/#", Topic: "t", MessageTag: "0123456789abcdef{pk}"}}, DefaultRouteSpec{},
			[]string{`routes[0].message_tag: template "0123456789abcdef{pk}" can never render a valid MNS message tag: it is 17 characters long, the limit is 16`}},
		{"default dead_letter and queue", nil, DefaultRouteSpec{Queue: "q", DeadLetter: true},
			[]string{"default_route: set only one of queue, topic and dead_letter: true"}},
		{"default both", nil, DefaultRouteSpec{Queue: "q", Topic: "t"},
			[]string{"default_route: set only one of queue, topic and dead_letter: true"}},
		{"default placeholder", nil, DefaultRouteSpec{Topic: "t-{pk}"},
			[]string{"default_route.topic: template uses {pk} but the default route has no pattern"}},
		{"default bad name", nil, DefaultRouteSpec{Queue: "a.b"},
			[]string{`default_route.queue: "a.b" is not a valid MNS queue name`}},
		{"default tag on a queue", nil, DefaultRouteSpec{Queue: "q", MessageTag: "x"},
			[]string{"default_route.message_tag: applies to topics only: a message tag needs an MNS topic"}},
		{"default tag too long", nil, DefaultRouteSpec{Topic: "t", MessageTag: strings.Repeat("x", 17)},
			[]string{`default_route.message_tag: "` + strings.Repeat("x", 17) + `" is not a valid MNS message tag`, "it is 17 characters long, the limit is 16"}},
		{"every problem at once", []RouteSpec{
			{Match: "/{pk}/#", Queue: "ok-{pk}"},
			{Match: "/{pk}/#", Queue: "q-{dn}"},
			{Match: "bad", Queue: "q"},
		}, DefaultRouteSpec{Queue: "a_b"},
			[]string{"routes[1].queue:", "routes[2].match:", "default_route.queue:", "routes[1].match:"}},
		{"a pattern twice", []RouteSpec{{Match: "/#", Queue: "a"}, {Match: "#", Queue: "b"}}, DefaultRouteSpec{},
			[]string{`routes[1].match: "#" is the pattern of routes[0] too: the first match wins, so this route never matches`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter(tt.rules, tt.def, mns.NameRules)
			if err == nil {
				t.Fatalf("NewRouter = %v, nil; want an error", r)
			}
			if r != nil {
				t.Errorf("NewRouter returned a router with its error")
			}
			errtext.Want(t, "NewRouter", err, tt.want)
			if got, want := strings.Count(err.Error(), "\n")+1, len(tt.want); tt.name == "every problem at once" && got != want {
				t.Errorf("%d problems reported, want %d:\n%v", got, want, err)
			}
		})
	}
}

// TestNewRouterChecksTemplatesOfABadMatch: a route whose match is bad has
// its queue, topic, tag, group id and property templates checked too (all
// but their placeholders' names, which the pattern would give): each
// problem once, none about a placeholder.
func TestNewRouterChecksTemplatesOfABadMatch(t *testing.T) {
	_, err := NewRouter([]RouteSpec{
		{Match: "/{productKey}/#/x", Queue: "telemetry_{productKey}"},
		{Match: "a/{pk}", Topic: "t-{pk}", MessageTag: "0123456789abcdef{pk}", MessageGroupID: "{pk",
			Properties: []RouteProperty{{Name: "a..b", Value: "v"}, {Name: "dev", Value: "{deviceName}"}}},
		{Match: "/{a}/{a}", Queue: "q-{a}", Topic: "t_{a}"},
	}, DefaultRouteSpec{}, mns.NameRules)
	want := []string{
		`routes[0].match: "/{productKey}/#/x" has '#' before the last segment`,
		`routes[0].queue: template "telemetry_{productKey}" can never render a valid MNS queue name`,
		`routes[1].match: "a/{pk}" must start with '/'`,
		`routes[1].message_tag: template "0123456789abcdef{pk}" can never render a valid MNS message tag`,
		`routes[1].message_group_id: "{pk" has a '{' without its '}'`,
		`routes[1].properties: property name "a..b" contains ".."`,
		`routes[2].match: "/{a}/{a}" names two segments {a}`,
		`routes[2]: set queue or topic, not both`,
		`routes[2].topic: template "t_{a}" can never render a valid MNS topic name`,
	}
	errtext.Want(t, "NewRouter", err, want)
	if got := strings.Count(err.Error(), "\n") + 1; got != len(want) {
		t.Errorf("%d problems reported, want %d:\n%v", got, len(want), err)
	}
}

func TestNewRouterAccepts(t *testing.T) {
	valid := [][]RouteSpec{
		{{Match: "/#", Queue: "q"}},
		{{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"}},
		{{Match: "/as/mqtt/status/{productKey}/{deviceName}", Topic: "device-status", MessageTag: "{productKey}"}},
		{{Match: "/{pk}/#", Topic: "t", MessageTag: "0123456789abcde{pk}"}}, // 15 + at least 1
		{{Match: "/{pk}/#", Queue: strings.Repeat("q", 119) + "{pk}"}},
		{{Match: "/{a_1}/+/{B}/#", Queue: "{a_1}{B}"}},
		nil,
	}
	for i, rules := range valid {
		if _, err := NewRouter(rules, DefaultRouteSpec{}, mns.NameRules); err != nil {
			t.Errorf("case %d: NewRouter(%+v) = %v, want no error", i, rules, err)
		}
	}
}

func TestRouteConcurrent(t *testing.T) {
	r := mustRouter(t, benchRules, DefaultRouteSpec{Queue: "unrouted"})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				pk := fmt.Sprintf("pk%d", (i+g)%50)
				if got := r.Route("/" + pk + "/d/user/t"); got.Dest.Name != "telemetry-"+pk {
					errs <- fmt.Sprintf("got %+v for %s", got, pk)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestRouterDestinations(t *testing.T) {
	r := mustRouter(t, []RouteSpec{
		{Match: "/a/#", Queue: "q1"},
		{Match: "/{pk}/#", Queue: "q-{pk}"},
		{Match: "/b/#", Topic: "t1"},
		{Match: "/c/#", Queue: "q1"},
		{Match: "/{pk}/{dn}/#", Topic: "t-{pk}-{dn}"},
	}, DefaultRouteSpec{Queue: "unrouted"})
	got := r.Destinations()
	want := []Destination{{Queue, "q1"}, {Topic, "t1"}, {Queue, "unrouted"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Destinations() = %v, want %v", got, want)
	}
	// What Destinations leaves out, with the config paths.
	tmpls := r.Templates()
	wantT := []RouteTemplate{{Destination{Queue, "q-{pk}"}, "routes[1].queue"}, {Destination{Topic, "t-{pk}-{dn}"}, "routes[4].topic"}}
	if fmt.Sprint(tmpls) != fmt.Sprint(wantT) {
		t.Errorf("Templates() = %v, want %v", tmpls, wantT)
	}
	// The keys that name each of them, for check's FAIL lines.
	for d, want := range map[Destination]string{
		{Queue, "q1"}: "[routes[0].queue routes[3].queue]", {Topic, "t1"}: "[routes[2].topic]",
		{Queue, "unrouted"}: "[default_route.queue]", {Queue, "t1"}: "[]",
	} {
		if got := fmt.Sprint(r.Keys(d)); got != want {
			t.Errorf("Keys(%v) = %s, want %s", d, got, want)
		}
	}
}

// FuzzRoute checks that random patterns, templates and topics never panic,
// that the router agrees with the reference matcher, and that it never
// returns a destination with an invalid name or tag.
func FuzzRoute(f *testing.F) {
	f.Add("/{productKey}/{deviceName}/user/#", "/sys/a1/d1/user/x", "t-{productKey}")
	f.Add("/sys/+/{dn}/thing/#", "/a/b/thing", "{dn}")
	f.Add("/#", "", "x-{a}")
	f.Add("/{a}/{b}", "/a\xff/\x00", "{a}{b}")
	f.Add("/a/#/b", "/a/b", "q")
	f.Add("/{a", "/a", "{")
	f.Fuzz(func(t *testing.T, pattern, topic, tmplText string) {
		// Arbitrary templates must not panic either.
		if r, err := NewRouter([]RouteSpec{{Match: pattern, Topic: "t", MessageTag: tmplText}, {Match: pattern, Queue: tmplText}},
			DefaultRouteSpec{Topic: tmplText}, mns.NameRules); err == nil {
			r.Route(topic)
		}
		// A template over every name the pattern has, to compare renders.
		var names []string
		if strings.HasPrefix(pattern, "/") {
			for _, s := range strings.Split(pattern[1:], "/") {
				if len(s) > 2 && s[0] == '{' && s[len(s)-1] == '}' {
					names = append(names, s[1:len(s)-1])
				}
			}
		}
		queue, tag := "q", ""
		for _, n := range names {
			queue += "-{" + n + "}"
		}
		if len(names) > 0 {
			tag = "{" + names[0] + "}"
		}
		r, err := NewRouter([]RouteSpec{{Match: pattern, Topic: queue, MessageTag: tag}}, DefaultRouteSpec{}, mns.NameRules)
		if err != nil {
			return
		}
		got := r.Route(topic)
		caps, ok := refMatch(pattern, topic)
		if ok != (got.Rule == 0) {
			t.Fatalf("pattern %q, topic %q: router matched=%v, reference matched=%v (%+v)", pattern, topic, got.Rule == 0, ok, got)
		}
		if got.DeadLetter {
			if got.Reason == "" {
				t.Fatalf("dead-letter route without a reason: %+v", got)
			}
			return
		}
		if err := mns.ValidName(got.Dest.Name); err != nil {
			t.Fatalf("pattern %q, topic %q: invalid name %q returned: %v", pattern, topic, got.Dest.Name, err)
		}
		if err := mns.ValidTag(got.Tag); err != nil {
			t.Fatalf("pattern %q, topic %q: invalid tag %q returned", pattern, topic, got.Tag)
		}
		want := "q"
		for _, n := range names {
			want += "-" + caps[n]
		}
		if got.Dest.Name != want {
			t.Fatalf("pattern %q, topic %q: name %q, reference renders %q", pattern, topic, got.Dest.Name, want)
		}
	})
}

var benchRules = []RouteSpec{
	{Match: "/as/mqtt/status/{productKey}/{deviceName}", Topic: "device-status", MessageTag: "{productKey}"},
	{Match: "/{productKey}/{deviceName}/thing/event/property/post", Queue: "props-{productKey}"},
	{Match: "/{productKey}/{deviceName}/thing/event/+/post", Queue: "events-{productKey}"},
	{Match: "/{productKey}/{deviceName}/thing/lifecycle", Queue: "lifecycle"},
	{Match: "/{productKey}/{deviceName}/user/#", Queue: "telemetry-{productKey}"},
}

// BenchmarkRoute routes through a typical 5-rule table; see ns/op and
// allocs/op per topic kind.
func BenchmarkRoute(b *testing.B) {
	r := mustRouter(b, benchRules, DefaultRouteSpec{Queue: "iot-unrouted"})
	for _, bc := range []struct{ name, topic string }{
		{"status/rule0", "/as/mqtt/status/a1b2c3/dev-01"},
		{"property-sys/rule1", "/sys/a1b2c3/dev-01/thing/event/property/post"},
		{"lifecycle-static/rule3", "/a1b2c3/dev-01/thing/lifecycle"},
		{"telemetry/rule4", "/a1b2c3/dev-01/user/telemetry/v2"},
		{"unmatched/default", "/a1b2c3/dev-01/ota/progress"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rt := r.Route(bc.topic); rt.DeadLetter {
					b.Fatal(rt.Reason)
				}
			}
		})
	}
	b.Run("parallel/telemetry", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Route("/a1b2c3/dev-01/user/telemetry/v2")
			}
		})
	})
}

// TestHashMatchesEverything: match "#" (MQTT's "everything") is accepted
// and routes every topic, like "/#".
func TestHashMatchesEverything(t *testing.T) {
	r, err := NewRouter([]RouteSpec{{Match: "#", Queue: "all"}}, DefaultRouteSpec{}, mns.NameRules)
	if err != nil {
		t.Fatalf("match \"#\": %v", err)
	}
	for _, topic := range []string{"/pk/dev/user/data", "/as/mqtt/status/pk/dev", "/sys/pk/dev/thing/event/property/post", "/x"} {
		if got := r.Route(topic); got.DeadLetter || got.Dest != (Destination{Kind: Queue, Name: "all"}) {
			t.Errorf("Route(%q) = %+v, want queue all", topic, got)
		}
	}
}

// TestRouterReportsBadRoutePropertiesAndGroupIDs: with the MNS sink's rules
// the router names every bad route property and group id by its path, among
// them the property names MNS refuses (mns.ValidPropertyName).
func TestRouterReportsBadRoutePropertiesAndGroupIDs(t *testing.T) {
	_, err := NewRouter([]RouteSpec{
		{Match: "/{pk}/#", Queue: "q", MessageGroupID: "{nope}"},
		{Match: "/{pk}/#", Queue: "q", Properties: []RouteProperty{{Name: "a..b", Value: "x"}, {Name: "ok", Value: "{dn}"}}},
		{Match: "/{pk}/#", Queue: "q", Properties: []RouteProperty{{Name: "a", Value: "1"}, {Name: "a", Value: "2"}}},
	}, DefaultRouteSpec{Queue: "d", Properties: []RouteProperty{{Name: "x y", Value: "1"}}}, mns.NameRules)
	for _, want := range []string{"routes[0].message_group_id:", "{nope}", `routes[1].properties: property name "a..b"`, "routes[1].properties.ok:", "{dn}",
		`routes[2].properties: "a" is set twice`, `default_route.properties: property name "x y"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}
