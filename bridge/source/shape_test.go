package source

import (
	"fmt"
	"testing"
)

// While no credentials can be had (STS refusing the OIDC token, the
// metadata service down), every dial fails with the credentials cache's
// error, whose "next attempt in" counts down in Go's duration form: 100ms,
// 4s, 2.6s. Those are one failure: the supervisor logged an ERROR line at
// every attempt (walk10: STS refusing for 35 s, 5 attempts, 5 lines), and
// the status line was sent again each time.
func TestFailureShapeOfACountdown(t *testing.T) {
	const msg = "stomp connect as walk10: read the signing inputs: source.credentials: credentials from oidc expired at " +
		"2026-12-03T15:55:35Z and could not be refreshed: oidc: AssumeRoleWithOIDC for role acs:ram::1234567890123456:role/bridge " +
		"answered HTTP 400 \"AuthenticationFail.OIDCToken.Invalid\" [request id \"req-1\"]; next attempt in %s; work is held until they can be"
	want := FailureShape(sprintf(msg, "2s"))
	for _, d := range []string{"100ms", "4s", "2.6s", "1m0s", "1m30.5s", "900µs", "3h0m0s"} {
		if got := FailureShape(sprintf(msg, d)); got != want {
			t.Errorf("next attempt in %s is another failure than in 2s:\n%s\n%s", d, got, want)
		}
	}
	// Numbers that are not durations stay apart from the words after them.
	for _, pair := range [][2]string{{"HTTP 404 answered", "HTTP 5s answered"}, {"3 messages", "3messages"}, {"port 5671", "port 5671s"}, {"walk10", "walk10s"}} {
		if FailureShape(pair[0]) == FailureShape(pair[1]) {
			t.Errorf("%q and %q have one shape", pair[0], pair[1])
		}
	}
}

func sprintf(format, arg string) string { return fmt.Sprintf(format, arg) }
