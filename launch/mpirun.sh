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
# With several threads per rank, OpenMP regions and OpenBLAS' own (pthread) threads take
# turns; libgomp's default lets finished OpenMP workers spin for a while, stealing the cores the
# next sgemm's threads need. Passive waiting: the quickstart model on 1 rank x 2 threads trains
# at 9.5 k tokens/s instead of 1.4-5 k (and PyTorch eager at 7.0 k instead of 2.3 k;
# OMP_WAIT_POLICY unset vs passive, minutes apart: docs/benchmarks.md, "Training throughput").
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
flags+=(-x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS -x OMP_WAIT_POLICY)
# Keep Open MPI quiet about missing high-speed fabrics on a single machine.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_rmaps_base_oversubscribe=1
# shellcheck disable=SC2086
exec mpirun "${flags[@]}" ${MOEBENCH_MPIRUN_FLAGS:-} "$@"
