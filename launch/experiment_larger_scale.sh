#!/usr/bin/env bash
# The larger-scale setting (configs/larger_scale.ini: E = 32, d = 512, 4 blocks, 256-token
# sequences, CF 1.5, 2000 steps): softk, topk_hard and expert_choice with k = 2, top1, hash
# with k = 2. 5 training runs, then moebench analyze, analysis/figures.py and
# analysis/report.py. The full setting is meant for a cluster (launch/slurm/train.sbatch).
# `--help` for the modes and the environment.
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=larger_scale
EXP_ABOUT="Larger-scale training runs (configs/larger_scale.ini: E 32, d 512, 4 blocks, CF 1.5):
softk k 2, topk_hard k 2, expert_choice k 2, top1, hash k 2: 5 runs. --full: the config (2000
steps; hours on 2 cores, meant for a cluster); --quick: E 32 and 4 blocks kept, d 128, 64-token
sequences, 150 steps at lr 1e-3 (~1 min a run at 4 ranks on 2 cores)."
exp_init "$@"

case $EXP_MODE in
  full) EXP_BASE=(--config configs/larger_scale.ini) ;;
  quick) EXP_BASE=(--config configs/larger_scale.ini --d-model 128 --heads 4 --seq-len 64 --batch-size 4
                   --steps 150 --lr 1e-3 --warmup 15 --eval-every 50 --eval-batches 4 --log-every 50) ;;
  tiny) EXP_BASE=(--config configs/larger_scale.ini "${EXP_TINY_TRAIN[@]}" --lr 3e-3) ;;
esac

for cell in softk:2 topk_hard:2 expert_choice:2 top1:1 hash:2; do
  router=${cell%%:*}
  k=${cell##*:}
  exp_add "${router}_k${k}" train --router "$router" --top-k "$k"
done
exp_main
