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

// TestApply: each row is one call of Apply, from the runtime limit before,
// with what it must decide and leave as the runtime's limit.
func TestApply(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	dir := tree(t, map[string]string{
		"proc":                  "0::/\n",
		"cg/cgroup.controllers": "memory",
		"cg/memory.max":         "536870912\n",
	})
	root, proc, noCgroup := filepath.Join(dir, "cg"), filepath.Join(dir, "proc"), filepath.Join(dir, "none")
	cg := int64(512 << 20)
	fromCgroup := Limit{Bytes: int64(float64(cg) * Fraction), From: filepath.Join(root, "memory.max"), Cgroup: cg}
	for _, tc := range []struct {
		name       string
		before     int64  // the runtime's limit before the call
		gomemlimit string // the environment's GOMEMLIMIT
		proc       string
		budget     int64
		want       Limit
		runtime    int64 // the runtime's limit after the call
	}{
		{"with GOMEMLIMIT: the runtime's own setting stays", 123 << 20, "123MiB", proc, 100 << 20,
			Limit{Bytes: 123 << 20, From: "GOMEMLIMIT"}, 123 << 20},
		{"from the cgroup: 90% of its limit", prev, "", proc, 0, fromCgroup, fromCgroup.Bytes},
		{"budget under the cgroup: it wins", prev, "", proc, 100 << 20,
			Limit{Bytes: 100 << 20, From: "budget", Cgroup: cg}, 100 << 20},
		{"budget over the cgroup: the cgroup wins", prev, "", proc, 1 << 30, fromCgroup, fromCgroup.Bytes},
		{"budget without a cgroup limit: the budget alone", prev, "", noCgroup, 100 << 20,
			Limit{Bytes: 100 << 20, From: "budget"}, 100 << 20},
		{"without a limit: nothing changes", prev, "", noCgroup, 0, Limit{}, prev},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(tc.before)
			l, err := Apply(root, tc.proc, func(k string) string { return map[string]string{"GOMEMLIMIT": tc.gomemlimit}[k] }, tc.budget)
			if runtime := debug.SetMemoryLimit(-1); err != nil || l != tc.want || runtime != tc.runtime {
				t.Fatalf("Apply = %+v, %v; runtime limit %d; want %+v, runtime limit %d", l, err, runtime, tc.want, tc.runtime)
			}
		})
	}
}
