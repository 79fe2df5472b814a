#!/usr/bin/env bash
# The one place that knows how this machine launches MPI jobs. Everything else (tests,
# quickstart, sweeps) calls `launch/mpirun.sh -np N CMD...`.
#  - Open MPI refuses to run as root without --allow-run-as-root;
#  - more ranks than cores (4 ranks on a 2-core machine) needs --oversubscribe.
# Extra mpirun flags can be passed through MOEBENCH_MPIRUN_FLAGS (e.g. a hostfile).
set -euo pipefail
flags=(--oversubscribe --bind-to none)
if [ "$(id -u)" = 0 ]; then
  flags+=(--allow-run-as-root)
fi
# One OpenMP/BLAS thread per rank unless asked otherwise: with several ranks per node, idle
# OpenMP workers spinning next to MPI ranks cost more than they give (measured: a 4-rank
# all-to-all 2-3x slower with the default thread count on 2 cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$OMP_NUM_THREADS}
# OMP_WAIT_POLICY is passed on when set and otherwise left to libgomp's default (spin briefly,
# then sleep; it spins less by itself when threads outnumber cores). moebench runs all its
# threads in one OpenMP pool (BLAS single-threaded inside it, include/moebench/blas.hpp), so a
# briefly spinning worker is ready for the next region: passive waiting halves the quickstart
# model's speed on 1 rank x 2 threads (docs/benchmarks.md, "Training throughput").
flags+=(-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
if [ -n "${OMP_WAIT_POLICY:-}" ]; then
  flags+=(-x OMP_WAIT_POLICY)
fi
# Keep Open MPI quiet about missing high-speed fabrics on a single machine.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_rmaps_base_oversubscribe=1
# shellcheck disable=SC2086
exec mpirun "${flags[@]}" ${MOEBENCH_MPIRUN_FLAGS:-} "$@"
