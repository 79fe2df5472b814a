#!/usr/bin/env bash
# `moebench alltoall` through the real binary: every algorithm delivers every element (the
# #wrong column and the OK footer), busbw = algbw (P-1)/P in the CSV, the trace holds one
# row per size and algorithm, the alpha-beta fit and the --predict MODEL table agree with a
# numpy recomputation from the sweep's rows (alltoall_check_sweep.py), the routed pattern's
# cost-per-router table is consistent with its recorded Dispatcher matrices
# (alltoall_check_routed.py), and bad input gets one clear message (more in alltoall_errors.sh).
#
# usage: bash tests/cli/alltoall_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sweep=(--min-bytes 64 --max-bytes 65536 --step-factor 4 --iters 3 --warmup-iters 1)
expect_success "Wrong elements: 0  OK" -- \
  "$mpirun" -np 4 "$moebench" alltoall "${sweep[@]}" --ranks-per-node 2 --out "$work/a.h5"
expect_success "Wrong elements: 0  OK" -- \
  "$mpirun" -np 2 "$moebench" alltoall "${sweep[@]}" --algorithm pairwise --out "$work/b.h5"
expect_success "rows OK" -- "$python" -c "
import csv, sys, h5py
rows = list(csv.DictReader(open('$work/a.csv')))
sizes = [64 * 4**i for i in range(6)]
assert len(rows) == 3 * len(sizes), len(rows)
assert [r['algorithm'] for r in rows[:3]] == ['alltoallv', 'pairwise', 'hierarchical'], rows[:3]
for r in rows:
    algbw, busbw = float(r['algbw_GBps']), float(r['busbw_GBps'])
    assert abs(busbw - algbw * 3 / 4) <= 1e-6 * algbw, r
    assert int(r['wrong']) == 0, r
    assert float(r['time_max_us']) >= float(r['time_avg_us']) * 0.999, r
with h5py.File('$work/a.h5') as f:
    g = f['bench/alltoall']
    assert g['size_bytes'].shape == (18,), g['size_bytes'].shape
    assert g['time_us_per_rank'].shape == (18, 4)
    assert int(g.attrs['nodes']) == 2 and int(g.attrs['ranks_per_node']) == 2
print('rows OK')
"
# The raw MPI_Alltoallv reference row, the fit and the model at 4 ranks in 2 virtual nodes.
expect_success "MODEL, NOT MEASURED" -- \
  "$mpirun" -np 4 "$moebench" alltoall "${sweep[@]}" --ranks-per-node 2 \
  --algorithm raw,alltoallv,pairwise,hierarchical --predict 2,8,64,512 --predict-ranks-per-node 8 \
  --inter-bw 10 --out "$work/m.h5"
expect_success "fit and model OK" -- "$python" "$here/alltoall_check_sweep.py" "$work/m.h5" 4 10
expect_success "^raw +alltoallv +pairwise +hierarchical$" -- "$python" -c "
import csv
print(' '.join(r['algorithm'] for r in csv.DictReader(open('$work/m_fit.csv'))))"

# Routed traffic: every router at two k and two CF, ragged and padded, 4 and 2 ranks.
routed=(--pattern routed --experts 8 --top-k 1,2 --capacity-factor 1.0,1.25 --tokens 128
        --d-model 16 --iters 3 --warmup-iters 1 --algorithm alltoallv,pairwise,hierarchical,raw)
all_routers=top1,topk_hard,softk,hash,expert_choice
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 4 "$moebench" alltoall "${routed[@]}" \
  --ranks-per-node 2 --out "$work/r4.h5"
expect_success "routed OK" -- "$python" "$here/alltoall_check_routed.py" "$work/r4.h5" 4 "$all_routers" 1,2 1.0,1.25
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall "${routed[@]}" \
  --router topk_hard,expert_choice --dispatch padded --distribution zipf --zipf-s 1.5 --out "$work/r2.h5"
expect_success "routed OK" -- "$python" "$here/alltoall_check_routed.py" "$work/r2.h5" 2 topk_hard,expert_choice 1,2 1.0,1.25

expect_failure "--ranks-per-node 3 does not divide the 4 ranks" -- \
  "$mpirun" -np 4 "$moebench" alltoall --ranks-per-node 3 --out "$work/c.h5"
expect_failure "--algorithm: unknown value 'ring'" -- \
  "$mpirun" -np 2 "$moebench" alltoall --algorithm alltoallv,ring --out "$work/d.h5"
expect_failure "--step-factor must be >= 2" -- \
  "$moebench" alltoall --step-factor 1 --out "$work/e.h5"
finish
