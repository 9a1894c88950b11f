// Package errtext checks, in tests, what an error tells the operator: it
// names what it must (the config field, the message, the fix) and never a
// secret. It has no dependencies, so every package's tests can use it (the
// signing and MNS client packages' too).
package errtext

import (
	"strings"
	"testing"
)

// Want checks the error that call (what returned it: "New", "Validate")
// returned: with no want, it fails t unless err is nil; else unless err's
// text holds every string of want. In every case the text must hold none of
// secrets (an empty one is skipped).
func Want(t testing.TB, call string, err error, want []string, secrets ...string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		return
	}
	if err == nil {
		t.Fatalf("%s succeeded, want an error saying %q", call, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q lacks %q", call, err, w)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q leaks the secret %.4s…", call, err, s)
		}
	}
}
