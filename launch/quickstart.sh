#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds, and trains the small MoE
# transformer of configs/quickstart.ini on the built-in story corpus with 4 ranks (a few
# minutes on 2 cores). Output: out/quickstart/train.h5 (the trace). Extra arguments go to
# `moebench train` (e.g. --steps 100).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/build.sh
mkdir -p out/quickstart
exec launch/mpirun.sh -np "${NP:-4}" build/moebench train --config configs/quickstart.ini \
  --out out/quickstart/train.h5 "$@"
