#!/usr/bin/env bash
# analysis/figures.py on traces written by the real binary:
#  - four tiny training runs (2 ranks; softk/linear, expert_choice/mlp, top1/mlp_hadamard,
#    hash dropless), a tiny capacity grid, a tiny alltoall size sweep and a tiny routed
#    (cost-per-router) alltoall run, in subdirectories;
#  - every figure is written as a non-empty PNG and SVG, per-run figures once per run;
#  - the data behind the figures (frontier points and Pareto set, capacity drop rates, loads,
#    curves, samples, bandwidths, cost per router) matches what tests/cli/figures_check.py recomputes from the
#    traces with h5py, and the checker does fail on a CSV with one value changed;
#  - --only NAME draws exactly that figure; an unknown name is a clear error (status 2);
#  - a run without `complete` is read up to its last flushed step and flagged;
#  - a figure without data is skipped with one info line; no traces at all is an error.
#
# usage: bash tests/cli/figures_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
figures="$here/../../analysis/figures.py"
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export MPLBACKEND=Agg
results=$work/results
mkdir -p "$results/train" "$results/bench"

# The figure tool needs Debian's python3-matplotlib (launch/setup.sh installs the packages).
if ! "$python" -c "import h5py, matplotlib, numpy" 2>/dev/null; then
  _lib_fail "$python imports h5py, matplotlib and numpy" \
    "install python3-h5py python3-matplotlib python3-numpy (launch/setup.sh)"
  finish
fi

# ---- traces ----------------------------------------------------------------------------------
tiny=(--d-model 32 --layers 2 --heads 2 --experts 4 --seq-len 32 --batch-size 2 --steps 12
      --lr 3e-3 --warmup 2 --eval-every 4 --eval-batches 1 --log-every 100 --trace-flush 4
      --router-hidden 16)
runs=(softk_linear expert_choice_mlp top1_hadamard hash_dropless)
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router softk --router-arch linear --top-k 2 --capacity-factor 1.25 --out "$results/train/softk_linear.h5"
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router expert_choice --router-arch mlp --top-k 2 --capacity-factor 1.0 --out "$results/train/expert_choice_mlp.h5"
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router top1 --router-arch mlp_hadamard --top-k 1 --capacity-factor 1.0 --out "$results/train/top1_hadamard.h5"
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" \
  --router hash --top-k 2 --capacity-factor 0 --out "$results/train/hash_dropless.h5"
expect_success "Wrong tokens: 0  OK" -- "$mpirun" -np 2 "$moebench" capacity --experts 4,8 --top-k 1,2 \
  --capacity-factor 0,1.0,1.25 --tokens 64 --d-model 8 --iters 3 --warmup-iters 1 --distribution zipf \
  --out "$results/bench/capacity.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --min-bytes 64 \
  --max-bytes 16384 --step-factor 4 --iters 3 --warmup-iters 1 --out "$results/bench/alltoall.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --pattern routed \
  --router top1,softk,hash,expert_choice --experts 4 --top-k 1,2 --capacity-factor 1.0,1.25 --tokens 64 \
  --d-model 8 --iters 3 --warmup-iters 1 --out "$results/bench/routed.h5"

# ---- every figure ----------------------------------------------------------------------------
out=$results/figures
expect_success "^frontier: wrote" -- "$python" "$figures" "$results" --out "$out"

# check_image FILE: a non-empty PNG (signature) or SVG (an <svg element).
check_image() {
  local file=$1
  if [ ! -s "$file" ]; then
    _lib_fail "$(basename "$file") is a non-empty image" "missing or empty"
    return
  fi
  case $file in
    *.png) if [ "$(head -c 8 "$file" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
             _lib_pass "$(basename "$file") is a PNG"
           else
             _lib_fail "$(basename "$file") is a PNG" "no PNG signature"
           fi ;;
    *.svg) if grep -q "<svg" "$file" && grep -q "</svg>" "$file"; then
             _lib_pass "$(basename "$file") is an SVG"
           else
             _lib_fail "$(basename "$file") is an SVG" "no <svg> element"
           fi ;;
  esac
}
names=(frontier router_arch_frontier curves balance gate_balance expert_load capacity alltoall_bandwidth
       alltoall_cost_per_router)
for run in "${runs[@]}"; do
  names+=("token_expert_heatmap_train_$run" "colored_tokens_train_$run")
done
for name in "${names[@]}"; do
  check_image "$out/$name.png"
  check_image "$out/$name.svg"
done
for table in router_arch.csv router_arch.md token_expert_heatmap_train_softk_linear.md; do
  if [ -s "$out/$table" ]; then _lib_pass "$table written"; else _lib_fail "$table written" "missing or empty"; fi
done

# ---- the data behind the figures -------------------------------------------------------------
expect_success "^figures data OK$" -- "$python" "$here/figures_check.py" "$results" "$out"
cat >"$work/router_arch_check.py" <<'PY'
import csv, sys
rows = {r["run"]: r for r in csv.DictReader(open(sys.argv[1]))}
# router parameters of both MoE blocks (src/routing/router_net.cpp): d = 32, E = 4, h = 16
assert int(rows["train_softk_linear"]["router_params"]) == 2 * 32 * 4, rows["train_softk_linear"]
assert int(rows["train_expert_choice_mlp"]["router_params"]) == 2 * (32 * 16 + 16 * 4)
assert int(rows["train_top1_hadamard"]["router_params"]) == 2 * (2 * 32 * 16 + 16 * 4)
assert rows["train_hash_dropless"]["router_entropy_nats"] == "", "hash has no router entropy"
assert float(rows["train_softk_linear"]["router_entropy_nats"]) > 0
print("router_arch: %d runs" % len(rows))
PY
expect_success "^router_arch: 4 runs" -- "$python" "$work/router_arch_check.py" "$out/router_arch.csv"

# The checker can fail: one value changed in a copy of the CSVs.
tamper() {  # tamper DIR CSV COLUMN: changes the first row's COLUMN by 1 % + 0.001
  "$python" - "$1/$2" "$3" <<'PY'
import csv, sys
path, column = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(path)))
rows[0][column] = repr(float(rows[0][column]) * 1.01 + 0.001)
with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
}
for case in "frontier.csv ppl" "frontier.csv tokens_per_s" "capacity.csv drop_rate" \
            "alltoall_cost_per_router.csv wire_bytes"; do
  read -r table column <<<"$case"
  rm -rf "$work/bad" && cp -r "$out" "$work/bad"
  tamper "$work/bad" "$table" "$column"
  expect_failure "^MISMATCH: .*$column" --status 1 -- "$python" "$here/figures_check.py" "$results" "$work/bad"
done
rm -rf "$work/bad" && cp -r "$out" "$work/bad"
"$python" - "$work/bad/frontier.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
# The first run's membership flipped: a different set whichever runs are on the front (with four
# runs all of them can be, so claiming every run would change nothing).
rows[0]["pareto"] = "0" if int(rows[0]["pareto"]) else "1"
with open(sys.argv[1], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
PY
expect_failure "^MISMATCH: frontier: Pareto set" --status 1 -- \
  "$python" "$here/figures_check.py" "$results" "$work/bad"

# ---- --only, formats, errors -----------------------------------------------------------------
expect_success "^capacity: wrote 3 files" -- "$python" "$figures" "$results" --out "$work/only" --only capacity
listing=$(cd "$work/only" && ls | tr '\n' ' ')
if [ "$listing" = "capacity.csv capacity.png capacity.svg " ]; then
  _lib_pass "--only capacity writes capacity.{csv,png,svg} and nothing else"
else
  _lib_fail "--only capacity writes capacity.{csv,png,svg} and nothing else" "found: $listing"
fi
expect_success "^frontier: wrote 2 files: frontier.png frontier.csv$" -- \
  "$python" "$figures" "$results" --out "$work/only_png" --only frontier --format png
expect_failure "error: --only: unknown figure 'scatter' \(known: frontier," --status 2 -- \
  "$python" "$figures" "$results" --out "$work/x" --only scatter
expect_failure "error: --format: unknown format 'jpg'" --status 2 -- \
  "$python" "$figures" "$results" --out "$work/x" --format png,jpg
mkdir -p "$work/empty"
expect_failure "error: no moebench trace \(\*.h5\) under" --status 1 -- "$python" "$figures" "$work/empty"

# A figure without data: one info line, exit 0 (only benchmark traces here).
mkdir -p "$work/benches"
cp "$results/bench/capacity.h5" "$work/benches/"
expect_success "^info: frontier: skipped \(no training trace with an evaluation\)$" -- \
  "$python" "$figures" "$work/benches" --only frontier,capacity --format png

# ---- a run that did not finish ---------------------------------------------------------------
# What a run killed after its flush at step 8 leaves: 8 rows of the per-step series, and the
# series appended after that flush (tokens/s, timings) one row short; 2 evaluations; no
# `complete`.
mkdir -p "$work/partial"
cp "$results/train/softk_linear.h5" "$work/partial/died.h5"
cp "$results/train/top1_hadamard.h5" "$work/partial/done.h5"
cat >"$work/truncate.py" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    del f["train"].attrs["complete"]
    def cut(name, obj):
        if isinstance(obj, h5py.Dataset):
            short = obj.name in ("/train/tokens_per_s", "/train/ms_per_step", "/timing/phase_ms")
            obj.resize(7 if short else 8, axis=0)
    for group in ("train", "routing", "comm", "timing"):
        f[group].visititems(cut)
    for group in ("eval", "samples"):
        for obj in f[group].values():
            obj.resize(2, axis=0)
print("truncated")
PY
expect_success "^truncated$" -- "$python" "$work/truncate.py" "$work/partial/died.h5"
expect_success "^info: died: incomplete run \(no /train complete\): read 7 steps and 2 evaluations" -- \
  "$python" "$figures" "$work/partial" --only frontier,curves,expert_load --format png
expect_success "^figures data OK$" -- "$python" "$here/figures_check.py" "$work/partial" \
  "$work/partial/figures" --require frontier,curves,expert_load
cat >"$work/flagged.py" <<'PY'
import csv, sys
rows = {r["run"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert rows["died"]["complete"] == "0" and rows["died"]["pareto"] == "0", rows["died"]
assert rows["died"]["eval_step"] == "8", rows["died"]
assert rows["done"]["complete"] == "1" and rows["done"]["pareto"] == "1", rows["done"]
print("incomplete run flagged")
PY
expect_success "^incomplete run flagged$" -- "$python" "$work/flagged.py" "$work/partial/figures/frontier.csv"

finish
