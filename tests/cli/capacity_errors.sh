#!/usr/bin/env bash
# Bad input to `moebench capacity` through the real binary: one clear message naming the
# option and the fix, a non-zero exit on every rank, no hang, no output left behind.
#
# usage: bash tests/cli/capacity_errors.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
# shellcheck source=tests/cli/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--experts 8 --top-k 1 --capacity-factor 1.0 --iters 2 --warmup-iters 0 --tokens 16 --d-model 4)

expect_failure "unknown option '--bogus'; run 'moebench capacity --help'" --status 2 -- \
  "$moebench" capacity --bogus
expect_failure "--experts 6 is not divisible by the 4 ranks" -- \
  "$mpirun" -np 4 "$moebench" capacity --experts 6 --out "$work/a.h5"
expect_failure "--top-k 8 exceeds --experts 4" -- \
  "$mpirun" -np 2 "$moebench" capacity --experts 4 --top-k 8 --out "$work/b.h5"
expect_failure "--capacity-factor: entry 'abc' of '1.0,abc' is not a number" -- \
  "$mpirun" -np 2 "$moebench" capacity --capacity-factor 1.0,abc --out "$work/c.h5"
expect_failure "--capacity-factor: entry -0.5 is negative" -- \
  "$mpirun" -np 2 "$moebench" capacity --capacity-factor 1.0,-0.5 --out "$work/d.h5"
expect_failure "--experts: entry '-4'" -- \
  "$mpirun" -np 2 "$moebench" capacity --experts=-4 --out "$work/e.h5"
expect_failure "--router: unknown value 'top2'" -- \
  "$mpirun" -np 2 "$moebench" capacity --router top2 --out "$work/f.h5"
expect_failure "cannot write trace '$work/missing/x.h5'" -- \
  "$mpirun" -np 4 "$moebench" capacity "${small[@]}" --out "$work/missing/x.h5"
expect_failure "cannot write trace '$work'" -- \
  "$mpirun" -np 2 "$moebench" capacity "${small[@]}" --out "$work"
expect_failure "cannot read config file '$work/none.ini'" -- \
  "$moebench" capacity --config "$work/none.ini"

expect_failure "--backend: unknown value 'tpu' \\(accepted: cpu, cuda\\)" -- \
  "$mpirun" -np 2 "$moebench" capacity "${small[@]}" --backend tpu --out "$work/h.h5"
# --backend cuda: a CPU build names the build option; a CUDA build checks every cell against
# the GPU routing before any device, then, without a GPU, says that none is visible.
expect_cuda_backend_refusals "$mpirun" "$work/cuda" -- "$moebench" capacity "${small[@]}"

# Every rank exits non-zero (not only the one that printed).
expect_every_rank_exits 2 4 "$mpirun" -- "$moebench" capacity --experts 6 --out "$work/g.h5"

# Nothing was left behind by the failed runs.
leftover=$(find "$work" -name '*.h5' -o -name '*.csv' | wc -l)
if [ "$leftover" = 0 ]; then
  _lib_pass "failed runs leave no trace or CSV"
else
  _lib_fail "failed runs leave no trace or CSV" "found: $(find "$work" -name '*.h5' -o -name '*.csv')"
fi

finish
