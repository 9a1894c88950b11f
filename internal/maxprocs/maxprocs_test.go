package maxprocs

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name           string
		env            string
		limit, goProcs int
		disk           bool
		wantN          int
		wantFrom       string
	}{
		{"the environment wins", "4", 1, 4, false, 0, FromEnv},
		{"the environment wins over auto", "4", 0, 4, false, 0, FromEnv},
		{"auto starts at 1", "", 0, 2, false, 1, FromAuto},
		{"auto with the spool leaves Go's choice", "", 0, 2, true, 0, FromSpool},
		{"auto on one CPU changes nothing", "", 0, 1, false, 0, FromGo},
		{"the cap lowers 16 CPUs", "", 2, 16, false, 2, FromLimit},
		{"a cap of 1, also with the spool", "", 1, 2, true, 1, FromLimit},
		{"the cap never raises Go's choice (cgroup limit 1)", "", 4, 1, false, 0, FromGo},
		{"a cap equal to Go's choice changes nothing", "", 2, 2, false, 0, FromGo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Choose(tc.env, tc.limit, tc.goProcs, tc.disk)
			if got.N != tc.wantN || got.From != tc.wantFrom {
				t.Errorf("Choose(%q, %d, %d, disk %v) = %+v, want n %d from %s", tc.env, tc.limit, tc.goProcs, tc.disk, got, tc.wantN, tc.wantFrom)
			}
		})
	}
}

// TestGovernor: GOMAXPROCS doubles (up to Go's choice) as soon as the
// process uses more than 70% of its Ps, and halves only after 30 periods
// in a row in which the halved count would have been less than half used.
func TestGovernor(t *testing.T) {
	var sets []int
	var changes []Change
	g := &governor{max: 4, cur: 1, set: func(n int) { sets = append(sets, n) }, changed: func(c Change) { changes = append(changes, c) }}
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
	// Every change is reported, with the count before it and the cores
	// that made it.
	want := []Change{{2, 1, 0.95}, {4, 2, 1.5}, {2, 4, 0.9}, {1, 2, 0.2}}
	if !slices.Equal(changes, want) {
		t.Errorf("changes reported %v, want %v", changes, want)
	}
}

// TestGovernorRun: the governor's loop measures the CPU used per period
// and raises GOMAXPROCS when it is high; it stops with its context.
func TestGovernorRun(t *testing.T) {
	var mu sync.Mutex
	var cpu time.Duration
	set := make(chan int, 1)
	g := &governor{max: 2, cur: 1, set: func(n int) { set <- n }}
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

// TestApply: Apply sets what Choose decides and says what Go had chosen;
// GOMAXPROCS from the environment is left alone.
func TestApply(t *testing.T) {
	old := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	for _, tc := range []struct {
		name     string
		env      string
		limit    int
		disk     bool
		wantFrom string
		wantN    int // GOMAXPROCS after Apply
	}{
		{"the environment", "3", 2, false, FromEnv, 3},
		{"a limit", "", 2, false, FromLimit, 2},
		{"automatic with the spool", "", 0, true, FromSpool, 3},
		{"automatic", "", 0, false, FromAuto, 1},
	} {
		runtime.GOMAXPROCS(3)
		c := Apply(ctx, env(tc.env), tc.limit, tc.disk, nil)
		if c.From != tc.wantFrom || c.Go != 3 {
			t.Errorf("%s: Apply = %+v, want from %s, Go 3", tc.name, c, tc.wantFrom)
		}
		if n := runtime.GOMAXPROCS(0); n != tc.wantN {
			t.Errorf("%s: GOMAXPROCS %d, want %d", tc.name, n, tc.wantN)
		}
	}
}
