#!/usr/bin/env bash
# `moebench train --backend cuda` against `--backend cpu` through the real binary (a CUDA
# build, run on GPUs): the same options and seed on both backends, 40 steps on the built-in
# corpus, and the loss curves compared (tests/cuda/cli/compare_train_traces.py):
#  - the first step's loss within 1e-4 relative: the same model, batch and routing, only the
#    order of fp32 sums differs (tests/cuda/mpi/test_cuda_model.cpp compares the gradients);
#  - every step within 2e-2 relative, and the final validation loss within 2e-2: rounding
#    differences grow through 40 AdamW steps and can flip a near-tied routing decision, after
#    which the runs are two valid trainings of the same model;
#  - the trace says backend = cuda and names the device, and passes the CPU run's checks;
#  - bf16 expert products (--expert-precision bf16) follow the CPU's fp32 curve within 5e-2;
#  - checkpoint and resume on the GPU (padded dispatch, bias balancing: the moments, the
#    parameters and the selection bias go to the host and back): the resumed run's losses are
#    the uninterrupted run's bit for bit (every GPU kernel sums in a fixed order and cuBLAS
#    picks the same kernels for the same shapes), and the CPU refuses the GPU's checkpoint.
# One rank, and two where the node has two GPUs. Without a GPU it prints "GPU tests skipped:
# ..." and passes (CTest reports it skipped).
#
# usage: bash tests/cuda/cli/train_backends.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
# shellcheck source=tests/cuda/cli/gpu_cli.bash
source "$(dirname "${BASH_SOURCE[0]}")/gpu_cli.bash"

base=(--steps 40 --warmup 5 --seq-len 64 --batch-size 4 --d-model 64 --heads 4 --layers 2
      --experts 8 --top-k 2 --eval-every 20 --eval-batches 2 --log-every 10)
run=("${base[@]}" --router softk)
gpus=$(nvidia-smi -L | wc -l)
for np in 1 2; do
  [ "$np" -le "$gpus" ] || continue
  for backend in cpu cuda; do
    expect_success "final validation" -- "$mpirun" -np "$np" "$moebench" train "${run[@]}" \
      --backend "$backend" --out "$work/$backend-$np.h5"
  done
  expect_success "loss curves agree" -- "$python" "$here/compare_train_traces.py" \
    "$work/cpu-$np.h5" "$work/cuda-$np.h5"
  expect_success "trace OK" -- "$python" "$cli/check_train_trace.py" "$work/cuda-$np.h5" "$np" 40 2 8
done
# Hash routing (no router network) and a dense block between MoE blocks.
for backend in cpu cuda; do
  expect_success "final validation" -- "$mpirun" -np 1 "$moebench" train "${base[@]}" \
    --router hash --moe-every 2 --backend "$backend" --out "$work/hash-$backend.h5"
done
expect_success "loss curves agree" -- "$python" "$here/compare_train_traces.py" \
  "$work/hash-cpu.h5" "$work/hash-cuda.h5"
# bf16 expert products against the CPU's fp32: the first step's loss within 1e-3 (the experts'
# outputs move by a few 1e-3 of their scale, the loss averages them), the curve within 5e-2.
expect_success "final validation" -- "$mpirun" -np 1 "$moebench" train "${run[@]}" \
  --backend cuda --expert-precision bf16 --out "$work/bf16.h5"
expect_success "loss curves agree" -- "$python" "$here/compare_train_traces.py" \
  "$work/cpu-1.h5" "$work/bf16.h5" 1e-3 5e-2

# Resume on the GPU.
ckpt=(--steps 12 --warmup 3 --seq-len 32 --batch-size 2 --d-model 32 --heads 2 --layers 2
      --experts 4 --top-k 2 --router softk --balance bias --dispatch padded --eval-every 100
      --eval-batches 1 --backend cuda)
expect_success "final validation" -- "$mpirun" -np 1 "$moebench" train "${ckpt[@]}" \
  --out "$work/whole.h5"
expect_success "checkpoint: $work/part.ckpt/step_6$" -- "$mpirun" -np 1 "$moebench" train \
  "${ckpt[@]}" --checkpoint-every 6 --out "$work/part.h5"
expect_success "resumed from $work/part.ckpt/step_6 at step 6" -- "$mpirun" -np 1 "$moebench" \
  train "${ckpt[@]}" --resume "$work/part.ckpt/step_6" --out "$work/rest.h5"
expect_success "bitwise" -- "$python" -c "
import h5py
whole, rest = h5py.File('$work/whole.h5'), h5py.File('$work/rest.h5')
for name in ('train/loss', 'train/grad_norm', 'routing/layer_0/load', 'eval/loss'):
    a, b = whole[name][...], rest[name][...]
    tail = a[6:] if name != 'eval/loss' else a
    assert tail.tobytes() == b.tobytes(), (name, tail, b)
print('bitwise')
"
expect_failure "it was saved with backend=cuda" -- "$mpirun" -np 1 "$moebench" train \
  "${ckpt[@]/cuda/cpu}" --resume "$work/part.ckpt/step_6" --out "$work/cpu-resume.h5"
finish
