#!/usr/bin/env bash
# analysis/report.py on traces written by the real binary, headless (MPLBACKEND=Agg, no DISPLAY):
#  - two tiny training runs (2 ranks), a capacity grid, an alltoall size sweep with the model's
#    predictions and a routed (cost-per-router) alltoall run, in subdirectories;
#  - report.py with nothing else prepared runs moebench analyze and analysis/figures.py itself
#    and writes report.md and report.html;
#  - tests/cli/report_check.py: the report links every trace and every figure file, gives every
#    trace's command line, and its summary tables equal the analyze CSV (to the printed digits);
#    the checker fails on a report with one number changed, one figure or one trace left out;
#  - a second run reuses the up-to-date summary and figures; a new trace makes an explicit
#    --summary an error and the default one be remade; the tables written beside the alltoall
#    traces (fit, MODEL predictions, cost per router) are in the report;
#  - errors: no trace (status 1), not a directory (status 2).
#
# usage: bash tests/cli/report_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
report="$here/../../analysis/report.py"
check="$here/report_check.py"
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MPLBACKEND=Agg
unset DISPLAY
results=$work/results
mkdir -p "$results/train" "$results/bench"

if ! "$python" -c "import h5py, matplotlib, numpy" 2>/dev/null; then
  _lib_fail "$python imports h5py, matplotlib and numpy" \
    "install python3-h5py python3-matplotlib python3-numpy (launch/setup.sh)"
  finish
fi

# ---- traces ----------------------------------------------------------------------------------
tiny=(--d-model 32 --layers 2 --heads 2 --experts 4 --seq-len 32 --batch-size 2 --steps 8
      --lr 3e-3 --warmup 2 --eval-every 4 --eval-batches 1 --log-every 100 --trace-flush 4
      --router-hidden 16)
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router softk --top-k 2 --capacity-factor 1.25 --out "$results/train/softk.h5"
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router expert_choice --router-arch mlp --top-k 2 --capacity-factor 1.0 --out "$results/train/ec_mlp.h5"
expect_success "Wrong tokens: 0  OK" -- "$mpirun" -np 2 "$moebench" capacity --experts 4,8 --top-k 1,2 \
  --capacity-factor 0,1.0,1.25 --tokens 64 --d-model 8 --iters 3 --warmup-iters 1 --out "$results/bench/capacity.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --min-bytes 64 \
  --max-bytes 16384 --step-factor 4 --iters 3 --warmup-iters 1 --predict 8,64 --out "$results/bench/a2a.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --pattern routed \
  --router top1,softk,expert_choice --experts 4 --top-k 1,2 --capacity-factor 1.0 --tokens 64 \
  --d-model 8 --iters 3 --warmup-iters 1 --out "$results/bench/routed.h5"

# ---- the report, made from nothing but the traces --------------------------------------------
expect_success "^report: wrote .*report.md and .*report.html \(.* 5 traces\)$" -- \
  "$python" "$report" "$results" --moebench "$moebench"
for file in report.md report.html summary/summary.csv summary/summary.md figures/frontier.png \
            figures/capacity.png figures/alltoall_cost_per_router.png; do
  if [ -s "$results/$file" ]; then _lib_pass "$file written"; else _lib_fail "$file written" "missing or empty"; fi
done
if [ "$(_lib_count "^info: running")" = 2 ]; then
  _lib_pass "report.py ran analyze and figures.py itself"
else
  _lib_fail "report.py ran analyze and figures.py itself" "expected 2 'info: running' lines"
fi
expect_success "^report OK: 5 traces, .* figure files, .* summary rows in [0-9]+ tables$" -- \
  "$python" "$check" "$results"

# The benchmark tables beside the alltoall traces, and the MODEL label of the predictions.
for needle in "### <a id=\"table-bench_a2a_fit.csv\"></a>a2a_fit.csv" \
              "### <a id=\"table-bench_a2a_predict.csv\"></a>a2a_predict.csv" \
              "**MODEL, NOT MEASURED**" "### <a id=\"table-bench_routed.csv\"></a>routed.csv" \
              "| router | top_k | capacity_factor | capacity | drop_rate | wire_MB |"; do
  if grep -qF -- "$needle" "$results/report.md"; then
    _lib_pass "report.md has: $needle"
  else
    _lib_fail "report.md has: $needle" "not found"
  fi
done

# ---- the checker can fail --------------------------------------------------------------------
for case in number figure trace; do
  expect_success "^tampered: $case$" -- "$python" "$check" --tamper "$case" "$results/report.md" "$work/bad.md"
  cp "$results/report.html" "$work/bad.html"
  expect_failure "^[0-9]+ problems$" --status 1 -- "$python" "$check" "$results" --report "$work/bad.md"
done

# ---- up to date: nothing remade; a new trace: stale summary ---------------------------------
expect_success "^report: wrote" -- "$python" "$report" "$results" --moebench "$moebench"
if [ "$(_lib_count "^info: running")" = 0 ]; then
  _lib_pass "an up-to-date summary and figures are reused"
else
  _lib_fail "an up-to-date summary and figures are reused" "report.py ran a step again"
fi
cp "$results/train/softk.h5" "$results/train/softk_copy.h5"
expect_failure "does not describe the traces under .*: it lacks train/softk_copy.h5" --status 1 -- \
  "$python" "$report" "$results" --summary "$results/summary/summary.csv" --moebench "$moebench"
expect_success "^report: wrote .*\(.* 6 traces\)$" -- "$python" "$report" "$results" --moebench "$moebench"
expect_success "^report OK: 6 traces" -- "$python" "$check" "$results"

# ---- without figures, and errors -------------------------------------------------------------
expect_success "^report: wrote" -- "$python" "$report" "$results" --no-figures --out-name plain
if grep -q "Left out (\`--no-figures\`)" "$results/plain.md" && ! grep -q "figures/" "$results/plain.md"; then
  _lib_pass "--no-figures: no figure in the report"
else
  _lib_fail "--no-figures: no figure in the report" "figures referenced in plain.md"
fi
mkdir -p "$work/empty"
expect_failure "^report.py: error: no moebench trace \(\*.h5\) under" --status 1 -- "$python" "$report" "$work/empty"
expect_failure "^report.py: error: '.*/nowhere' is not a directory" --status 2 -- "$python" "$report" "$work/nowhere"

finish
