#!/usr/bin/env bash
# Router architectures (configs/router_arch.ini: the unified model with an mlp router of
# width 64): --router-arch linear, mlp, mlp_hadamard x --router softk, expert_choice (k = 2,
# CF 1.25). 6 training runs, then moebench analyze, analysis/figures.py (the
# router_arch_frontier figure and table) and analysis/report.py. `--help` for the modes.
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=router_arch
EXP_ABOUT="Router architectures (configs/router_arch.ini): linear, mlp and mlp_hadamard routers
(hidden width 64) with softk and expert_choice routing, k 2, CF 1.25: 6 runs.
--quick: d 64, 64-token sequences, 200 steps; --full: the config (1200 steps of d 256)."
exp_init "$@"

case $EXP_MODE in
  full) EXP_BASE=(--config configs/router_arch.ini) ;;
  quick) EXP_BASE=(--config configs/router_arch.ini "${EXP_QUICK_TRAIN[@]}") ;;
  tiny) EXP_BASE=(--config configs/router_arch.ini "${EXP_TINY_TRAIN[@]}") ;;
esac

for router in softk expert_choice; do
  for arch in linear mlp mlp_hadamard; do
    exp_add "${router}_${arch}" train --router "$router" --router-arch "$arch"
  done
done
exp_main
