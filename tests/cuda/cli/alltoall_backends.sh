#!/usr/bin/env bash
# `moebench alltoall --backend cuda` through the real binary (a CUDA build, run on GPUs): the
# uniform size sweep, the routed pattern and the replay of a training run's /comm move their
# exchanges with NCCL between device buffers, and every element comes back as the check
# expects ("Wrong elements: 0"); the routed traces of both backends hold the same byte
# matrices (the routing plans are the CPU dispatcher's on both), and the CUDA one says
# backend = cuda. One rank, and two where the node
# has two GPUs. Without a GPU it prints "GPU tests skipped: ..." and passes.
#
# usage: bash tests/cuda/cli/alltoall_backends.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
# shellcheck source=tests/cuda/cli/gpu_cli.bash
source "$(dirname "${BASH_SOURCE[0]}")/gpu_cli.bash"

routed=(--pattern routed --router topk_hard,softk,expert_choice --experts 8 --top-k 1,2
        --capacity-factor 1.0,1.25 --tokens 512 --d-model 64 --iters 3 --warmup-iters 1)
gpus=$(nvidia-smi -L | wc -l)
for np in 1 2; do
  [ "$np" -le "$gpus" ] || continue
  expect_success "Wrong elements: 0  OK" -- "$mpirun" -np "$np" "$moebench" alltoall \
    --backend cuda --min-bytes 1K --max-bytes 4M --iters 5 --out "$work/uniform-$np.h5"
  for backend in cpu cuda; do
    expect_success "Wrong elements: 0  OK" -- "$mpirun" -np "$np" "$moebench" alltoall \
      "${routed[@]}" --backend "$backend" --out "$work/routed-$backend-$np.h5"
  done
  expect_success "same byte matrices" -- "$python" -c "
import h5py, numpy as np
cpu, cuda = h5py.File('$work/routed-cpu-$np.h5'), h5py.File('$work/routed-cuda-$np.h5')
assert cuda['bench/alltoall'].attrs['backend'] == 'cuda'
name = 'bench/alltoall/routed/bytes_sent'
assert np.array_equal(cpu[name][...], cuda[name][...]), name
print('same byte matrices')
"
  # Replay: the exchanges a short training run recorded, on the same rank count.
  expect_success "final validation" -- "$mpirun" -np "$np" "$moebench" train --d-model 32 \
    --layers 2 --heads 2 --experts 4 --seq-len 32 --batch-size 2 --steps 3 --warmup 1 \
    --eval-every 100 --eval-batches 1 --out "$work/train-$np.h5"
  expect_success "Wrong elements: 0  OK" -- "$mpirun" -np "$np" "$moebench" alltoall \
    --pattern replay --replay "$work/train-$np.h5" --iters 3 --warmup-iters 1 --backend cuda \
    --out "$work/replay-$np.h5"
done
finish
