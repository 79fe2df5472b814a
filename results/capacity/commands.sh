#!/usr/bin/env bash
# capacity experiment, --quick: the commands launch/experiment_capacity.sh ran, from the
# repository root, each followed by its wall time.
# date: 2026-11-30T01:51:21Z  host: vm  cores (nproc): 2
# Linux 6.18.44-fc-v657 x86_64; git revision 731f964 (with uncommitted changes in src/ or include/)
# ranks: launch/mpirun.sh -np 4; OMP_NUM_THREADS=1 (launch/mpirun.sh default)
set -euo pipefail
launch/mpirun.sh -np 4 build-exp/moebench capacity --experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3 --router topk_hard --dispatch ragged --capacity-factor 0,0.9,1.0,1.1,1.25,1.5 --out results/capacity/topk_hard_ragged.h5  # 5 s
launch/mpirun.sh -np 4 build-exp/moebench capacity --experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3 --router topk_hard --dispatch padded --capacity-factor 0,0.9,1.0,1.1,1.25,1.5 --out results/capacity/topk_hard_padded.h5  # 12 s
launch/mpirun.sh -np 4 build-exp/moebench capacity --experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3 --router topk_hard --dispatch ragged --distribution zipf --capacity-factor 0,0.9,1.0,1.1,1.25,1.5 --out results/capacity/topk_hard_zipf.h5  # 4 s
launch/mpirun.sh -np 4 build-exp/moebench capacity --experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3 --router expert_choice --dispatch ragged --capacity-factor 0.9,1.0,1.1,1.25,1.5 --out results/capacity/expert_choice_ragged.h5  # 4 s
launch/mpirun.sh -np 4 build-exp/moebench capacity --experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3 --router hash --dispatch ragged --capacity-factor 0,0.9,1.0,1.1,1.25,1.5 --out results/capacity/hash_ragged.h5  # 4 s
(cd results/capacity && ../../build-exp/moebench analyze topk_hard_ragged.h5 topk_hard_padded.h5 topk_hard_zipf.h5 expert_choice_ragged.h5 hash_ragged.h5 --out-dir summary)  # 1 s
/usr/bin/python3 analysis/figures.py results/capacity --format png,svg  # 2 s
/usr/bin/python3 analysis/report.py results/capacity --summary results/capacity/summary/summary.csv --figures results/capacity/figures --moebench build-exp/moebench  # 1 s
