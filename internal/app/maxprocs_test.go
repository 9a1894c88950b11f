package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
	"github.com/iot-mns-bridge/iot-mns-bridge/internal/maxprocs"
)

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
	// The threshold it states is the governor's.
	if want := fmt.Sprintf("GOMAXPROCS 1 while the bridge needs less than %d%% of a core, up to Go's choice", maxprocs.RaisePercent); !strings.Contains(logs.String(), want) {
		t.Errorf("log does not state the governor's threshold %q:\n%s", want, logs.String())
	}

	// The governor's changes are logged, naming the key that chose it.
	logs.Reset()
	procsChanged(log)(maxprocs.Change{N: 4, Was: 2, Cores: 1.567})
	if !strings.Contains(logs.String(), "GOMAXPROCS changed") || !strings.Contains(logs.String(), "gomaxprocs=4 was=2 cores_used=1.56") ||
		!strings.Contains(logs.String(), "runtime.max_procs 0: automatic") {
		t.Errorf("the governor's change is not logged:\n%s", logs.String())
	}
}
