#!/usr/bin/env bash
# `moebench alltoall` through the real binary: every algorithm delivers every element (the
# #wrong column and the OK footer), busbw = algbw (P-1)/P in the CSV, the trace holds one
# row per size and algorithm, and bad input gets one clear message.
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
expect_failure "--ranks-per-node 3 does not divide the 4 ranks" -- \
  "$mpirun" -np 4 "$moebench" alltoall --ranks-per-node 3 --out "$work/c.h5"
expect_failure "--algorithm: unknown value 'ring'" -- \
  "$mpirun" -np 2 "$moebench" alltoall --algorithm alltoallv,ring --out "$work/d.h5"
expect_failure "--step-factor must be >= 2" -- \
  "$moebench" alltoall --step-factor 1 --out "$work/e.h5"
finish
