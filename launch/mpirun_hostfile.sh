#!/usr/bin/env bash
# Runs an experiment driver across the machines of an Open MPI hostfile with `mpirun --hostfile`:
# as many ranks as the hostfile has slots, filled node by node, each rank bound to its cores.
#
# usage: [HOSTFILE=launch/hostfile.example] launch/mpirun_hostfile.sh EXPERIMENT [DRIVER ARGS...]
#   EXPERIMENT: unified | capacity | larger_scale | subword | router_arch | alltoall | all
#   e.g. HOSTFILE=~/hosts launch/mpirun_hostfile.sh larger_scale --full
#
# Environment: HOSTFILE (default launch/hostfile.example), NP (default: the slots of the
# hostfile), OMP_NUM_THREADS (threads per rank, default 1), MPIRUN_FLAGS (more mpirun flags,
# e.g. "-x NCCL_SOCKET_IFNAME=ib0 --mca pml ucx"), and every driver variable (OUT, MOEBENCH, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}
if [ $# = 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
  usage
  [ $# = 0 ] && exit 2 || exit 0
fi
experiment=$1
shift
case $experiment in
  unified|capacity|larger_scale|subword|router_arch|alltoall) driver=launch/experiment_$experiment.sh ;;
  all) driver=launch/experiment_all.sh ;;
  *) echo "mpirun_hostfile.sh: error: unknown experiment '$experiment' (unified, capacity, larger_scale, subword, router_arch, alltoall or all)" >&2
     exit 2 ;;
esac

hostfile=${HOSTFILE:-launch/hostfile.example}
[ -s "$hostfile" ] || { echo "mpirun_hostfile.sh: error: no hostfile at '$hostfile' (set HOSTFILE=...)" >&2; exit 2; }
hostfile=$(realpath "$hostfile")
# Sum of slots= (a line without slots counts 1); comments and blank lines skipped.
slots=$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, a, "="); n = a[2] } total += n } END { print total + 0 }' "$hostfile")
[ "$slots" -gt 0 ] || { echo "mpirun_hostfile.sh: error: '$hostfile' lists no host" >&2; exit 2; }
np=${NP:-$slots}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}
export HDF5_USE_FILE_LOCKING=${HDF5_USE_FILE_LOCKING:-FALSE}   # parallel HDF5 on NFS/Lustre
launcher="mpirun -np $np --hostfile $hostfile --map-by slot:PE=$OMP_NUM_THREADS --bind-to core"
[ "$(id -u)" = 0 ] && launcher+=" --allow-run-as-root"
launcher+=" -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x HDF5_USE_FILE_LOCKING"
[ -n "${OMP_WAIT_POLICY:-}" ] && launcher+=" -x OMP_WAIT_POLICY"   # else libgomp's default: launch/mpirun.sh
[ -n "${MPIRUN_FLAGS:-}" ] && launcher+=" $MPIRUN_FLAGS"
export LAUNCHER=$launcher NP=$np
echo "mpirun_hostfile.sh: $np ranks over $(grep -cvE '^[[:space:]]*(#|$)' "$hostfile") hosts of $hostfile"
exec "$driver" "$@"
