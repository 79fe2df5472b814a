#!/usr/bin/env bash
# All-to-all cost (moebench alltoall, docs/alltoall.md): the uniform size sweep of every
# exchange algorithm with its alpha-beta fit and the model's predictions at larger rank counts
# (labelled MODEL), and the cost-per-router table (--pattern routed: the byte matrices of real
# routing plans through the real Dispatcher) with ragged and padded dispatch and with
# zipf-skewed logits. 4 runs, then moebench analyze, analysis/figures.py and
# analysis/report.py. `--help` for the modes and the environment.
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=alltoall
EXP_ABOUT="All-to-all cost: the uniform size sweep (alltoallv, pairwise, hierarchical) with the
alpha-beta fit and MODEL predictions at 8..4096 ranks (25 GB/s, 5 us between nodes), and the
cost per router (--pattern routed; top1, topk_hard, softk, hash, expert_choice x k x CF 1.0,
1.25) with ragged dispatch, padded dispatch and zipf-skewed logits: 4 runs.
--full: sizes 1K..64M, E 64, k 1,2,4, 4096 tokens/rank of d 256;
--quick: sizes 1K..16M, E 64, k 1,2,4, 2048 tokens/rank of d 256, 10 iterations per cell."
exp_init "$@"

routers=top1,topk_hard,softk,hash,expert_choice
case $EXP_MODE in
  full) sweep=(--min-bytes 1K --max-bytes 64M --iters 20 --warmup-iters 5)
        routed=(--experts 64 --top-k 1,2,4 --tokens 4096 --d-model 256 --iters 20 --warmup-iters 5) ;;
  quick) sweep=(--min-bytes 1K --max-bytes 16M --iters 20 --warmup-iters 5)
         routed=(--experts 64 --top-k 1,2,4 --tokens 2048 --d-model 256 --iters 10 --warmup-iters 2) ;;
  tiny) sweep=(--min-bytes 64 --max-bytes 16K --step-factor 4 --iters 3 --warmup-iters 1)
        routed=(--experts 8 --top-k 1,2 --tokens 64 --d-model 8 --iters 3 --warmup-iters 1) ;;
esac
# Two virtual nodes for the hierarchical algorithm when the ranks are launched here and
# split evenly; under a cluster launcher (LAUNCHER) the real nodes are used.
if [ -z "${LAUNCHER:-}" ] && [ $((NP % 2)) = 0 ] && [ "$NP" -ge 4 ]; then
  sweep+=(--ranks-per-node $((NP / 2)))
fi
# The model's machine: 8 ranks per node, 25 GB/s and 5 us per message between nodes.
predict=(--predict 8,64,512,4096 --predict-ranks-per-node 8 --inter-bw 25 --inter-latency-us 5)
[ "$NP" -ge 2 ] || predict=()

exp_add sweep alltoall --pattern uniform "${sweep[@]}" "${predict[@]}"
exp_add routed_ragged alltoall --pattern routed --router "$routers" "${routed[@]}" --capacity-factor 1.0,1.25 --dispatch ragged
exp_add routed_padded alltoall --pattern routed --router "$routers" "${routed[@]}" --capacity-factor 1.0,1.25 --dispatch padded
exp_add routed_zipf alltoall --pattern routed --router "$routers" "${routed[@]}" --capacity-factor 1.0,1.25 --dispatch ragged --distribution zipf
exp_main
