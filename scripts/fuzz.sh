#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for a bounded time each.
#
#   scripts/fuzz.sh            # 20s per target
#   scripts/fuzz.sh 1m         # any go test -fuzztime value (10s, 2m, 500x)
#   FUZZ_PATTERN=Route scripts/fuzz.sh 30s   # only targets whose name matches
#   FUZZ_MINIMIZE_TIME=10s scripts/fuzz.sh   # longer minimization (default 2s)
#
# Targets are the `func FuzzXxx(f *testing.F)` in *_test.go files. The seed
# corpora are the f.Add seeds and the committed testdata/fuzz/<FuzzXxx>
# directories. A crasher is written to testdata/fuzz/<FuzzXxx>/ by go test;
# commit it with the fix so it stays a regression test. Exits non-zero when
# any target fails, after running all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime="${1:-20s}"
pattern="${FUZZ_PATTERN:-.}"
# Go minimizes each input that adds coverage before it fuzzes on, for up to
# 60 s by default, and counts no execs meanwhile: a target given 10 s spent
# most of it on one input (FuzzEnvelope stopped at 1,608 execs after 3 s in
# CI, FuzzDecodeMessage, of 256 KiB seeds, at 47). A short minimization
# keeps the time for fuzzing; a crasher is still written, less minimized.
minimize="${FUZZ_MINIMIZE_TIME:-2s}"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# "dir<TAB>FuzzName" for every target; skip the mirror and temp dirs.
mapfile -t targets < <(
  grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(' . \
    | grep -v -e '^\./\.tmp/' -e '^\./\.mirror/' \
    | sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1\t\2#' \
    | grep -E "$pattern" | sort -u
)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz.sh: no fuzz targets match '$pattern'" >&2
  exit 1
fi

failed=()
for t in "${targets[@]}"; do
  dir="${t%%$'\t'*}"
  name="${t##*$'\t'}"
  echo "== $dir $name ($fuzztime)"
  # -run='^$' skips the package's other tests; -parallel 2 fits a 2-core
  # CI runner.
  out=$(mktemp)
  if go test "$dir" -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" -fuzzminimizetime="$minimize" -parallel=2 2>&1 | tee "$out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
    :
  elif grep -q 'context deadline exceeded' "$out" && ! grep -q -e 'Failing input written to' -e '^panic:' -e 'fuzz: elapsed.*failure' "$out"; then
    # Go's fuzzer can report "context deadline exceeded" when -fuzztime ends
    # while it is still minimizing a new interesting input: no input failed.
    echo "fuzz.sh: $dir $name: the time ran out during minimization (no failing input); counted as passed"
  else
    failed+=("$dir $name")
  fi
  rm -f "$out"
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'fuzz.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} target(s) passed"
