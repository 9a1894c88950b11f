// Package memlimit gives the Go runtime a soft memory limit: the lower of
// the program's own budget and the memory limit of the cgroup the process
// runs in (a container, a systemd unit with MemoryMax=), so that the garbage
// collector works harder before the kernel kills the process, rather than
// letting the heap double between two collections. An explicit GOMEMLIMIT
// always wins.
//
// Both cgroup layouts are read: v2 (memory.max in the process's cgroup and
// its ancestors, under a unified hierarchy mounted at the root) and v1
// (memory.limit_in_bytes under the memory controller's mount). The tightest
// limit found wins; "max" and v1's "no limit" value mean none.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// Fraction of the cgroup limit given to the runtime as its soft limit; the
// rest is left for memory the runtime does not count (the kernel's page
// cache of the spool and dead-letter files charged to the cgroup, thread
// stacks outside Go).
const Fraction = 0.9

// v1Unlimited is the smallest value cgroup v1 uses for "no limit" (it
// reports 2^63 rounded down to a page).
const v1Unlimited = 1 << 62

// Limit is what Apply decided.
type Limit struct {
	// Bytes is the runtime's soft memory limit now; 0 when none was set
	// (the runtime's default: no limit).
	Bytes int64
	// From says where it came from: "GOMEMLIMIT", "budget", or the cgroup
	// file that held the limit; "" when none was set.
	From string
	// Cgroup is the cgroup's limit (0 when none was found).
	Cgroup int64
}

// Apply sets the runtime's soft memory limit to the lower of budget (the
// heap the program means to need; 0 for none) and Fraction of the cgroup's
// memory limit, read under root (normally "/sys/fs/cgroup") for the
// cgroups named in procCgroup (normally "/proc/self/cgroup"), unless
// getenv("GOMEMLIMIT") is set: the runtime honours that by itself and Apply
// changes nothing. With neither a budget nor a cgroup limit it changes
// nothing either. An error means the cgroup files could not be read; the
// budget alone is applied then.
func Apply(root, procCgroup string, getenv func(string) string, budget int64) (Limit, error) {
	if getenv("GOMEMLIMIT") != "" {
		return Limit{Bytes: debug.SetMemoryLimit(-1), From: "GOMEMLIMIT"}, nil
	}
	cg, file, err := Cgroup(root, procCgroup)
	l := Limit{Cgroup: cg}
	if cg > 0 {
		l.Bytes, l.From = int64(float64(cg)*Fraction), file
	}
	if budget > 0 && (l.Bytes == 0 || budget < l.Bytes) {
		l.Bytes, l.From = budget, "budget"
	}
	if l.Bytes > 0 {
		debug.SetMemoryLimit(l.Bytes)
	}
	return l, err
}

// Cgroup returns the tightest memory limit of the cgroups listed in the
// file procCgroup (the format of /proc/self/cgroup) and of their ancestors,
// reading the cgroup files under root, and the file it came from. It
// returns 0 when there is no limit, and no error when procCgroup does not
// exist (not Linux, or no cgroups).
func Cgroup(root, procCgroup string) (int64, string, error) {
	f, err := os.Open(procCgroup)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("memory limit: %w", err)
	}
	defer f.Close()
	var best int64
	var bestFile string
	consider := func(limit int64, file string) {
		if limit > 0 && (best == 0 || limit < best) {
			best, bestFile = limit, file
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		controllers, cgPath := parts[1], parts[2]
		switch {
		case parts[0] == "0" && controllers == "":
			// v2, when the unified hierarchy is mounted at root.
			if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
				continue
			}
			l, file, err := walk(root, cgPath, "memory.max")
			if err != nil {
				return 0, "", err
			}
			consider(l, file)
		case hasController(controllers, "memory"):
			l, file, err := walk(filepath.Join(root, "memory"), cgPath, "memory.limit_in_bytes")
			if err != nil {
				return 0, "", err
			}
			consider(l, file)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("memory limit: read %s: %w", procCgroup, err)
	}
	return best, bestFile, nil
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// walk reads name in the cgroup directory of cgPath under mount and in each
// ancestor up to mount, and returns the smallest limit found. A directory
// that does not exist is skipped: inside a container's cgroup namespace the
// path may name a cgroup that is mounted as the root itself.
func walk(mount, cgPath, name string) (int64, string, error) {
	var best int64
	var bestFile string
	for p := path.Clean("/" + cgPath); ; p = path.Dir(p) {
		file := filepath.Join(mount, filepath.FromSlash(p), name)
		l, err := readLimit(file)
		if err != nil {
			return 0, "", err
		}
		if l > 0 && (best == 0 || l < best) {
			best, bestFile = l, file
		}
		if p == "/" {
			return best, bestFile, nil
		}
	}
}

// readLimit reads one limit file: 0 for "max", v1's no-limit value or a
// file that does not exist.
func readLimit(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("memory limit: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" || s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory limit: %s holds %q, not a number of bytes or \"max\"", file, s)
	}
	if n <= 0 || n >= v1Unlimited {
		return 0, nil
	}
	return n, nil
}
