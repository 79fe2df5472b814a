#!/usr/bin/env bash
# subword experiment, --quick: the commands launch/experiment_subword.sh ran, from the
# repository root, each followed by its wall time.
# date: 2026-11-30T01:54:27Z  host: vm  cores (nproc): 2
# Linux 6.18.44-fc-v657 x86_64; git revision 731f964 (with uncommitted changes in src/ or include/)
# ranks: launch/mpirun.sh -np 4; OMP_NUM_THREADS=1 (launch/mpirun.sh default)
set -euo pipefail
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/subword.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router softk --top-k 2 --out results/subword/bpe_softk_k2.h5  # 7 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/unified.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router softk --top-k 2 --out results/subword/bytes_softk_k2.h5  # 6 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/subword.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router top1 --top-k 1 --out results/subword/bpe_top1_k1.h5  # 6 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/unified.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router top1 --top-k 1 --out results/subword/bytes_top1_k1.h5  # 4 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/subword.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router expert_choice --top-k 2 --out results/subword/bpe_expert_choice_k2.h5  # 7 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/unified.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --capacity-factor 1.25 --router expert_choice --top-k 2 --out results/subword/bytes_expert_choice_k2.h5  # 6 s
(cd results/subword && ../../build-exp/moebench analyze bpe_softk_k2.h5 bytes_softk_k2.h5 bpe_top1_k1.h5 bytes_top1_k1.h5 bpe_expert_choice_k2.h5 bytes_expert_choice_k2.h5 --out-dir summary)  # 1 s
/usr/bin/python3 analysis/figures.py results/subword --format png,svg  # 17 s
/usr/bin/python3 analysis/report.py results/subword --summary results/subword/summary/summary.csv --figures results/subword/figures --moebench build-exp/moebench  # 1 s
