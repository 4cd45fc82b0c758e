#!/usr/bin/env bash
# Run pytest-benchmark suites at an older revision and at this checkout, alternating, on the same machine.
#
#   benches/compare_revisions.sh REV [ROUNDS] [SUITE ...]      e.g. benches/compare_revisions.sh b12e261 2
#
# The older revision is checked out with `git worktree` under $TMPDIR, its dispatch core is compiled there, and its
# `plugin/`, `dispatch_core/` and `exporters/` are laid out as a `tritonmix` package that PYTHONPATH puts before this
# checkout's editable install (same venv, same dependencies). Output: one file per suite, revision and round under
# bench-results/compare/. Default suites: the client overhead, the dispatch core and the controller tick.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/compare_revisions.sh REV [ROUNDS] [SUITE ...]}
rounds=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(benches/test_bench_clients.py benches/test_bench_dispatch.py benches/test_bench_controller.py)
py=$PWD/.venv/bin/python
base=${TMPDIR:-/tmp}/tritonmix-compare-$(git rev-parse --short "$rev")
out=$PWD/bench-results/compare
mkdir -p "$out"
if [ ! -d "$base/tree" ]; then
  git worktree add --detach "$base/tree" "$rev" >/dev/null
  (cd "$base/tree" && "$py" setup.py -q build_ext --inplace >/dev/null)
  mkdir -p "$base/site"
  cp -r "$base/tree/plugin" "$base/site/tritonmix"
  cp -r "$base/tree/dispatch_core" "$base/site/tritonmix/dispatch_core"
  cp -r "$base/tree/exporters" "$base/site/tritonmix/exporters"
fi
for k in $(seq 1 "$rounds"); do
  for suite in "${suites[@]}"; do
    name=$(basename "$suite" .py)
    (cd "$base/tree" && PYTHONPATH="$base/site" "$py" -m pytest "$suite" -p no:cacheprovider --benchmark-only -q -s \
       --benchmark-columns=min,median,mean) > "$out/$name-$rev-$k.txt" 2>&1 || true
    "$py" -m pytest "$suite" -p no:cacheprovider --benchmark-only -q -s --benchmark-columns=min,median,mean \
       > "$out/$name-HEAD-$k.txt" 2>&1 || true
  done
done
echo "results in $out"
