package app

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

func TestChooseMaxProcs(t *testing.T) {
	for _, tc := range []struct {
		name         string
		env          string
		max, goProcs int
		spool        bool
		wantN        int
		wantFrom     string
	}{
		{"the environment wins", "4", 1, 4, false, 0, "GOMAXPROCS"},
		{"the environment wins over auto", "4", 0, 4, false, 0, "GOMAXPROCS"},
		{"auto starts at 1", "", 0, 2, false, 1, "auto"},
		{"auto with the spool leaves Go's choice", "", 0, 2, true, 0, "spool"},
		{"auto on one CPU changes nothing", "", 0, 1, false, 0, "go"},
		{"the cap lowers 16 CPUs", "", 2, 16, false, 2, "runtime.max_procs"},
		{"a cap of 1, also with the spool", "", 1, 2, true, 1, "runtime.max_procs"},
		{"the cap never raises Go's choice (cgroup limit 1)", "", 4, 1, false, 0, "go"},
		{"a cap equal to Go's choice changes nothing", "", 2, 2, false, 0, "go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseMaxProcs(tc.env, tc.max, tc.goProcs, tc.spool)
			if got.n != tc.wantN || got.from != tc.wantFrom {
				t.Errorf("chooseMaxProcs(%q, %d, %d, spool %v) = %+v, want n %d from %s", tc.env, tc.max, tc.goProcs, tc.spool, got, tc.wantN, tc.wantFrom)
			}
		})
	}
}

// TestProcsGovernor: GOMAXPROCS doubles (up to Go's choice) as soon as the
// bridge uses more than 70% of its Ps, and halves only after 30 periods in
// a row in which the halved count would have been less than half used.
func TestProcsGovernor(t *testing.T) {
	var sets []int
	var logs bytes.Buffer
	g := &procsGovernor{max: 4, cur: 1, set: func(n int) { sets = append(sets, n) }, log: slog.New(slog.NewTextHandler(&logs, nil))}
	steps := []struct {
		cores float64
		want  int
	}{
		{0.5, 1}, {0.69, 1}, // under 70% of one P
		{0.95, 2}, // raised at once
		{1.3, 2},  // 65% of two
		{1.5, 4},  // 75% of two
		{3.9, 4},  // Go's choice is the ceiling
	}
	for i, s := range steps {
		g.step(s.cores)
		if g.cur != s.want {
			t.Fatalf("step %d (%.2f cores): GOMAXPROCS %d, want %d", i, s.cores, g.cur, s.want)
		}
	}
	// 4 → 2 needs 30 periods under 1 core (half of 2); one busy period
	// starts the count again.
	for range 29 {
		g.step(0.9)
	}
	g.step(1.2)
	for range 29 {
		g.step(0.9)
	}
	if g.cur != 4 {
		t.Fatalf("GOMAXPROCS %d after 29 quiet periods, want 4 still", g.cur)
	}
	g.step(0.9)
	if g.cur != 2 {
		t.Fatalf("GOMAXPROCS %d after 30 quiet periods, want 2", g.cur)
	}
	for range 30 {
		g.step(0.2)
	}
	if g.cur != 1 {
		t.Fatalf("GOMAXPROCS %d after 30 periods under half a core, want 1", g.cur)
	}
	if want := []int{2, 4, 2, 1}; !slices.Equal(sets, want) {
		t.Errorf("GOMAXPROCS set to %v, want %v", sets, want)
	}
	if !strings.Contains(logs.String(), "GOMAXPROCS changed") || !strings.Contains(logs.String(), "gomaxprocs=4 was=2") {
		t.Errorf("the changes are not logged:\n%s", logs.String())
	}
}

// TestProcsGovernorRun: the governor's loop measures the CPU used per
// period and raises GOMAXPROCS when it is high; it stops with its context.
func TestProcsGovernorRun(t *testing.T) {
	var mu sync.Mutex
	var cpu time.Duration
	set := make(chan int, 1)
	g := &procsGovernor{max: 2, cur: 1, set: func(n int) { set <- n }, log: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Each measurement reports a whole second of CPU more than the
		// last: more than one core over any period up to a second.
		g.run(ctx, time.Millisecond, func() time.Duration {
			mu.Lock()
			defer mu.Unlock()
			cpu += time.Second
			return cpu
		})
	}()
	if n := <-set; n != 2 {
		t.Errorf("GOMAXPROCS set to %d, want 2", n)
	}
	cancel()
	<-done
}

// TestApplyMaxProcs: runtime.max_procs lowers GOMAXPROCS and says so; with
// GOMAXPROCS in the environment it is left as Go set it; 0 starts at 1.
func TestApplyMaxProcs(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := config.Default()
	cfg.Runtime.MaxProcs = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	runtime.GOMAXPROCS(3)
	t.Setenv("GOMAXPROCS", "3")
	applyMaxProcs(ctx, &cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("with GOMAXPROCS=3 in the environment: GOMAXPROCS %d, want 3", n)
	}
	if !strings.Contains(logs.String(), "GOMAXPROCS from the environment") {
		t.Errorf("log does not say GOMAXPROCS came from the environment:\n%s", logs.String())
	}

	t.Setenv("GOMAXPROCS", "")
	applyMaxProcs(ctx, &cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Errorf("runtime.max_procs 2 over 3: GOMAXPROCS %d, want 2", n)
	}
	if !strings.Contains(logs.String(), "GOMAXPROCS capped by runtime.max_procs") || !strings.Contains(logs.String(), "gomaxprocs=2 go_choice=3") {
		t.Errorf("log does not say runtime.max_procs capped GOMAXPROCS at 2 of 3:\n%s", logs.String())
	}

	runtime.GOMAXPROCS(3)
	cfg.Runtime.MaxProcs = 0
	cfg.Spool.Dir = "spool"
	applyMaxProcs(ctx, &cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Errorf("runtime.max_procs 0 (auto) with the spool: GOMAXPROCS %d, want Go's 3", n)
	}
	cfg.Spool.Dir = ""
	applyMaxProcs(ctx, &cfg, log)
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("runtime.max_procs 0 (auto): GOMAXPROCS %d at start, want 1", n)
	}
	if !strings.Contains(logs.String(), "runtime.max_procs 0: automatic") {
		t.Errorf("log does not say GOMAXPROCS is automatic:\n%s", logs.String())
	}
}
