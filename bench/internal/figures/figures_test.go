package figures

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLatenciesOf(t *testing.T) {
	if got := LatenciesOf(nil); got != (Latencies{}) {
		t.Errorf("LatenciesOf(nil) = %+v, want zeros", got)
	}
	var sorted []time.Duration
	for i := 1; i <= 1000; i++ {
		sorted = append(sorted, time.Duration(i)*time.Millisecond)
	}
	want := Latencies{P50: 501, P99: 991, P999: 1000, Max: 1000}
	if got := LatenciesOf(sorted); got != want {
		t.Errorf("LatenciesOf(1..1000 ms) = %+v, want %+v", got, want)
	}
	if p := Percentile([]time.Duration{time.Second}, 0.5); p != 1000 {
		t.Errorf("Percentile of one = %v ms, want 1000", p)
	}
}

func TestLoadAvg(t *testing.T) {
	if f := strings.Fields(LoadAvg()); len(f) != 3 {
		t.Errorf("LoadAvg() = %q, want three fields", LoadAvg())
	}
}

func TestSave(t *testing.T) {
	var out strings.Builder
	if err := Save(&out, "", map[string]int{"a": 1}); err != nil || out.Len() != 0 {
		t.Fatalf("Save with no path: %v, wrote %q", err, out.String())
	}
	path := filepath.Join(t.TempDir(), "new", "report.json")
	if err := Save(&out, path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"a\": 1\n}\n"; string(b) != want {
		t.Errorf("file %q, want the report as indented JSON ending in a newline: %q", b, want)
	}
	if !strings.Contains(out.String(), "wrote "+path) {
		t.Errorf("out = %q, want it to name %s", out.String(), path)
	}
}
