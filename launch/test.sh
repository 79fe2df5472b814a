#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole CTest suite
# (unit tests, MPI tests under launch/mpirun.sh with 1, 2 and 4 ranks, and command-line
# tests through the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 "$@"
