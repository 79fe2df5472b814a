#!/usr/bin/env bash
# `moebench capacity --backend cuda` against `--backend cpu` through the real binary (a CUDA
# build, run on GPUs): the same grid and seed on both backends must give the same trace,
# timings aside, and every token back. topk_hard's gates are 1/k and its decisions depend on
# the logits only, which both backends read from the same synthetic inputs, so plans, drops,
# loads, bytes and the metrics computed from them are identical bit for bit (softk's gates go
# through expf on the GPU and may differ in the last bits: routing_cuda.hpp).
# Without a GPU it prints "GPU tests skipped: ..." and passes (CTest reports it skipped).
#
# usage: bash tests/cuda/cli/capacity_backends.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
# shellcheck source=tests/cuda/cli/gpu_cli.bash
source "$(dirname "${BASH_SOURCE[0]}")/gpu_cli.bash"

grid=(--router topk_hard --experts 8,64 --top-k 1,2 --capacity-factor 0,1.0,1.25 --tokens 512
      --d-model 64 --iters 5 --warmup-iters 1 --distribution zipf --zipf-s 0.8)
gpus=$(nvidia-smi -L | wc -l)
for np in 1 2; do
  [ "$np" -le "$gpus" ] || continue
  for dispatch in ragged padded; do
    for backend in cpu cuda; do
      expect_success "Wrong tokens: 0  OK" -- "$mpirun" -np "$np" "$moebench" capacity "${grid[@]}" \
        --dispatch "$dispatch" --backend "$backend" --out "$work/$backend-$np-$dispatch.h5"
    done
    expect_success "identical datasets" -- "$python" "$cli/compare_capacity_traces.py" \
      "$work/cpu-$np-$dispatch.h5" "$work/cuda-$np-$dispatch.h5"
  done
done
expect_success "trace OK" -- "$python" "$cli/check_capacity_trace.py" "$work/cuda-1-ragged.h5" \
  "$work/cuda-1-ragged.csv" 1 12
finish
