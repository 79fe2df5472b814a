#!/usr/bin/env bash
# Subword vs byte tokens: the unified model trained on BPE tokens of the built-in story corpus
# (configs/subword.ini, data/stories-bpe1024.bin, made first if missing) and on its bytes
# (configs/unified.ini: the same model and corpus, byte-level), for softk k = 2, top1 and
# expert_choice k = 2 at CF 1.25. Bits per byte compares the two. 6 training runs, then
# moebench analyze, analysis/figures.py and analysis/report.py. `--help` for the modes.
# shellcheck disable=SC2034  # EXP_NAME, EXP_ABOUT, EXP_BASE are read by the library
# shellcheck disable=SC2054  # 1,2,4: comma-separated moebench values, not array separators
set -euo pipefail
# shellcheck source=launch/lib/experiment.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/experiment.bash"

EXP_NAME=subword
EXP_ABOUT="BPE (SentencePiece, 1024 pieces; configs/subword.ini) against byte-level tokens
(configs/unified.ini) of the built-in story corpus, same model: softk k 2, top1, expert_choice k 2
at CF 1.25: 6 runs (bpe_* and bytes_*). Makes data/stories-bpe1024.bin first if it is missing.
--quick: d 64, 64-token sequences, 200 steps; --full: the configs (1200 steps of d 256)."
exp_init "$@"

shard=data/stories-bpe1024.bin
if [ ! -s "$shard" ]; then
  # moebench data works on one process (rank 0 does the work).
  exp_prepare data "$EXP_BIN_REL" data --tokenizer bpe --vocab-size 1024 --out "$shard"
fi

case $EXP_MODE in
  full) shrink=() ;;
  quick) shrink=("${EXP_QUICK_TRAIN[@]}") ;;
  tiny) shrink=("${EXP_TINY_TRAIN[@]}") ;;
esac
EXP_BASE=(--config configs/subword.ini "${shrink[@]}" --capacity-factor 1.25)

for cell in softk:2 top1:1 expert_choice:2; do
  router=${cell%%:*}
  k=${cell##*:}
  exp_add "bpe_${router}_k${k}" train --router "$router" --top-k "$k"
  exp_add "bytes_${router}_k${k}" train --config configs/unified.ini --router "$router" --top-k "$k"
done
exp_main
