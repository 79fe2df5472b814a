#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole CTest suite
# (unit tests, MPI tests under launch/mpirun.sh with 1, 2 and 4 ranks, and command-line
# tests through the real binary).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/build.sh
# Where the CUDA toolkit is installed: compile and link the CUDA backend (library, GPU tests,
# GPU benchmark) in build-cuda and run its tests, which skip without a GPU (launch/gpu-check.sh
# is the full check on a GPU machine).
if [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_start=$(date +%s)
  cmake -S . -B "${CUDA_BUILD_DIR:-build-cuda}" -DCMAKE_BUILD_TYPE=Release -DMOEBENCH_CUDA=ON >/dev/null
  cmake --build "${CUDA_BUILD_DIR:-build-cuda}" -j"$(nproc)" --target moebench_cuda_all
  (cd "${CUDA_BUILD_DIR:-build-cuda}" && ctest -L gpu --output-on-failure)
  echo "CUDA backend compile check: $(( $(date +%s) - cuda_start )) s"
fi
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 600 "$@"
