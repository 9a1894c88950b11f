package memlimit

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// tree writes files (path relative to dir → content) and returns dir.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCgroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
		file  string // suffix of the file the limit came from
	}{
		{"v2 container (own cgroup at the root)", map[string]string{
			"proc":                  "0::/\n",
			"cg/cgroup.controllers": "cpu memory pids",
			"cg/memory.max":         "536870912\n",
		}, 512 << 20, "cg/memory.max"},
		{"v2 systemd unit, a parent tighter", map[string]string{
			"proc":                       "0::/system.slice/bridge.service\n",
			"cg/cgroup.controllers":      "cpu memory pids",
			"cg/system.slice/memory.max": "268435456\n",
			"cg/system.slice/bridge.service/memory.max": "max\n",
		}, 256 << 20, "cg/system.slice/memory.max"},
		{"v2 no limit", map[string]string{
			"proc":                     "0::/user.slice\n",
			"cg/cgroup.controllers":    "cpu memory",
			"cg/user.slice/memory.max": "max\n",
		}, 0, ""},
		{"v1", map[string]string{
			"proc": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
			"cg/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
			"cg/memory/memory.limit_in_bytes":            "9223372036854771712\n",
		}, 1 << 30, "cg/memory/docker/abc/memory.limit_in_bytes"},
		{"v1 no limit", map[string]string{
			"proc":                            "4:memory:/\n",
			"cg/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, ""},
		{"hybrid: v2 without memory mounted elsewhere, v1 limit", map[string]string{
			"proc":                                "4:memory:/job\n0::/\n",
			"cg/unified/cgroup.controllers":       "",
			"cg/memory/job/memory.limit_in_bytes": "402653184\n",
		}, 384 << 20, "cg/memory/job/memory.limit_in_bytes"},
		{"no cgroup file", map[string]string{}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tree(t, tc.files)
			got, file, err := Cgroup(filepath.Join(dir, "cg"), filepath.Join(dir, "proc"))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || !strings.HasSuffix(filepath.ToSlash(file), tc.file) {
				t.Fatalf("Cgroup = %d from %q, want %d from …%s", got, file, tc.want, tc.file)
			}
		})
	}
}

func TestCgroupRefusesGarbage(t *testing.T) {
	dir := tree(t, map[string]string{
		"proc":                  "0::/\n",
		"cg/cgroup.controllers": "memory",
		"cg/memory.max":         "lots\n",
	})
	_, _, err := Cgroup(filepath.Join(dir, "cg"), filepath.Join(dir, "proc"))
	if err == nil || !strings.Contains(err.Error(), `holds "lots"`) {
		t.Fatalf("err = %v, want one naming the bad content", err)
	}
}

func TestApply(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	dir := tree(t, map[string]string{
		"proc":                  "0::/\n",
		"cg/cgroup.controllers": "memory",
		"cg/memory.max":         "536870912\n",
	})
	root, proc := filepath.Join(dir, "cg"), filepath.Join(dir, "proc")

	// GOMEMLIMIT set: the runtime's own setting stays.
	debug.SetMemoryLimit(123 << 20)
	l, err := Apply(root, proc, func(k string) string { return map[string]string{"GOMEMLIMIT": "123MiB"}[k] }, 100<<20)
	if err != nil || l.From != "GOMEMLIMIT" || l.Bytes != 123<<20 || debug.SetMemoryLimit(-1) != 123<<20 {
		t.Fatalf("with GOMEMLIMIT: %+v, %v; runtime limit %d", l, err, debug.SetMemoryLimit(-1))
	}

	// Not set: 90% of the cgroup's limit.
	l, err = Apply(root, proc, func(string) string { return "" }, 0)
	cg := int64(512 << 20)
	want := int64(float64(cg) * Fraction)
	if err != nil || l.Bytes != want || l.Cgroup != 512<<20 || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("from the cgroup: %+v, %v; runtime limit %d, want %d", l, err, debug.SetMemoryLimit(-1), want)
	}

	// A budget below that wins; one above does not.
	l, err = Apply(root, proc, func(string) string { return "" }, 100<<20)
	if err != nil || l.Bytes != 100<<20 || l.From != "budget" || debug.SetMemoryLimit(-1) != 100<<20 {
		t.Fatalf("budget under the cgroup: %+v, %v; runtime limit %d", l, err, debug.SetMemoryLimit(-1))
	}
	l, err = Apply(root, proc, func(string) string { return "" }, 1<<30)
	if err != nil || l.Bytes != want || debug.SetMemoryLimit(-1) != want {
		t.Fatalf("budget over the cgroup: %+v, %v; runtime limit %d, want %d", l, err, debug.SetMemoryLimit(-1), want)
	}

	// No cgroup limit: the budget alone, and without one nothing changes.
	l, err = Apply(root, filepath.Join(dir, "none"), func(string) string { return "" }, 100<<20)
	if err != nil || l.Bytes != 100<<20 || l.Cgroup != 0 || debug.SetMemoryLimit(-1) != 100<<20 {
		t.Fatalf("budget without a cgroup limit: %+v, %v", l, err)
	}
	debug.SetMemoryLimit(prev)
	l, err = Apply(root, filepath.Join(dir, "none"), func(string) string { return "" }, 0)
	if err != nil || l.Bytes != 0 || debug.SetMemoryLimit(-1) != prev {
		t.Fatalf("without a limit: %+v, %v", l, err)
	}
}
