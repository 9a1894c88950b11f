package app

import (
	"bytes"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

func TestChooseMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		env          string
		max, goProcs int
		wantN        int
		wantFrom     string
	}{
		{"the environment wins", "4", 1, 4, 0, "GOMAXPROCS"},
		{"the default caps 2 CPUs", "", 1, 2, 1, "runtime.max_procs"},
		{"the cap lowers 16 CPUs", "", 2, 16, 2, "runtime.max_procs"},
		{"0 leaves Go's choice", "", 0, 16, 0, "go"},
		{"the cap never raises Go's choice (cgroup limit 1)", "", 4, 1, 0, "go"},
		{"a cap equal to Go's choice changes nothing", "", 2, 2, 0, "go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseMaxProcs(tc.env, tc.max, tc.goProcs)
			if got.n != tc.wantN || got.from != tc.wantFrom {
				t.Errorf("chooseMaxProcs(%q, %d, %d) = %+v, want n %d from %s", tc.env, tc.max, tc.goProcs, got, tc.wantN, tc.wantFrom)
			}
		})
	}
}

// TestApplyMaxProcs: runtime.max_procs lowers GOMAXPROCS and says so; with
// GOMAXPROCS in the environment it is left as Go set it.
func TestApplyMaxProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	runtime.GOMAXPROCS(3)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := config.Default()
	cfg.Runtime.MaxProcs = 2

	t.Setenv("GOMAXPROCS", "3")
	applyMaxProcs(&cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("with GOMAXPROCS=3 in the environment: GOMAXPROCS %d, want 3", n)
	}
	if !strings.Contains(logs.String(), "GOMAXPROCS from the environment") {
		t.Errorf("log does not say GOMAXPROCS came from the environment:\n%s", logs.String())
	}

	t.Setenv("GOMAXPROCS", "")
	applyMaxProcs(&cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("runtime.max_procs 2 over 3: GOMAXPROCS %d, want 2", n)
	}
	if !strings.Contains(logs.String(), "GOMAXPROCS capped by runtime.max_procs") || !strings.Contains(logs.String(), "gomaxprocs=2 go_choice=3") {
		t.Errorf("log does not say runtime.max_procs capped GOMAXPROCS at 2 of 3:\n%s", logs.String())
	}
}
