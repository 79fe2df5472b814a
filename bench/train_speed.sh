#!/usr/bin/env bash
# Training speed: moebench train (one rank) vs an idiomatic PyTorch eager implementation of the
# same model (bench/torch_train_speed.py), quickstart shape, 2 threads each, alternated twice.
#   bench/train_speed.sh            (from the repository root or anywhere; needs build/moebench)
# Env: MOEBENCH (binary, default build/moebench), THREADS (default 2), REPS (default 2),
#      TORCH_STEPS (PyTorch steps per run, default 25; the first 5 are left out of the median),
#      OMP_WAIT_POLICY (default passive, for both: see launch/mpirun.sh; "active" to compare
#      libgomp's spinning).
# moebench's tokens/s: median of /train/tokens_per_s after the first 5 steps of its trace.
# PyTorch trains on random bytes, moebench on its built-in story corpus (speed is data-independent).
# Model FLOP utilisation: model FLOPs per token (the trace's /train model_flops_per_token, the
# same model for both) x tokens/s over the sgemm peak with the same threads (build/bench/bench_sgemm,
# measured in every round).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's PyTorch and h5py
MOEBENCH=${MOEBENCH:-build/moebench}
THREADS=${THREADS:-2}
REPS=${REPS:-2}
TORCH_STEPS=${TORCH_STEPS:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg), OMP_WAIT_POLICY=$OMP_WAIT_POLICY"

torch_rates=() moe_rates=() peaks=()
for rep in $(seq 1 "$REPS"); do
  r=$(OPENBLAS_NUM_THREADS=$THREADS build/bench/bench_sgemm 2048 5 | sed -n 's/^RESULT sgemm_gflops=\([0-9.]*\).*/\1/p')
  peaks+=("$r")
  echo "# run $rep sgemm peak: $r GFLOP/s"
  OMP_NUM_THREADS=$THREADS $PY bench/torch_train_speed.py --threads "$THREADS" \
      --steps "$TORCH_STEPS" --warmup-steps 5 >"$tmp/torch_$rep.log" 2>&1 \
    || { cat "$tmp/torch_$rep.log"; exit 1; }
  r=$(sed -n 's/^RESULT tokens_per_s=//p' "$tmp/torch_$rep.log")
  torch_rates+=("$r")
  echo "# run $rep pytorch:  $r tokens/s"

  OMP_NUM_THREADS=$THREADS launch/mpirun.sh -np 1 "$MOEBENCH" train --config configs/quickstart.ini \
      --steps 40 --log-every 10 --eval-every 1000 --threads "$THREADS" --batch-size 8 \
      --out "$tmp/moebench_$rep.h5" >"$tmp/moebench_$rep.log" 2>&1 \
    || { cat "$tmp/moebench_$rep.log"; exit 1; }
  r=$($PY -c 'import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f: print("%.1f" % np.median(f["/train/tokens_per_s"][5:]))' \
      "$tmp/moebench_$rep.h5")
  flops_per_token=$($PY -c 'import sys, h5py
with h5py.File(sys.argv[1], "r") as f: print(f["/train"].attrs["model_flops_per_token"])' "$tmp/moebench_$rep.h5")
  moe_rates+=("$r")
  echo "# run $rep moebench: $r tokens/s"
done

$PY - "$THREADS" "${torch_rates[*]}" "${moe_rates[*]}" "${peaks[*]}" "$flops_per_token" <<'PYEOF'
import statistics, sys
threads = sys.argv[1]
torch_r, moe_r, peak_r = ([float(x) for x in arg.split()] for arg in sys.argv[2:5])
flops = float(sys.argv[5])
t, m, peak = statistics.median(torch_r), statistics.median(moe_r), statistics.median(peak_r)
print(f"\nmodel FLOPs per training token: {flops / 1e6:.2f} M; sgemm peak (2048^3, {threads} threads): "
      f"{peak:.1f} GFLOP/s (per run: {', '.join('%.1f' % x for x in peak_r)})")
print(f"\n| implementation | threads | tokens/s (median) | per run | model GFLOP/s | MFU | moebench/PyTorch |")
print(f"|---|---|---|---|---|---|---|")
for name, rate, runs, ratio in (("PyTorch eager", t, torch_r, ""), ("moebench (1 rank)", m, moe_r, f"{m / t:.2f}x")):
    gflops = rate * flops / 1e9
    print(f"| {name} | {threads} | {rate:.0f} | {', '.join('%.0f' % x for x in runs)} | {gflops:.1f} | {100 * gflops / peak:.1f} % | {ratio} |")
PYEOF
