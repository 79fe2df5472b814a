# Helpers for command-line tests that run the real moebench binary (DESIGN §1 bad-input
# policy: one clear message, non-zero exit on every rank, no hang). Not a test itself
# (CTest registers tests/cli/*.sh only); source it from a test script:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
#   expect_success [REGEX] -- COMMAND...          exit 0; REGEX, if given, occurs exactly once
#   expect_failure REGEX [--status N] -- COMMAND...
#                                                 non-zero exit (N if given), not a timeout,
#                                                 REGEX occurs exactly once
#   finish                                        summary line; exits 1 if any check failed
#
# REGEX is an extended regular expression (grep -E) matched line by line against stdout and
# stderr together; "exactly once" counts matches, so a message printed by every rank of an
# MPI job instead of by one fails. Every command runs under
# `timeout ${MOEBENCH_TEST_TIMEOUT:-120}`, so a hang fails the check instead of the suite.
# After each check, LAST_STATUS holds the exit status and LAST_OUTPUT the combined output.

LIB_CHECKS=0
LIB_FAILURES=0
LAST_STATUS=0
LAST_OUTPUT=""
LIB_OUTPUT_FILE=$(mktemp "${TMPDIR:-/tmp}/moebench-cli-test.XXXXXX")
trap 'rm -f "$LIB_OUTPUT_FILE"' EXIT

# _lib_run COMMAND...: runs it under timeout, sets LAST_STATUS and LAST_OUTPUT.
_lib_run() {
  local limit=${MOEBENCH_TEST_TIMEOUT:-120}
  timeout --kill-after=10 "$limit" "$@" >"$LIB_OUTPUT_FILE" 2>&1 </dev/null
  LAST_STATUS=$?
  # shellcheck disable=SC2034  # read by the scripts that source this file
  LAST_OUTPUT=$(cat "$LIB_OUTPUT_FILE")
}

# _lib_count REGEX: number of matches of REGEX in the last output.
_lib_count() {
  grep -oE -e "$1" "$LIB_OUTPUT_FILE" | wc -l | tr -d ' '
}

_lib_describe() {
  local words=() word
  for word in "$@"; do
    words+=("$(printf '%q' "$word")")
  done
  echo "${words[*]}"
}

_lib_pass() {
  LIB_CHECKS=$((LIB_CHECKS + 1))
  echo "PASS: $1"
}

_lib_fail() {
  LIB_CHECKS=$((LIB_CHECKS + 1))
  LIB_FAILURES=$((LIB_FAILURES + 1))
  echo "FAIL: $1"
  echo "      $2"
  echo "      output (exit status $LAST_STATUS, last 40 lines):"
  tail -n 40 "$LIB_OUTPUT_FILE" | sed 's/^/      | /'
}

_lib_timed_out() {
  [ "$LAST_STATUS" = 124 ] || [ "$LAST_STATUS" = 137 ]
}

# _lib_check_once NAME REGEX: fails the check unless REGEX occurs exactly once.
_lib_check_once() {
  local count
  count=$(_lib_count "$2")
  if [ "$count" != 1 ]; then
    _lib_fail "$1" "expected /$2/ exactly once in the output, found it $count times"
    return 1
  fi
  return 0
}

expect_success() {
  local regex=""
  if [ "${1-}" != "--" ]; then
    regex=$1
    shift
  fi
  if [ "${1-}" != "--" ]; then
    echo "expect_success: usage: expect_success [REGEX] -- COMMAND..." >&2
    exit 2
  fi
  shift
  local name
  name="$(_lib_describe "$@") succeeds"
  _lib_run "$@"
  if _lib_timed_out; then
    _lib_fail "$name" "timed out after ${MOEBENCH_TEST_TIMEOUT:-120} s (a hang?)"
    return 1
  fi
  if [ "$LAST_STATUS" != 0 ]; then
    _lib_fail "$name" "expected exit status 0, got $LAST_STATUS"
    return 1
  fi
  if [ -n "$regex" ]; then
    _lib_check_once "$name" "$regex" || return 1
    name="$name, /$regex/ once"
  fi
  _lib_pass "$name"
}

expect_failure() {
  if [ $# -lt 3 ]; then
    echo "expect_failure: usage: expect_failure REGEX [--status N] -- COMMAND..." >&2
    exit 2
  fi
  local regex=$1 status=""
  shift
  if [ "$1" = "--status" ]; then
    status=$2
    shift 2
  fi
  if [ "${1-}" != "--" ]; then
    echo "expect_failure: usage: expect_failure REGEX [--status N] -- COMMAND..." >&2
    exit 2
  fi
  shift
  local name
  name="$(_lib_describe "$@") fails"
  _lib_run "$@"
  if _lib_timed_out; then
    _lib_fail "$name" "timed out after ${MOEBENCH_TEST_TIMEOUT:-120} s (a hang?)"
    return 1
  fi
  if [ "$LAST_STATUS" = 0 ]; then
    _lib_fail "$name" "expected a non-zero exit status, got 0"
    return 1
  fi
  if [ -n "$status" ] && [ "$LAST_STATUS" != "$status" ]; then
    _lib_fail "$name" "expected exit status $status, got $LAST_STATUS"
    return 1
  fi
  _lib_check_once "$name" "$regex" || return 1
  _lib_pass "$name with status $LAST_STATUS, /$regex/ once"
}

# expect_every_rank_exits STATUS NP MPIRUN -- COMMAND...: launched as MPIRUN -np NP, every
# rank of COMMAND exits with STATUS (not only the rank that printed the message).
expect_every_rank_exits() {
  local status=$1 np=$2 mpirun=$3
  shift 3
  [ "${1-}" = "--" ] && shift
  local command name count
  command=$(printf '%q ' "$@")
  name="all $np ranks of $(_lib_describe "$@") exit with status $status"
  _lib_run "$mpirun" -np "$np" bash -c "$command >/dev/null 2>&1; echo \"rank exit \$?\""
  count=$(grep -c "^rank exit $status\$" "$LIB_OUTPUT_FILE")
  if [ "$count" = "$np" ]; then
    _lib_pass "$name"
  else
    _lib_fail "$name" "found $count of $np 'rank exit $status' lines"
  fi
}

# expect_cuda_backend_refusals MPIRUN OUT_PREFIX -- COMMAND...: `COMMAND --backend cuda`
# (COMMAND = the binary, its subcommand and options) is refused by whichever build runs it,
# with status 2 on every rank and no GPU needed: a CPU build names the build option; a CUDA
# build first checks the routing against what the GPU runs (--drop-policy prob), then,
# without a GPU, says that none is visible. Output paths are OUT_PREFIX-<n>.h5.
expect_cuda_backend_refusals() {
  local mpirun=$1 out=$2 probe every
  shift 2
  [ "${1-}" = "--" ] && shift
  probe=$("$mpirun" -np 1 "$@" --backend cuda --drop-policy prob --out "$out-0.h5" 2>&1 || true)
  if [[ $probe == *"built without the CUDA backend"* ]]; then
    expect_failure "--backend cuda: this moebench was built without the CUDA backend; build it with launch/build.sh -DMOEBENCH_CUDA=ON" -- \
      "$mpirun" -np 2 "$@" --backend cuda --out "$out-1.h5"
    every=(--backend cuda --out "$out-2.h5")
  else
    expect_failure "--drop-policy prob is not implemented in the CUDA backend yet \\(use --drop-policy position or --backend cpu\\)" -- \
      "$mpirun" -np 2 "$@" --backend cuda --drop-policy prob --out "$out-1.h5"
    every=(--backend cuda --drop-policy prob --out "$out-2.h5")
    if ! nvidia-smi -L >/dev/null 2>&1; then
      expect_failure "--backend cuda: no CUDA device is visible" -- \
        "$mpirun" -np 2 "$@" --backend cuda --out "$out-3.h5"
    fi
  fi
  expect_every_rank_exits 2 2 "$mpirun" -- "$@" "${every[@]}"
}

finish() {
  if [ "$LIB_FAILURES" != 0 ]; then
    echo "FAILED: $LIB_FAILURES of $LIB_CHECKS checks failed"
    exit 1
  fi
  if [ "$LIB_CHECKS" = 0 ]; then
    echo "FAILED: no checks ran"
    exit 1
  fi
  echo "OK: all $LIB_CHECKS checks passed"
  exit 0
}
