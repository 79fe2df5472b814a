#!/usr/bin/env bash
# router_arch experiment, --quick: the commands launch/experiment_router_arch.sh ran, from the
# repository root, each followed by its wall time.
# date: 2026-11-30T01:53:23Z  host: vm  cores (nproc): 2
# Linux 6.18.44-fc-v657 x86_64; git revision 731f964 (with uncommitted changes in src/ or include/)
# ranks: launch/mpirun.sh -np 4; OMP_NUM_THREADS=1 (launch/mpirun.sh default)
set -euo pipefail
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router softk --router-arch linear --out results/router_arch/softk_linear.h5  # 8 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router softk --router-arch mlp --out results/router_arch/softk_mlp.h5  # 8 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router softk --router-arch mlp_hadamard --out results/router_arch/softk_mlp_hadamard.h5  # 7 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router expert_choice --router-arch linear --out results/router_arch/expert_choice_linear.h5  # 6 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router expert_choice --router-arch mlp --out results/router_arch/expert_choice_mlp.h5  # 7 s
launch/mpirun.sh -np 4 build-exp/moebench train --config configs/router_arch.ini --d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50 --router expert_choice --router-arch mlp_hadamard --out results/router_arch/expert_choice_mlp_hadamard.h5  # 8 s
(cd results/router_arch && ../../build-exp/moebench analyze softk_linear.h5 softk_mlp.h5 softk_mlp_hadamard.h5 expert_choice_linear.h5 expert_choice_mlp.h5 expert_choice_mlp_hadamard.h5 --out-dir summary)  # 0 s
/usr/bin/python3 analysis/figures.py results/router_arch --format png,svg  # 19 s
/usr/bin/python3 analysis/report.py results/router_arch --summary results/router_arch/summary/summary.csv --figures results/router_arch/figures --moebench build-exp/moebench  # 1 s
