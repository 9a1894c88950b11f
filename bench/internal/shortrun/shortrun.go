// Package shortrun is the end-to-end test the benchmark harness (bench) and
// the soak (bench/soak) make of themselves alike: run the command
// in-process, bounded in time, with its JSON report written to a temporary
// file, and read that report back.
//
// Test support only; not part of the product.
package shortrun

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Run calls run with a deadline of limit, a JSON report path in a
// temporary directory and a buffer for its output, and logs the output. The
// test stops, showing the output, when run fails or its JSON file cannot
// be read or decoded. It returns run's report, the JSON file decoded into
// a new R, the file as written and the output.
func Run[R any](t *testing.T, limit time.Duration,
	run func(ctx context.Context, jsonPath string, out io.Writer) (R, error)) (rep, back R, file []byte, out string) {
	t.Helper()
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	var buf bytes.Buffer
	rep, err := run(ctx, jsonPath, &buf)
	out = buf.String()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	t.Log(out)
	file, err = os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(file, &back); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	return rep, back, file, out
}
