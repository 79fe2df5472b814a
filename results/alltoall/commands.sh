#!/usr/bin/env bash
# alltoall experiment, --quick: the commands launch/experiment_alltoall.sh ran, from the
# repository root, each followed by its wall time.
# date: 2026-11-30T01:51:54Z  host: vm  cores (nproc): 2
# Linux 6.18.44-fc-v657 x86_64; git revision 731f964 (with uncommitted changes in src/ or include/)
# ranks: launch/mpirun.sh -np 4; OMP_NUM_THREADS=1 (launch/mpirun.sh default)
set -euo pipefail
launch/mpirun.sh -np 4 build-exp/moebench alltoall --pattern uniform --min-bytes 1K --max-bytes 16M --iters 20 --warmup-iters 5 --ranks-per-node 2 --predict 8,64,512,4096 --predict-ranks-per-node 8 --inter-bw 25 --inter-latency-us 5 --out results/alltoall/sweep.h5  # 4 s
launch/mpirun.sh -np 4 build-exp/moebench alltoall --pattern routed --router top1,topk_hard,softk,hash,expert_choice --experts 64 --top-k 1,2,4 --tokens 2048 --d-model 256 --iters 10 --warmup-iters 2 --capacity-factor 1.0,1.25 --dispatch ragged --out results/alltoall/routed_ragged.h5  # 20 s
launch/mpirun.sh -np 4 build-exp/moebench alltoall --pattern routed --router top1,topk_hard,softk,hash,expert_choice --experts 64 --top-k 1,2,4 --tokens 2048 --d-model 256 --iters 10 --warmup-iters 2 --capacity-factor 1.0,1.25 --dispatch padded --out results/alltoall/routed_padded.h5  # 24 s
launch/mpirun.sh -np 4 build-exp/moebench alltoall --pattern routed --router top1,topk_hard,softk,hash,expert_choice --experts 64 --top-k 1,2,4 --tokens 2048 --d-model 256 --iters 10 --warmup-iters 2 --capacity-factor 1.0,1.25 --dispatch ragged --distribution zipf --out results/alltoall/routed_zipf.h5  # 13 s
(cd results/alltoall && ../../build-exp/moebench analyze sweep.h5 routed_ragged.h5 routed_padded.h5 routed_zipf.h5 --out-dir summary)  # 0 s
/usr/bin/python3 analysis/figures.py results/alltoall --format png,svg  # 3 s
/usr/bin/python3 analysis/report.py results/alltoall --summary results/alltoall/summary/summary.csv --figures results/alltoall/figures --moebench build-exp/moebench  # 1 s
