#!/usr/bin/env bash
# Runs every experiment driver one after another, in the same mode, each into its own results
# directory (results/<experiment>, or OUT_ROOT/<experiment>): capacity, alltoall, unified,
# router_arch, subword, larger_scale. Arguments (--quick, --tiny, --full, --resume, --dry-run,
# -- OPTION...) go to every driver; so does the environment (NP, MOEBENCH, STEPS, LAUNCHER, ...).
# Stops at the first driver that fails.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
experiments=(capacity alltoall unified router_arch subword larger_scale)

case ${1-} in
  -h|--help)
    echo "usage: $(basename "$0") [--quick | --tiny | --full] [--resume] [--dry-run] [-- OPTION...]"
    echo
    echo "Runs launch/experiment_{$(IFS=,; echo "${experiments[*]}")}.sh one after another with these"
    echo "arguments. OUT_ROOT=DIR puts each experiment's results in DIR/<experiment> (default"
    echo "results/<experiment>). See any driver's --help for the rest."
    exit 0 ;;
esac
if [ -n "${OUT:-}" ]; then
  echo "$(basename "$0"): error: OUT would put every experiment in one directory; use OUT_ROOT=DIR" >&2
  exit 2
fi

begin=$SECONDS
for experiment in "${experiments[@]}"; do
  if [ -n "${OUT_ROOT:-}" ]; then
    OUT="$OUT_ROOT/$experiment" "$here/experiment_$experiment.sh" "$@"
  else
    "$here/experiment_$experiment.sh" "$@"
  fi
done
elapsed=$((SECONDS - begin))
echo "== all experiments: ${#experiments[@]} done in $((elapsed / 60)) min $((elapsed % 60)) s"
