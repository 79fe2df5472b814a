# Shared start of the GPU command-line tests (tests/cuda/cli/*.sh), sourced after `set -uo
# pipefail` with the script's arguments MOEBENCH_BINARY LAUNCH_MPIRUN_SH: sets moebench,
# mpirun, python, here (the script's folder), cli (tests/cli) and work (a temporary folder,
# removed on exit), and loads tests/cli/lib.bash. Without a GPU it prints the skip line CTest
# recognises ("GPU tests skipped: ...") and exits 0.
# shellcheck shell=bash
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[1]}")
cli=$here/../../cli
# shellcheck source=tests/cli/lib.bash
source "$cli/lib.bash"
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "GPU tests skipped: nvidia-smi lists no GPU"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
