#!/usr/bin/env bash
# `moebench analyze` through the real binary, on traces written by the real commands:
#  - two tiny training runs (2 ranks softk/mlp_hadamard with drops, 1 rank hash with every
#    other block MoE), a capacity grid (8 cells), an alltoall sweep (9 rows) and an alltoall
#    cost-per-router table (--pattern routed, 5 cells): the CSV rows are exactly the values
#    analyze_check.py recomputes from the traces (docs/analyze.md), one per run / cell, and the
#    Markdown (file and stdout) agrees, each table with exactly the columns its rows fill; the
#    same under mpirun -np 2;
#  - a trace of a run that died while flushing, a capacity grid and a routed table cut short:
#    read up to their last complete step / cell, marked complete = 0, one warning each;
#  - an alltoall trace with datasets analyze does not know: the same rows, no routed columns in
#    its Markdown table; a --pattern replay trace (no table analyze reads): no rows and a
#    warning;
#  - a text file, an HDF5 file that is not a trace, a schema version 999 and a missing file:
#    one clear message, status 2 on every rank, no HDF5 error stack, no output file.
#
# usage: bash tests/cli/analyze_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# expect_once_in_last_output REGEX: a further pattern in the output of the last check.
expect_once_in_last_output() {
  _lib_check_once "the last output holds /$1/" "$1" && _lib_pass "the last output holds /$1/ once"
}
expect_no_hdf5_stack() {
  if grep -q "HDF5-DIAG" "$LIB_OUTPUT_FILE"; then
    _lib_fail "no HDF5 error stack" "the output holds an HDF5-DIAG error stack"
  else
    _lib_pass "no HDF5 error stack"
  fi
}

# Fixture traces from the real commands.
tiny=(--d-model 32 --heads 2 --seq-len 32 --batch-size 2 --steps 6 --lr 1e-3 --warmup 2
      --eval-every 3 --eval-batches 1 --trace-flush 1 --log-every 100)
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --layers 2 --experts 4 \
  --top-k 2 --capacity-factor 1.0 --router softk --router-arch mlp_hadamard --router-hidden 8 --out "$work/softk.h5"
expect_success "final validation" -- "$mpirun" -np 1 "$moebench" train "${tiny[@]}" --layers 3 --moe-every 2 \
  --experts 4 --top-k 1 --capacity-factor 0 --router hash --out "$work/hash.h5"
expect_success "Wrong tokens: 0  OK" -- "$mpirun" -np 2 "$moebench" capacity --experts 4,8 --top-k 1,2 \
  --capacity-factor 0,1.0 --tokens 32 --d-model 4 --iters 2 --warmup-iters 1 --out "$work/cap.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --min-bytes 64 \
  --max-bytes 1024 --step-factor 4 --iters 2 --warmup-iters 1 --out "$work/a2a.h5"
# 5 cells: top1 (k = 1 only), softk and expert_choice at k = 1 and 2
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --pattern routed --experts 4 \
  --router top1,softk,expert_choice --top-k 1,2 --capacity-factor 1.0 --tokens 32 --d-model 8 --iters 2 \
  --warmup-iters 1 --out "$work/routed.h5"
# The exchanges of the 2-rank training run replayed: a table analyze does not read.
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --pattern replay \
  --replay "$work/softk.h5" --iters 2 --warmup-iters 1 --out "$work/replay.h5"
traces=("$work/softk.h5" "$work/hash.h5" "$work/cap.h5" "$work/a2a.h5" "$work/routed.h5")
counts=train=2,capacity=8,alltoall=14

# One rank, --out-dir, a window of 3 steps; stdout is the Markdown file.
expect_success "^# wrote .*/summary/summary.csv$" -- bash -c \
  "$(printf '%q ' "$moebench" analyze "${traces[@]}" --out-dir "$work/summary" --window 3) >$(printf %q "$work/stdout.md")"
expect_once_in_last_output "^# wrote .*/summary/summary.md$"
expect_success "analyze rows OK" -- "$python" "$here/analyze_check.py" "$work/summary/summary.csv" \
  "$work/summary/summary.md" 3 "$counts" "${traces[@]}"
if cmp -s "$work/stdout.md" "$work/summary/summary.md"; then
  _lib_pass "stdout is the Markdown file"
else
  _lib_fail "stdout is the Markdown file" "$(diff "$work/stdout.md" "$work/summary/summary.md" | head -5)"
fi

# Two ranks, explicit files, the default window: rank 0 alone prints the tables.
expect_success "^## capacity \(8 grid cells\)$" -- "$mpirun" -np 2 "$moebench" analyze "${traces[@]}" \
  --csv "$work/np2.csv" --markdown "$work/np2.md"
expect_once_in_last_output "^\| train \| softk \| mlp_hadamard \| 2 \| 4 \| 1.00 \| 2 \| 6 \|"
expect_once_in_last_output "^## alltoall \(14 rows\)$"
expect_once_in_last_output "^\| command \| router \| top_k \| experts \| capacity_factor \| ranks \| drop_rate \| a2a_bytes_per_step \| a2a_ms_per_step \| dispatch \| capacity \| pattern \| algorithm \| size_bytes \| algbw_GBps \| busbw_GBps \| rank_bytes_max \| padded_over_ragged \| wrong \| complete \| file \|$"
expect_once_in_last_output "^\| alltoall \| expert_choice \| 2 \| 4 \| 1.00 \| 2 \| [0-9.]+ \| [0-9]+ \| [0-9.]+ \| ragged \| 16 \| routed \|  \|  \|  \|  \| [0-9]+ \| [0-9.]+ \| 0 \| 1 \| .*/routed.h5 \|$"
expect_success "analyze rows OK" -- "$python" "$here/analyze_check.py" "$work/np2.csv" "$work/np2.md" \
  100 "$counts" "${traces[@]}"

# Damaged and foreign files.
expect_success "fixtures written" -- "$python" "$here/analyze_fixtures.py" "$work/softk.h5" "$work/cap.h5" \
  "$work/a2a.h5" "$work/routed.h5" "$work"
expect_success "warning: '.*/trunc.h5' is incomplete \(the run did not finish\): read up to step 3 \(3 steps recorded\)$" -- \
  "$moebench" analyze "$work/trunc.h5" "$work/cap_trunc.h5" "$work/routed_trunc.h5" --csv "$work/trunc.csv" \
  --markdown "$work/trunc.md"
expect_once_in_last_output "warning: '.*/cap_trunc.h5' is incomplete \(the run did not finish\): read its 5 finished grid cells$"
expect_once_in_last_output "warning: '.*/routed_trunc.h5' is incomplete \(the run did not finish\): read its 3 finished rows$"
expect_success "analyze rows OK" -- "$python" "$here/analyze_check.py" "$work/trunc.csv" "$work/trunc.md" \
  100 train=1,capacity=5,alltoall=3 "$work/trunc.h5" "$work/cap_trunc.h5" "$work/routed_trunc.h5"
expect_success "truncated rows OK" -- "$python" -c "
import csv
rows = list(csv.DictReader(open('$work/trunc.csv')))
train = rows[0]
assert (train['steps'], train['eval_step'], train['complete']) == ('3', '3', '0'), train
assert [r['complete'] for r in rows[1:]] == ['0'] * 8, rows
assert [r['router'] for r in rows[6:]] == ['top1', 'softk', 'softk'], rows
print('truncated rows OK')
"

# Unknown datasets in /bench/alltoall are ignored (and a size sweep alone has no routed columns
# in the Markdown: analyze_check.py); a trace with no table analyze knows gives no rows and a
# warning.
expect_success "warning: '.*/replay.h5' \(alltoall --pattern replay\) holds no table that analyze summarizes" -- \
  "$moebench" analyze "$work/a2a_extra.h5" "$work/replay.h5" --csv "$work/extra.csv" --markdown "$work/extra.md"
expect_success "analyze rows OK" -- "$python" "$here/analyze_check.py" "$work/extra.csv" "$work/extra.md" \
  100 alltoall=9 "$work/a2a_extra.h5" "$work/replay.h5"
if grep -Eq "\| (router|top_k|capacity|rank_bytes_max|padded_over_ragged) \|" "$work/extra.md"; then
  _lib_fail "no routed columns in a size-sweep table" "$(grep "^| command" "$work/extra.md")"
else
  _lib_pass "no routed columns in a size-sweep table"
fi

expect_failure "'.*/notes.txt' is not a moebench trace: it is not an HDF5 file" --status 2 -- \
  "$moebench" analyze "$work/notes.txt"
expect_no_hdf5_stack
expect_failure "'.*/foreign.h5' is not a moebench trace: an HDF5 file without the root attribute 'schema_version'" \
  --status 2 -- "$moebench" analyze "$work/foreign.h5"
expect_no_hdf5_stack
version_message="'.*/v999.h5' has trace schema version 999 \(written by moebench [0-9.]+\), but this moebench reads schema version 1 only: analyze it with the moebench release that wrote it"
expect_failure "$version_message" --status 2 -- "$mpirun" -np 2 "$moebench" analyze "$work/v999.h5"
expect_every_rank_exits 2 2 "$mpirun" -- "$moebench" analyze "$work/v999.h5"
expect_failure "cannot read trace '.*/missing.h5': no such file \(check the path\)" --status 2 -- \
  "$mpirun" -np 2 "$moebench" analyze "$work/softk.h5" "$work/missing.h5"
# A bad trace after a good one: nothing written.
expect_failure "$version_message" --status 2 -- \
  "$moebench" analyze "$work/softk.h5" "$work/v999.h5" --out-dir "$work/bad"
if ls "$work/bad"/* >/dev/null 2>&1; then
  _lib_fail "no output after a bad trace" "$(ls "$work/bad")"
else
  _lib_pass "no output after a bad trace"
fi
expect_failure "give at least one trace" --status 2 -- "$moebench" analyze --csv "$work/x.csv"
expect_failure "--window must be >= 1" --status 2 -- "$moebench" analyze "$work/softk.h5" --window 0
finish
