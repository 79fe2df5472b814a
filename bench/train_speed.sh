#!/usr/bin/env bash
# Training speed: moebench train (one rank) vs an idiomatic PyTorch eager implementation of the
# same model (bench/torch_train_speed.py), quickstart shape, 2 threads each, alternated twice.
#   bench/train_speed.sh            (from the repository root or anywhere; needs build/moebench)
# Env: MOEBENCH (binary, default build/moebench), THREADS (default 2), REPS (default 2),
#      TORCH_STEPS (PyTorch steps per run, default 25; the first 5 are left out of the median).
# moebench's tokens/s: median of /train/tokens_per_s after the first 5 steps of its trace.
# PyTorch trains on random bytes, moebench on its built-in story corpus (speed is data-independent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3   # Debian's PyTorch and h5py
MOEBENCH=${MOEBENCH:-build/moebench}
THREADS=${THREADS:-2}
REPS=${REPS:-2}
TORCH_STEPS=${TORCH_STEPS:-25}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"

torch_rates=() moe_rates=()
for rep in $(seq 1 "$REPS"); do
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
  moe_rates+=("$r")
  echo "# run $rep moebench: $r tokens/s"
done

$PY - "$THREADS" "${torch_rates[*]}" "${moe_rates[*]}" <<'PYEOF'
import statistics, sys
threads, torch_r, moe_r = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
t, m = statistics.median(torch_r), statistics.median(moe_r)
print(f"\n| implementation | threads | tokens/s (median) | per run | moebench/PyTorch |")
print(f"|---|---|---|---|---|")
print(f"| PyTorch eager | {threads} | {t:.0f} | {', '.join('%.0f' % x for x in torch_r)} | |")
print(f"| moebench (1 rank) | {threads} | {m:.0f} | {', '.join('%.0f' % x for x in moe_r)} | {m / t:.2f}x |")
PYEOF
