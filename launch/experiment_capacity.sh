#!/usr/bin/env bash
# The capacity grid (moebench capacity): drop rate, balance and exchange cost over capacity
# factor x experts x top-k, for top-k routing (ragged and padded dispatch, gaussian and
# zipf-skewed logits), expert choice and hash routing. 5 grids, then moebench analyze,
# analysis/figures.py and analysis/report.py. `--help` for the modes and the environment.
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=capacity
EXP_ABOUT="Capacity grids (moebench capacity) of synthetic routing: topk_hard with ragged and with
padded dispatch, topk_hard on zipf-skewed logits, expert_choice and hash: 5 grids of CF x E x k.
--full: E 64,128,256 x k 1,2,4 x CF dropless,0.9..1.5, 4096 tokens/rank, d 256, 200 iterations;
--quick: E 8,32 x k 1,2 x CF dropless,0.9..1.5, 2048 tokens/rank, d 128, 20 iterations."
exp_init "$@"

# CF 0 (dropless) is for token-choice routers only: expert_choice takes the list without it.
case $EXP_MODE in
  full) EXP_BASE=(--experts 64,128,256 --top-k 1,2,4 --tokens 4096 --d-model 256 --iters 200 --warmup-iters 10)
        factors=0.9,1.0,1.05,1.1,1.25,1.5 ;;
  quick) EXP_BASE=(--experts 8,32 --top-k 1,2 --tokens 2048 --d-model 128 --iters 20 --warmup-iters 3)
         factors=0.9,1.0,1.1,1.25,1.5 ;;
  tiny) EXP_BASE=(--experts 4,8 --top-k 1,2 --tokens 64 --d-model 8 --iters 3 --warmup-iters 1)
        factors=1.0,1.25 ;;
esac

exp_add topk_hard_ragged capacity --router topk_hard --dispatch ragged --capacity-factor "0,$factors"
exp_add topk_hard_padded capacity --router topk_hard --dispatch padded --capacity-factor "0,$factors"
exp_add topk_hard_zipf capacity --router topk_hard --dispatch ragged --distribution zipf --capacity-factor "0,$factors"
exp_add expert_choice_ragged capacity --router expert_choice --dispatch ragged --capacity-factor "$factors"
exp_add hash_ragged capacity --router hash --dispatch ragged --capacity-factor "0,$factors"
exp_main
