#!/usr/bin/env bash
# The unified experiment driver end to end, in its --tiny mode (2 ranks, 10 steps of a d = 32
# model per run; about a minute on 2 cores):
#  - launch/experiment_unified.sh --tiny runs every planned run (the --dry-run list), then
#    moebench analyze, analysis/figures.py and analysis/report.py;
#  - the summary CSV has one complete row per run, with the planned router, k and CF;
#  - every training figure exists (and the per-run ones for every run), the report exists and
#    tests/cli/report_check.py finds it consistent with the traces, figures and CSV;
#  - commands.sh records every command and is valid bash; each run has its log;
#  - errors: an unknown argument, a results directory of something else, and a run that fails
#    (3 ranks for 8 experts) stop the driver with a clear message.
#
# usage: bash tests/cli/experiment_unified_quick.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
driver="$here/../../launch/experiment_unified.sh"
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MPLBACKEND=Agg PYTHON=$python FIGURE_FORMATS=png
unset DISPLAY STEPS
out=$work/unified

if ! "$python" -c "import h5py, matplotlib, numpy" 2>/dev/null; then
  _lib_fail "$python imports h5py, matplotlib and numpy" \
    "install python3-h5py python3-matplotlib python3-numpy (launch/setup.sh)"
  finish
fi

# ---- the plan ----------------------------------------------------------------------------------
expect_success "\(14 runs, --tiny\)" -- env OUT="$out" MOEBENCH="$moebench" LAUNCHER="$mpirun -np 2" \
  bash "$driver" --tiny --dry-run
grep -E " train .* --out " "$LIB_OUTPUT_FILE" >"$work/plan.txt"
runs=$(wc -l <"$work/plan.txt" | tr -d ' ')
if [ "$runs" = 14 ] && [ ! -e "$out" ]; then
  _lib_pass "--dry-run lists 14 training runs and writes nothing"
else
  _lib_fail "--dry-run lists 14 training runs and writes nothing" "$runs runs listed; $out exists: $([ -e "$out" ] && echo yes || echo no)"
fi

# ---- the run -----------------------------------------------------------------------------------
MOEBENCH_TEST_TIMEOUT=${MOEBENCH_TEST_TIMEOUT:-300} expect_success \
  "^== unified \(--tiny\): 14 runs, analyze, figures and report in" -- \
  env OUT="$out" MOEBENCH="$moebench" LAUNCHER="$mpirun -np 2" bash "$driver" --tiny
grep -E "^\[ ?[0-9]+/14\] " "$LIB_OUTPUT_FILE" | sed 's/^/    /'

# The summary: one complete row per planned run, with its router, k and CF.
expect_success "^summary OK: 14 rows$" -- "$python" "$here/report_summary_check.py" "$out/summary/summary.csv" "$work/plan.txt" --steps 10 --ranks 2

for figure in frontier router_arch_frontier curves balance gate_balance expert_load; do
  if [ -s "$out/figures/$figure.png" ]; then _lib_pass "figure $figure.png"; else _lib_fail "figure $figure.png" "missing or empty"; fi
done
missing=0
while read -r line; do
  name=$(sed -E 's|.* --out [^ ]*/([^/ ]+)\.h5.*|\1|' <<<"$line")
  for prefix in token_expert_heatmap colored_tokens; do
    [ -s "$out/figures/${prefix}_$name.png" ] || { missing=$((missing + 1)); echo "    missing: ${prefix}_$name.png"; }
  done
  [ -s "$out/logs/$name.log" ] || { missing=$((missing + 1)); echo "    missing: logs/$name.log"; }
done <"$work/plan.txt"
if [ "$missing" = 0 ]; then
  _lib_pass "per-run figures and logs of all 14 runs"
else
  _lib_fail "per-run figures and logs of all 14 runs" "$missing files missing"
fi
for file in report.md report.html summary/summary.md commands.sh; do
  if [ -s "$out/$file" ]; then _lib_pass "$file written"; else _lib_fail "$file written" "missing or empty"; fi
done
expect_success "^report OK: 14 traces, .* 14 summary rows in 2 tables$" -- "$python" "$here/report_check.py" "$out"
expect_success -- bash -n "$out/commands.sh"
recorded=$(grep -cE "(^| )train .* --out " "$out/commands.sh")
if [ "$recorded" = 14 ] && grep -q "analyze .* --out-dir summary" "$out/commands.sh" &&
   grep -q "analysis/figures.py" "$out/commands.sh" && grep -q "analysis/report.py" "$out/commands.sh"; then
  _lib_pass "commands.sh records the 14 runs, analyze, figures and report"
else
  _lib_fail "commands.sh records the 14 runs, analyze, figures and report" "$recorded train lines"
fi

# ---- errors ------------------------------------------------------------------------------------
expect_failure "error: unknown argument '--fast'" --status 2 -- \
  env OUT="$work/x" MOEBENCH="$moebench" bash "$driver" --fast
mkdir -p "$work/other" && echo keep >"$work/other/notes.txt"
expect_failure "error: OUT=.*/other is not empty and was not written by an experiment driver" --status 2 -- \
  env OUT="$work/other" MOEBENCH="$moebench" LAUNCHER="$mpirun -np 2" bash "$driver" --tiny
if [ -f "$work/other/notes.txt" ]; then _lib_pass "a foreign OUT is left alone"; else _lib_fail "a foreign OUT is left alone" "notes.txt deleted"; fi
expect_failure "error: this command failed with exit status" --status 1 -- \
  env OUT="$work/np3" MOEBENCH="$moebench" LAUNCHER="$mpirun -np 3" bash "$driver" --tiny
if grep -q -- "--experts" "$LIB_OUTPUT_FILE"; then
  _lib_pass "the failed run's message (naming --experts) is shown"
else
  _lib_fail "the failed run's message (naming --experts) is shown" "not in the output"
fi

finish
