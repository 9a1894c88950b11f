package opscheck

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestUnitHeaderInstallsFromTheTarball: README's tarball steps end in "then
// the steps in iot-mns-bridge.service's header", run in the tarball's
// directory, so every file the header's install lines copy (all but
// /dev/null and the directory) must be one scripts/release.sh puts in the
// tarball, under the name it gives it there.
func TestUnitHeaderInstallsFromTheTarball(t *testing.T) {
	inTarball := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*install -m \d+ \S+ "\$dir/([^"]+)"`).FindAllStringSubmatch(readRepoFile(t, "scripts/release.sh"), -1) {
		inTarball[m[1]] = true
	}
	if !inTarball["iot-mns-bridge"] || !inTarball["iot-mns-bridge.service"] {
		t.Fatalf("release.sh's tarball files not found: %v", inTarball)
	}
	var steps int
	for _, line := range strings.Split(readRepoFile(t, "configs/iot-mns-bridge.service"), "\n") {
		if !strings.HasPrefix(line, "#") {
			break // the header ends at the first line that is not a comment
		}
		f := strings.Fields(strings.TrimPrefix(line, "#"))
		if len(f) < 5 || f[0] != "install" || f[1] != "-m" || f[3] == "/dev/null" {
			continue
		}
		steps++
		if !inTarball[f[3]] {
			t.Errorf("the unit's header installs %s, which the release tarball does not hold (it holds %v): %s", f[3], slices.Sorted(maps.Keys(inTarball)), strings.TrimSpace(line))
		}
	}
	if steps < 4 {
		t.Errorf("found %d install steps copying a file in the unit's header, want the binary, config, env file and unit", steps)
	}
}
