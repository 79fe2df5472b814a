#!/usr/bin/env bash
# Top-level usage of the real binary: help, version, no command, unknown command, on one
# process and under MPI (the message is printed once, every rank exits non-zero, no hang).
#
# usage: bash tests/cli/usage.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail  # no -e: every check runs and reports, finish gives the verdict
if [ $# -ne 2 ]; then
  echo "usage: $0 MOEBENCH_BINARY LAUNCH_MPIRUN_SH" >&2
  exit 2
fi
moebench=$1
mpirun=$2
# shellcheck source=tests/cli/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

expect_success '^usage: moebench <command> \[options\]' -- "$moebench" --help
expect_success '^usage: moebench <command> \[options\]' -- "$moebench" -h
expect_success '^moebench [0-9]+\.[0-9]+\.[0-9]+$' -- "$moebench" --version
expect_failure '^usage: moebench <command> \[options\]' --status 2 -- "$moebench"
expect_failure "^moebench: unknown command 'nosuchcommand'; " --status 2 -- \
  "$moebench" nosuchcommand
expect_failure "^moebench: unknown option '--bogus'" --status 2 -- "$moebench" --bogus

# Under MPI: rank 0 alone prints; mpirun reports the non-zero exit.
expect_success '^usage: moebench <command> \[options\]' -- "$mpirun" -np 4 "$moebench" --help
expect_failure '^usage: moebench <command> \[options\]' -- "$mpirun" -np 2 "$moebench"
expect_failure "^moebench: unknown command 'nosuchcommand'; " -- \
  "$mpirun" -np 4 "$moebench" nosuchcommand

finish
