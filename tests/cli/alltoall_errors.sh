#!/usr/bin/env bash
# Bad input to `moebench alltoall` through the real binary: one clear message naming the
# option and the fix, a non-zero exit on every rank, no hang, and no trace or CSV left behind.
# Covers the patterns (unknown, replay without a file, a missing file, a foreign file, a
# trace without /comm, a trace of another rank count, --out over the replayed trace), routed
# cells (k > E, E % P != 0), the model options and --backend.
#
# usage: bash tests/cli/alltoall_errors.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
inputs=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$inputs" "$work"' EXIT

# Inputs: a 2-rank training trace, a trace without /comm (an alltoall sweep), a text file and
# an HDF5 file that is not a moebench trace.
expect_success -- "$mpirun" -np 2 "$moebench" train --d-model 16 --layers 1 --heads 2 --experts 2 \
  --top-k 1 --seq-len 16 --batch-size 1 --steps 1 --eval-every 100 --eval-batches 1 --out "$inputs/train2.h5"
expect_success "Wrong elements: 0  OK" -- "$mpirun" -np 2 "$moebench" alltoall --min-bytes 64 \
  --max-bytes 256 --iters 1 --warmup-iters 0 --out "$inputs/sweep.h5"
printf 'not a trace\n' >"$inputs/text.h5"
expect_success "foreign h5 written" -- "$python" -c "
import h5py
with h5py.File('$inputs/foreign.h5', 'w') as f:
    f['comm/layer_0/bytes_sent'] = [[1]]
print('foreign h5 written')"

fail() {  # fail REGEX NP ARGS...: one message, status 2
  local regex=$1 np=$2
  shift 2
  expect_failure "$regex" --status 2 -- "$mpirun" -np "$np" "$moebench" alltoall "$@"
}
fail "--pattern: unknown value 'zigzag' \(accepted: uniform, routed, replay\)" 2 --pattern zigzag --out "$work/a.h5"
fail "--pattern replay needs --replay TRACE" 2 --pattern replay --out "$work/b.h5"
fail "--replay: '$inputs/none.h5' does not exist; pass the --out trace of a moebench train run" 2 \
  --pattern replay --replay "$inputs/none.h5" --out "$work/c.h5"
fail "--replay: '$inputs/text.h5' is not a moebench trace \(not an HDF5 file\)" 2 \
  --pattern replay --replay "$inputs/text.h5" --out "$work/d.h5"
fail "--replay: '$inputs/foreign.h5' is not a moebench trace \(no schema_version attribute\)" 2 \
  --pattern replay --replay "$inputs/foreign.h5" --out "$work/e.h5"
fail "--replay: '$inputs/sweep.h5' has no /comm byte matrices \(it was written by moebench alltoall\)" 2 \
  --pattern replay --replay "$inputs/sweep.h5" --out "$work/f.h5"
fail "--replay: '$inputs/train2.h5' was recorded on 2 ranks and this run has 4; replay it on the same count" 4 \
  --pattern replay --replay "$inputs/train2.h5" --out "$work/g.h5"
fail "--out '$inputs/train2.h5' is the --replay trace itself" 2 \
  --pattern replay --replay "$inputs/train2.h5" --out "$inputs/train2.h5"
fail "--replay is read only with --pattern replay" 2 --replay "$inputs/train2.h5" --out "$work/h.h5"
fail "--top-k 8 exceeds --experts 4" 2 --pattern routed --router topk_hard --experts 4 --top-k 2,8 --out "$work/i.h5"
fail "--top-k 8 exceeds --experts 4" 2 --pattern routed --router top1 --experts 4 --top-k 8 --out "$work/j.h5"
fail "--experts 6 is not divisible by the 4 ranks" 4 --pattern routed --experts 6 --out "$work/k.h5"
fail "--router: unknown value 'top3'" 2 --pattern routed --router topk_hard,top3 --out "$work/l.h5"
fail "--capacity-factor: entry -1 is negative" 2 --pattern routed --capacity-factor 1,-1 --out "$work/m.h5"
fail "--algorithm: unknown value 'ring'" 2 --algorithm raw,ring --out "$work/n.h5"
fail "--predict models the uniform size sweep" 2 --pattern routed --predict 8 --out "$work/o.h5"
fail "--predict needs a measuring run on at least 2 ranks" 1 --predict 8 --out "$work/p.h5"
fail "--predict needs the alpha-beta fit, which needs at least 2 distinct sizes" 2 \
  --min-bytes 1K --max-bytes 1K --predict 8 --out "$work/q.h5"
fail "--predict: 12 ranks do not fill nodes of --predict-ranks-per-node 8" 2 --predict 8,12 --out "$work/r.h5"
fail "--inter-bw must be a bandwidth in GB/s >= 0" 2 --predict 16 --inter-bw -3 --out "$work/s.h5"
fail "--max-bytes is too large: at most 8 GiB in all per rank" 4 --max-bytes 9G --out "$work/r9.h5"
fail "--backend: unknown value 'tpu' \(accepted: cpu, cuda\)" 2 --backend tpu --out "$work/s1.h5"
fail "--algorithm nccl exchanges device buffers: it needs --backend cuda" 2 --algorithm alltoallv,nccl \
  --out "$work/s2.h5"
# --backend cuda: a CPU build names the build option; a CUDA build checks the algorithm before
# it looks for a device (so this part runs in either build, with or without a GPU), and
# without a GPU says that none is visible.
probe=$("$mpirun" -np 1 "$moebench" alltoall --backend cuda --algorithm alltoallv --out "$work/s3.h5" 2>&1 || true)
if [[ $probe == *"built without the CUDA backend"* ]]; then
  fail "--backend cuda: this moebench was built without the CUDA backend; build it with launch/build.sh -DMOEBENCH_CUDA=ON" \
    2 --backend cuda --out "$work/s4.h5"
  every_cuda=(--backend cuda --out "$work/s5.h5")
else
  fail "--backend cuda measures the nccl algorithm only" 2 --backend cuda --algorithm alltoallv --out "$work/s5.h5"
  if ! nvidia-smi -L >/dev/null 2>&1; then
    fail "--backend cuda: no CUDA device is visible" 2 --backend cuda --pattern routed --out "$work/s7.h5"
  fi
  every_cuda=(--backend cuda --algorithm alltoallv --out "$work/s6.h5")
fi

# Every rank exits with status 2, not only the one that printed.
every() {
  local np=$1
  shift
  expect_every_rank_exits 2 "$np" "$mpirun" -- "$moebench" alltoall "$@"
}
every 2 --pattern zigzag --out "$work/t.h5"
every 2 --pattern replay --replay "$inputs/none.h5" --out "$work/u.h5"
every 2 --pattern replay --replay "$inputs/text.h5" --out "$work/v.h5"
every 2 --pattern replay --replay "$inputs/sweep.h5" --out "$work/w.h5"
every 4 --pattern replay --replay "$inputs/train2.h5" --out "$work/x.h5"
every 2 --pattern routed --experts 4 --top-k 8 --out "$work/y.h5"
every 4 --pattern routed --experts 6 --out "$work/z.h5"
every 2 "${every_cuda[@]}"

# Nothing was left behind by the failed runs (and the replayed trace is intact).
leftover=$(find "$work" -name '*.h5' -o -name '*.csv*' | wc -l)
if [ "$leftover" = 0 ]; then
  _lib_pass "failed runs leave no trace or CSV"
else
  _lib_fail "failed runs leave no trace or CSV" "found: $(find "$work" -name '*.h5' -o -name '*.csv*')"
fi
expect_success "train trace intact" -- "$python" -c "
import h5py
with h5py.File('$inputs/train2.h5', 'r') as f:
    assert f['comm/layer_0/bytes_sent'].shape[0] == 1
print('train trace intact')"
finish
