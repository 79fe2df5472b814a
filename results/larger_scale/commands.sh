#!/usr/bin/env bash
# larger_scale experiment, --quick: the commands launch/experiment_larger_scale.sh ran, from the
# repository root, each followed by its wall time.
# date: 2026-11-30T01:46:29Z  host: vm  cores (nproc): 2
# Linux 6.18.44-fc-v657 x86_64; git revision 731f964 (with uncommitted changes in src/ or include/)
# ranks: launch/mpirun.sh -np 4; OMP_NUM_THREADS=1 (launch/mpirun.sh default)
set -euo pipefail
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4 --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50 --router softk --top-k 2 --out results/larger_scale/softk_k2.h5  # 31 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4 --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50 --router topk_hard --top-k 2 --out results/larger_scale/topk_hard_k2.h5  # 31 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4 --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50 --router expert_choice --top-k 2 --out results/larger_scale/expert_choice_k2.h5  # 31 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4 --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50 --router top1 --top-k 1 --out results/larger_scale/top1_k1.h5  # 22 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4 --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50 --router hash --top-k 2 --out results/larger_scale/hash_k2.h5  # 28 s
(cd results/larger_scale && ../../build-exp/moebench analyze softk_k2.h5 topk_hard_k2.h5 expert_choice_k2.h5 top1_k1.h5 hash_k2.h5 --out-dir summary)  # 1 s
/usr/bin/python3 analysis/figures.py results/larger_scale --format png,svg  # 28 s
/usr/bin/python3 analysis/report.py results/larger_scale --summary results/larger_scale/summary/summary.csv --figures results/larger_scale/figures --moebench build-exp/moebench  # 1 s
