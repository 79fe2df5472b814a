#!/usr/bin/env bash
# The unified router x capacity-factor sweep (configs/unified.ini: E = 8, d = 256, 2 blocks,
# 1200 steps): every router at k in {1, 2} and CF in {1.0, 1.25}, less the cells that repeat
# another one. top1 routes with k = 1 only; topk_hard and softk with k = 1 are top1 with a
# gate of 1 (its --hard-gates variant), so they run with k = 2 only; hash and expert_choice
# run both k. 14 training runs, then moebench analyze, analysis/figures.py and
# analysis/report.py. `--help` for the modes and the environment (NP, OUT, MOEBENCH, STEPS).
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=unified
EXP_ABOUT="Unified router x top-k x capacity-factor sweep of training runs (configs/unified.ini):
top1 (k 1), topk_hard (k 2), softk (k 2), hash (k 1, 2), expert_choice (k 1, 2), each at CF 1.0
and 1.25: 14 runs. --quick: d 64, 64-token sequences, 200 steps (~5 min at 4 ranks on 2 cores);
--full: the config (1200 steps of d 256; hours on 2 cores)."
exp_init "$@"

case $EXP_MODE in
  full) EXP_BASE=(--config configs/unified.ini) ;;
  quick) EXP_BASE=(--config configs/unified.ini "${EXP_QUICK_TRAIN[@]}") ;;
  tiny) EXP_BASE=(--config configs/unified.ini "${EXP_TINY_TRAIN[@]}") ;;
esac

# router:k values of the grid (see the header for the subset)
cells=(top1:1 topk_hard:2 softk:2 hash:1 hash:2 expert_choice:1 expert_choice:2)
for cell in "${cells[@]}"; do
  router=${cell%%:*}
  k=${cell##*:}
  for cf in 1.0 1.25; do
    exp_add "${router}_k${k}_cf${cf}" train --router "$router" --top-k "$k" --capacity-factor "$cf"
  done
done
exp_main
