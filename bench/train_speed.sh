#!/usr/bin/env bash
# Training speed: moebench train (one rank) vs an idiomatic PyTorch eager implementation of the
# same model (bench/torch_train_speed.py), quickstart shape, THREADS threads each, REPS rounds.
#   bench/train_speed.sh            (from the repository root or anywhere; needs build/moebench)
# Env: MOEBENCH (binary, default build/moebench), THREADS (default 2), REPS (default 2),
#      TORCH_STEPS (PyTorch steps per run, default 25; the first 5 are left out of the median),
#      POLICIES (OpenMP wait policies to run each program under, default "default passive";
#      "default" leaves OMP_WAIT_POLICY unset).
# Every round runs the sgemm peak, then each program under each policy, interleaved. The
# wait policy matters a lot and differently for the two (docs/benchmarks.md), so each is
# reported under every policy, and the ratio compares each program's best policy.
# moebench's tokens/s: median of /train/tokens_per_s after the first 5 steps of its trace.
# Both train on the same text: the built-in story corpus written once as a byte-level token
# shard (`moebench data`), moebench through --data, PyTorch reading the shard (random windows of
# its training split). The routing, and so the expert work and the drops, depend on the text.
# Model FLOP utilisation: model FLOPs per token (the trace's /train model_flops_per_token, the
# same model for both) x tokens/s over the sgemm peak with the same threads (build/bench/bench_sgemm,
# OpenBLAS's own threads, measured in every round).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's PyTorch and h5py
MOEBENCH=${MOEBENCH:-build/moebench}
THREADS=${THREADS:-2}
REPS=${REPS:-2}
TORCH_STEPS=${TORCH_STEPS:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
POLICIES=${POLICIES:-default passive}
unset OMP_WAIT_POLICY
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg), policies: $POLICIES"

# with_policy POLICY CMD...: runs CMD with OMP_WAIT_POLICY=POLICY, or unset for "default".
with_policy() {
  local policy=$1; shift
  if [ "$policy" = default ]; then env -u OMP_WAIT_POLICY "$@"; else OMP_WAIT_POLICY=$policy "$@"; fi
}

results=$tmp/results.txt   # lines: program policy tokens_per_s
"$MOEBENCH" data --out "$tmp/stories.bin" >"$tmp/data.log" 2>&1 || { cat "$tmp/data.log"; exit 1; }
peaks=()
for rep in $(seq 1 "$REPS"); do
  r=$(OPENBLAS_NUM_THREADS=$THREADS build/bench/bench_sgemm 2048 5 | sed -n 's/^RESULT sgemm_gflops=\([0-9.]*\).*/\1/p')
  peaks+=("$r")
  echo "# run $rep sgemm peak: $r GFLOP/s"
  for policy in $POLICIES; do
    with_policy "$policy" env OMP_NUM_THREADS="$THREADS" $PY bench/torch_train_speed.py \
        --threads "$THREADS" --steps "$TORCH_STEPS" --warmup-steps 5 --data "$tmp/stories.bin" \
        >"$tmp/torch.log" 2>&1 \
      || { cat "$tmp/torch.log"; exit 1; }
    r=$(sed -n 's/^RESULT tokens_per_s=//p' "$tmp/torch.log")
    echo "pytorch $policy $r" >>"$results"
    echo "# run $rep pytorch  ($policy): $r tokens/s"

    with_policy "$policy" env OMP_NUM_THREADS="$THREADS" launch/mpirun.sh -np 1 "$MOEBENCH" train \
        --config configs/quickstart.ini --steps 40 --log-every 10 --eval-every 1000 \
        --threads "$THREADS" --batch-size 8 --data "$tmp/stories.bin" --out "$tmp/moebench.h5" >"$tmp/moebench.log" 2>&1 \
      || { cat "$tmp/moebench.log"; exit 1; }
    r=$($PY -c 'import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f: print("%.1f" % np.median(f["/train/tokens_per_s"][5:]))' \
        "$tmp/moebench.h5")
    flops_per_token=$($PY -c 'import sys, h5py
with h5py.File(sys.argv[1], "r") as f: print(f["/train"].attrs["model_flops_per_token"])' "$tmp/moebench.h5")
    echo "moebench $policy $r" >>"$results"
    echo "# run $rep moebench ($policy): $r tokens/s"
  done
done

$PY - "$THREADS" "$results" "${peaks[*]}" "$flops_per_token" <<'PYEOF'
import collections, statistics, sys
threads, results = sys.argv[1], sys.argv[2]
peak_r = [float(x) for x in sys.argv[3].split()]
flops = float(sys.argv[4])
runs = collections.defaultdict(list)
for line in open(results):
    program, policy, rate = line.split()
    runs[(program, policy)].append(float(rate))
peak = statistics.median(peak_r)
print(f"\nmodel FLOPs per training token: {flops / 1e6:.2f} M; sgemm peak (2048^3, {threads} threads): "
      f"{peak:.1f} GFLOP/s (per run: {', '.join('%.1f' % x for x in peak_r)})")
print(f"\n| implementation | OMP_WAIT_POLICY | threads | tokens/s (median) | per run | model GFLOP/s | MFU |")
print(f"|---|---|---|---|---|---|---|")
best = {}
for (program, policy), rates in runs.items():
    rate = statistics.median(rates)
    if rate > best.get(program, (0, ""))[0]:
        best[program] = (rate, policy)
    name = "PyTorch eager" if program == "pytorch" else "moebench (1 rank)"
    gflops = rate * flops / 1e9
    print(f"| {name} | {policy} | {threads} | {rate:.0f} | {', '.join('%.0f' % x for x in rates)} | "
          f"{gflops:.1f} | {100 * gflops / peak:.1f} % |")
(m, mp), (t, tp) = best["moebench"], best["pytorch"]
print(f"\nmoebench / PyTorch, each at its best policy (moebench {mp}, PyTorch {tp}): {m / t:.2f}x")
PYEOF
