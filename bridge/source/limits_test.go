package source

import (
	"strings"
	"testing"
	"time"
)

// TestBoundChecks: each bound's one check accepts the values at its edges
// and refuses the values just past them with a reason that states the
// bound and the value and names no field (its callers put the Field's name
// or the config key in front).
func TestBoundChecks(t *testing.T) {
	ns := time.Nanosecond
	for _, tt := range []struct {
		name  string
		check func() error
		want  string // "" when the value is within the bound
	}{
		{"connections -1", func() error { return CheckConnections(-1) }, "must be 1 to 64, got -1: the platform allows 64 clients per consumer group"},
		{"connections 0", func() error { return CheckConnections(0) }, "must be 1 to 64, got 0: the platform allows 64 clients per consumer group"},
		{"connections 1", func() error { return CheckConnections(1) }, ""},
		{"connections max", func() error { return CheckConnections(MaxConnections) }, ""},
		{"connections max+1", func() error { return CheckConnections(MaxConnections + 1) }, "must be 1 to 64, got 65: the platform allows 64 clients per consumer group"},

		{"attempts 0", func() error { return CheckAttemptsPerMinute(0) }, "must be 1 to 100, got 0: the platform refuses more than 100 connection attempts a minute per consumer group; " +
			"bridges sharing a group should split that (e.g. 45 each for two)"},
		{"attempts 1", func() error { return CheckAttemptsPerMinute(1) }, ""},
		{"attempts max", func() error { return CheckAttemptsPerMinute(MaxAttemptsPerMinute) }, ""},
		{"attempts max+1", func() error { return CheckAttemptsPerMinute(MaxAttemptsPerMinute + 1) }, "must be 1 to 100, got 101: the platform refuses more than 100"},

		{"heart-beat -1ns", func() error { return CheckHeartBeat(-ns) }, "must not be negative, got -1ns (0 turns heart-beats off)"},
		{"heart-beat 0 (off)", func() error { return CheckHeartBeat(0) }, ""},
		{"heart-beat 1ns", func() error { return CheckHeartBeat(ns) }, "must be 0 (off) or at least 1ms, got 1ns: the heart-beat header counts milliseconds"},
		{"heart-beat min-1ns", func() error { return CheckHeartBeat(MinHeartBeat - ns) }, "must be 0 (off) or at least 1ms, got 999.999µs"},
		{"heart-beat min", func() error { return CheckHeartBeat(MinHeartBeat) }, ""},
		{"heart-beat an hour", func() error { return CheckHeartBeat(time.Hour) }, ""},

		{"credit 0", func() error { return CheckCredit(0) }, "must be 1 to 10000, got 0"},
		{"credit 1", func() error { return CheckCredit(1) }, ""},
		{"credit max", func() error { return CheckCredit(MaxCredit) }, ""},
		{"credit max+1", func() error { return CheckCredit(MaxCredit + 1) }, "must be 1 to 10000, got 10001"},

		{"idle 0", func() error { return CheckIdleTimeout(0) }, "must be 60s to 600s, got 0s: the bridge advertises half of it in the AMQP Open frame and the platform accepts 30s to 300s"},
		{"idle min-1ns", func() error { return CheckIdleTimeout(MinIdleTimeout - ns) }, "must be 60s to 600s, got 59.999999999s"},
		{"idle min", func() error { return CheckIdleTimeout(MinIdleTimeout) }, ""},
		{"idle max", func() error { return CheckIdleTimeout(MaxIdleTimeout) }, ""},
		{"idle max+1ns", func() error { return CheckIdleTimeout(MaxIdleTimeout + ns) }, "must be 60s to 600s, got 10m0.000000001s"},
	} {
		err := tt.check()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v, want nil", tt.name, err)
		case tt.want != "" && err == nil:
			t.Errorf("%s: nil, want %q", tt.name, tt.want)
		case err != nil && !strings.HasPrefix(err.Error(), tt.want):
			t.Errorf("%s: %q, want it to start with %q", tt.name, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "Config."):
			t.Errorf("%s: %q names a field: the caller does", tt.name, err)
		}
	}
}
