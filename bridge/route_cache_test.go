package bridge

import (
	"fmt"
	"testing"
)

// newTestRouter compiles rules without naming rules (the cache tests need
// none; route_test.go checks the router with the MNS rules).
func newTestRouter(t testing.TB, rules []RouteSpec, def DefaultRouteSpec) *Router {
	t.Helper()
	r, err := NewRouter(rules, def, NameRules{})
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return r
}

func TestRouteCacheBound(t *testing.T) {
	r := newTestRouter(t, []RouteSpec{{Match: "/{pk}/{dn}/user/#", Queue: "t-{pk}", Topic: "", MessageTag: ""}}, DefaultRouteSpec{})
	for i := 0; i < 3*renderCacheSize; i++ {
		pk := fmt.Sprintf("p%d", i%(renderCacheSize+7))
		want := Route{Dest: Destination{Queue, "t-" + pk}}
		if got := r.Route("/" + pk + "/d/user/x"); got != want {
			t.Fatalf("Route #%d = %+v, want %+v", i, got, want)
		}
	}
	if n := len(r.rules[0].cache); n > renderCacheSize {
		t.Errorf("cache holds %d entries, bound is %d", n, renderCacheSize)
	}
}

// TestRouteCacheKey checks that captures that concatenate alike do not share
// a cache entry.
func TestRouteCacheKey(t *testing.T) {
	r := newTestRouter(t, []RouteSpec{{Match: "/{a}/{b}", Queue: "q-{a}-{b}"}}, DefaultRouteSpec{})
	for _, tc := range []struct{ topic, want string }{
		{"/ab/c", "q-ab-c"},
		{"/a/bc", "q-a-bc"},
		{"/ab/c", "q-ab-c"},
	} {
		if got := r.Route(tc.topic); got.Dest.Name != tc.want {
			t.Errorf("Route(%q) = %+v, want queue %q", tc.topic, got, tc.want)
		}
	}
}
