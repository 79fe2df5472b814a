#!/usr/bin/env bash
# `moebench capacity` end to end through the real binary: every router and both dispatch
# modes deliver every token; the trace and CSV hold the documented schema and values; the
# same command twice gives identical results, timings aside.
#
# usage: bash tests/cli/capacity_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

grid=(--experts 8,16 --top-k 1,2 --capacity-factor 0,1.0,0.9,1.25 --tokens 64 --d-model 8
      --iters 5 --warmup-iters 1 --distribution zipf --zipf-s 0.8)
cells=16
for run in 1 2; do
  expect_success "Wrong tokens: 0  OK" -- \
    "$mpirun" -np 2 "$moebench" capacity "${grid[@]}" --out "$work/run$run.h5"
done
expect_success "trace OK" -- "$python" "$here/check_capacity_trace.py" "$work/run1.h5" "$work/run1.csv" 2 $cells

# Identical apart from timings: drop the time and throughput columns and compare.
strip_timings() {
  "$python" - "$1" <<'PY'
import csv, sys
timed = ("_ms", "_per_s")
rows = list(csv.reader(open(sys.argv[1])))
keep = [i for i, name in enumerate(rows[0]) if not name.endswith(timed)]
for row in rows:
    print(",".join(row[i] for i in keep))
PY
}
if diff <(strip_timings "$work/run1.csv") <(strip_timings "$work/run2.csv") >/dev/null; then
  _lib_pass "two runs of the same command give identical CSV rows, timings aside"
else
  _lib_fail "two runs of the same command give identical CSV rows, timings aside" \
    "$(diff <(strip_timings "$work/run1.csv") <(strip_timings "$work/run2.csv") | head -5)"
fi
# Bitwise: every dataset of the two traces that is not a time or a rate is identical.
expect_success "identical datasets" -- \
  "$python" "$here/compare_capacity_traces.py" "$work/run1.h5" "$work/run2.h5"

# Every router and both dispatch modes, 4 ranks (expert_choice needs CF > 0).
for router in top1 topk_hard softk hash expert_choice; do
  k=2
  [ "$router" = top1 ] && k=1
  for dispatch in ragged padded; do
    expect_success "Wrong tokens: 0  OK" -- \
      "$mpirun" -np 4 "$moebench" capacity --router "$router" --dispatch "$dispatch" \
      --experts 8 --top-k $k --capacity-factor 1.0,1.5 --tokens 64 --d-model 8 --iters 3 \
      --out "$work/$router-$dispatch.h5"
  done
done

# Options from an INI file; the command line wins.
printf 'experts = 8\ntop-k = 1\ncapacity-factor = 1.0\ntokens = 32\nd-model = 4\niters = 2\n' >"$work/c.ini"
expect_success "^ +16 +1 +1.00 " -- \
  "$mpirun" -np 2 "$moebench" capacity --config "$work/c.ini" --experts 16 --out "$work/ini.h5"

finish
