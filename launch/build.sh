#!/usr/bin/env bash
# Configures and builds moebench into ${BUILD_DIR:-build} (Release). Extra arguments go to
# CMake's configure step, e.g. launch/build.sh -DMOEBENCH_CUDA=ON.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
