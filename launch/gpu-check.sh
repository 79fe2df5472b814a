#!/usr/bin/env bash
# The GPU check, in one command on a machine with an NVIDIA GPU and the CUDA toolkit:
#   1. configures the CUDA backend (-DMOEBENCH_CUDA=ON) in build-cuda and builds what it needs
#      (library, GPU tests, GPU benchmark) with every core;
#   2. runs the GPU tests (ctest -L gpu: every kernel against the CPU reference; MPI tests with
#      more ranks than GPUs skip);
#   3. runs the GPU benchmark (bench/cuda/bench_cuda.cpp), `moebench alltoall --backend cuda`
#      on one rank (NCCL between device buffers; every element checked) and `moebench capacity
#      --backend cuda` on one rank (routing, permute and exchange on the GPU; every token
#      checked), and `moebench train --backend cuda` on one rank: the quickstart configuration
#      (tokens per second, validation bits per byte) and 40 steps of the larger-scale one
#      (tokens per second);
#   4. prints a short report; logs and the report go to out/gpu-check/ (OUT_DIR).
# Exit status 0 only if the build, the tests and the benchmarks' own checks all pass.
# Designed to finish well within 10 minutes on one H200 (16 cores): the build takes most of it.
# Every stage has its own time limit (tests 210 s, benchmark 120 s, alltoall 45 s, capacity
# 45 s, each training run 60 s: 540 s in all, leaving a minute for the build within the ten)
# and prints a line when it ends, so a hang costs one stage and the rest of the report still
# comes out; on a
# lent machine, run it with OUT_DIR="$OUT" so that the logs come back.
# The Debian packages of launch/setup.sh must already be installed (this script installs
# nothing). Environment: BUILD_DIR (build-cuda), OUT_DIR (out/gpu-check),
# CUDA_ARCHITECTURES (90), BENCH_ARGS (extra bench_cuda options, e.g. --quick).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
build_dir=${BUILD_DIR:-build-cuda}
out_dir=${OUT_DIR:-out/gpu-check}
mkdir -p "$out_dir"
report="$out_dir/report.txt"
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

fail() {
  echo "gpu-check: $1 (log: $2)" >&2
  tail -n 30 "$2" >&2
  exit 1
}

export NCCL_DEBUG=${NCCL_DEBUG:-WARN}  # an NCCL bootstrap failure explains itself
if command -v nvidia-smi >/dev/null; then  # CUDA 13's runtime needs driver 580 or newer
  gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1)
  echo "gpu-check: $gpu"
else
  echo "gpu-check: no nvidia-smi: is an NVIDIA driver installed?"
fi

# 1. Build.
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "gpu-check: no nvcc on PATH or in /usr/local/cuda/bin: install the CUDA toolkit" >&2
  exit 1
fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMOEBENCH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES:-90}" >"$out_dir/configure.log" 2>&1 ||
  fail "configure failed (are the packages of launch/setup.sh installed?)" "$out_dir/configure.log"
cmake --build "$build_dir" -j"$(nproc)" --target moebench_cuda_all >"$out_dir/build.log" 2>&1 ||
  fail "build failed" "$out_dir/build.log"
build_s=$(elapsed)
echo "gpu-check: build ok (${build_s} s)"

# 2. GPU tests. ctest's --timeout does not override the tests' own TIMEOUT property (300 s
# each), so the stage as a whole is bounded from outside.
(cd "$build_dir" && timeout -k 10 210 ctest -L gpu -V) >"$out_dir/ctest.log" 2>&1
test_status=$?
test_s=$(( $(elapsed) - build_s ))
echo "gpu-check: tests exit $test_status (${test_s} s)"

# 3. GPU benchmark.
# shellcheck disable=SC2086
timeout -k 10 120 "$build_dir/bench/bench_cuda" ${BENCH_ARGS:-} >"$out_dir/bench.log" 2>&1
bench_status=$?
echo "gpu-check: benchmark exit $bench_status"
timeout -k 10 45 launch/mpirun.sh -np 1 "$build_dir/moebench" alltoall --backend cuda \
  --min-bytes 1K --max-bytes 256M --iters 20 --out "$out_dir/alltoall.h5" \
  >"$out_dir/alltoall.log" 2>&1
alltoall_status=$?
echo "gpu-check: alltoall exit $alltoall_status"
timeout -k 10 45 launch/mpirun.sh -np 1 "$build_dir/moebench" capacity --backend cuda \
  --experts 64,256 --top-k 1,2 --capacity-factor 1.0,1.25 --tokens 16384 --d-model 1024 \
  --iters 20 --out "$out_dir/capacity.h5" >"$out_dir/capacity.log" 2>&1
capacity_status=$?
echo "gpu-check: capacity exit $capacity_status"
timeout -k 10 60 launch/mpirun.sh -np 1 "$build_dir/moebench" train --backend cuda \
  --config configs/quickstart.ini --out "$out_dir/train.h5" >"$out_dir/train.log" 2>&1
train_status=$?
# The larger-scale model (d 512, 4 blocks, E 32, T 256) for its tokens/s: 40 steps, one
# evaluation at the end.
timeout -k 10 60 launch/mpirun.sh -np 1 "$build_dir/moebench" train --backend cuda \
  --config configs/larger_scale.ini --steps 40 --warmup 10 --eval-batches 2 --log-every 10 \
  --out "$out_dir/train_large.h5" >"$out_dir/train_large.log" 2>&1
train_large_status=$?
[ "$train_status" -eq 0 ] && train_status=$train_large_status
echo "gpu-check: train exit $train_status"
bench_s=$(( $(elapsed) - build_s - test_s ))

# 4. Report.
{
  echo "# moebench GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
      sed 's/^/gpu: /'
  fi
  echo "time: build ${build_s} s, tests ${test_s} s, benchmark ${bench_s} s, total $(elapsed) s"
  echo
  echo "## Tests (ctest -L gpu; full log $out_dir/ctest.log)"
  grep -E "^ *[0-9]+/[0-9]+ Test +#|tests passed|tests failed" "$out_dir/ctest.log"
  echo "largest differences against the CPU reference:"
  grep -E "max rel diff|gate diff|device [0-9]+:" "$out_dir/ctest.log" | head -n 100
  grep -h "GPU tests skipped" "$out_dir/ctest.log" | sort -u | head -n 5
  grep -E "\[  FAILED  \]|: Failure$" "$out_dir/ctest.log" | head -n 20
  echo
  echo "## Benchmark (bench_cuda ${BENCH_ARGS:-}; exit $bench_status)"
  cat "$out_dir/bench.log"
  echo
  echo "## moebench alltoall --backend cuda, 1 rank (exit $alltoall_status)"
  grep -vE "^  [a-z-]+ \.\.\." "$out_dir/alltoall.log" | tail -n 40
  echo
  echo "## moebench capacity --backend cuda, 1 rank (exit $capacity_status)"
  grep -vE "^  [a-z-]+ \.\.\." "$out_dir/capacity.log" | tail -n 20
  echo
  echo "## moebench train --backend cuda --config configs/quickstart.ini, 1 rank"
  grep -E "^# (model|data|done|final|where)|^step +[0-9]+/|^eval|error" "$out_dir/train.log" | tail -n 24
  echo
  echo "## moebench train --backend cuda --config configs/larger_scale.ini --steps 40, 1 rank"
  grep -E "^# (model|done|final|where)|^step +[0-9]+/|error" "$out_dir/train_large.log" | tail -n 12
  echo
  if [ "$test_status" -eq 0 ] && [ "$bench_status" -eq 0 ] && [ "$alltoall_status" -eq 0 ] &&
     [ "$capacity_status" -eq 0 ] && [ "$train_status" -eq 0 ]; then
    if grep -q "Skipped" "$out_dir/ctest.log"; then
      echo "# GPU check: OK (some GPU tests skipped: see above)"
    else
      echo "# GPU check: OK"
    fi
  else
    echo "# GPU check: FAILED (tests exit $test_status, benchmark exit $bench_status, alltoall exit $alltoall_status, capacity exit $capacity_status, train exit $train_status)"
  fi
} | tee "$report"
[ "$test_status" -eq 0 ] && [ "$bench_status" -eq 0 ] && [ "$alltoall_status" -eq 0 ] &&
  [ "$capacity_status" -eq 0 ] && [ "$train_status" -eq 0 ]
