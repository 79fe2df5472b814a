#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, and runs a short
# capacity sweep on 4 ranks (about a minute on 2 cores). Output: out/quickstart/capacity.h5
# and capacity.csv beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/build.sh
mkdir -p out/quickstart
exec launch/mpirun.sh -np "${NP:-4}" build/moebench capacity \
  --experts 64,128 --top-k 1,2 --capacity-factor 1.0,1.25,1.5 \
  --tokens 2048 --d-model 128 --iters 200 \
  --out out/quickstart/capacity.h5 "$@"
