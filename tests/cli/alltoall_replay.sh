#!/usr/bin/env bash
# `moebench alltoall --pattern replay` through the real binary: a tiny training run writes a
# trace (np 2 ragged with drops, np 4 padded), the replay moves its /comm byte matrices with
# every algorithm, checks every element (OK footer), and records the matrices it moved, which
# must equal the training trace's exactly (alltoall_check_replay.py, h5py).
#
# usage: bash tests/cli/alltoall_replay.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tiny=(--d-model 32 --layers 2 --heads 2 --experts 4 --top-k 2 --seq-len 32 --steps 3
      --lr 1e-3 --warmup 1 --eval-every 100 --eval-batches 1 --log-every 1)
replay=(--pattern replay --iters 2 --warmup-iters 1 --algorithm alltoallv,pairwise,hierarchical,raw)

# 2 ranks, ragged, CF 1.0: uneven per-peer byte counts (and drops).
expect_success -- "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --batch-size 2 \
  --capacity-factor 1.0 --dispatch ragged --out "$work/ragged.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall "${replay[@]}" \
  --ranks-per-node 1 --replay "$work/ragged.h5" --out "$work/replay_ragged.h5"
expect_success "replay matrices equal" -- \
  "$python" "$here/alltoall_check_replay.py" "$work/ragged.h5" "$work/replay_ragged.h5" 2 3
expect_success "^step,wire_MB,rank_max_MB,recorded_ms,alltoallv_ms,pairwise_ms,hierarchical_ms,raw_ms,wrong$" -- \
  head -n 1 "$work/replay_ragged.csv"

# 4 ranks in 2 virtual nodes, padded, only the first 2 of the 3 steps.
expect_success -- "$mpirun" -np 4 "$moebench" train "${tiny[@]}" --batch-size 1 \
  --capacity-factor 1.25 --dispatch padded --out "$work/padded.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 4 "$moebench" alltoall "${replay[@]}" \
  --ranks-per-node 2 --replay-steps 2 --replay "$work/padded.h5" --out "$work/replay_padded.h5"
expect_success "replay matrices equal" -- \
  "$python" "$here/alltoall_check_replay.py" "$work/padded.h5" "$work/replay_padded.h5" 4 2
finish
