# Shared code of the experiment drivers (launch/experiment_*.sh). Sourced, not run.
#
# A driver sets EXP_NAME and EXP_ABOUT, calls `exp_init "$@"` (common arguments, paths, the
# results directory), sets EXP_BASE to its options for the mode ($EXP_MODE), plans its runs
# with `exp_add NAME KIND OPTION...` (KIND: train, capacity or alltoall) and ends with
# `exp_main`, which runs them one after another, then `moebench analyze`,
# analysis/figures.py and analysis/report.py on the results directory.
#
# Modes: --full (the study's setting, default), --quick (minutes on a 2-core machine: fewer
# steps, a smaller model), --tiny (seconds per run: the CI smoke test). A driver picks its
# options per mode from $EXP_MODE; the shared model shrinks for training runs are
# EXP_QUICK_TRAIN and EXP_TINY_TRAIN below.
#
# Environment (all optional):
#   NP=4                 ranks per run (launch/mpirun.sh -np NP)
#   OUT=results/NAME     results directory
#   MOEBENCH=build/moebench   the binary
#   STEPS=N              override the training steps of every training run
#   LAUNCHER="..."       launch command prefix instead of `launch/mpirun.sh -np NP`
#                        (e.g. `srun --mpi=pmix`; launch/slurm/train.sbatch sets it)
#   FIGURE_FORMATS=png,svg    formats of analysis/figures.py
#   PYTHON=/usr/bin/python3   the Python with h5py, numpy and matplotlib
#   MOEBENCH_MPIRUN_FLAGS     extra mpirun flags, passed on by launch/mpirun.sh (a hostfile)

# shellcheck disable=SC2034  # EXP_QUICK_TRAIN, EXP_TINY_TRAIN are for the drivers
# The shared model shrinks of the training experiments (on top of their config file).
# --quick: d = 64, 2 heads, 64-token sequences, 4 per rank, 200 steps (~20 s a run at 4
# ranks on 2 cores); --tiny: d = 32, 32-token sequences, 2 per rank, 10 steps.
EXP_QUICK_TRAIN=(--d-model 64 --heads 2 --seq-len 64 --batch-size 4 --steps 200 --warmup 20
                 --eval-every 50 --eval-batches 4 --log-every 50 --trace-flush 50)
EXP_TINY_TRAIN=(--d-model 32 --heads 2 --seq-len 32 --batch-size 2 --steps 10 --warmup 2
                --eval-every 5 --eval-batches 1 --log-every 5 --trace-flush 5 --router-hidden 16)

EXP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EXP_MODE=full
EXP_RESUME=0
EXP_DRY_RUN=0
EXP_EXTRA=()        # options after `--`: given to every run
EXP_RUN_NAMES=()    # the planned runs, in order
EXP_RUN_KINDS=()
EXP_RUN_ARGS=()     # each run's options, quoted with printf %q
EXP_BASE=()         # the driver's options for the mode, before every run's own

exp_die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

exp_usage() {
  cat <<EOF
usage: $(basename "$0") [--quick | --tiny | --full] [--resume] [--dry-run] [-- OPTION...]

$EXP_ABOUT

  --full      the study's setting (default)
  --quick     minutes on a 2-core machine: fewer steps, a smaller model
  --tiny      a few seconds per run (the CI smoke test)
  --resume    keep the complete traces in OUT whose command line is the one this run would
              use, and run only the others (default: start OUT afresh)
  --dry-run   print the commands and exit
  -- OPTION...  extra moebench options given to every run (after the mode's, before the
              run's own, so the options the sweep varies still win)

Writes OUT (default results/$EXP_NAME): one trace per run (*.h5, with the CSV the benchmarks
write beside it), logs/ (each command's output), commands.sh (every command as run, with its
time), summary/summary.{csv,md} (moebench analyze), figures/ (analysis/figures.py) and
report.md + report.html (analysis/report.py).

Environment: NP (ranks, default 4), OUT, MOEBENCH (binary, default build/moebench), STEPS
(training steps of every training run), LAUNCHER (instead of launch/mpirun.sh -np NP, e.g.
"srun --mpi=pmix"), FIGURE_FORMATS (default png,svg), PYTHON (default /usr/bin/python3).
EOF
}

# exp_abs PATH: PATH made absolute against the caller's directory (before the cd to the root).
exp_abs() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$EXP_CALLER_DIR/$1" ;;
  esac
}

# exp_rel PATH: PATH relative to the repository root when it lies inside it, else absolute.
exp_rel() {
  realpath -m --relative-base="$EXP_ROOT" "$1"
}

exp_init() {
  [ -n "${EXP_NAME:-}" ] || exp_die "the driver did not set EXP_NAME"
  while [ $# -gt 0 ]; do
    case $1 in
      --full) EXP_MODE=full ;;
      --quick) EXP_MODE=quick ;;
      --tiny) EXP_MODE=tiny ;;
      --resume) EXP_RESUME=1 ;;
      --dry-run) EXP_DRY_RUN=1 ;;
      -h|--help) exp_usage; exit 0 ;;
      --) shift; EXP_EXTRA=("$@"); break ;;
      *) exp_die "unknown argument '$1' (moebench options go after --; see --help)" ;;
    esac
    shift
  done

  EXP_CALLER_DIR=$(pwd)
  NP=${NP:-4}
  [[ $NP =~ ^[1-9][0-9]*$ ]] || exp_die "NP='$NP' is not a rank count (a positive integer)"
  if [ -n "${STEPS:-}" ] && ! [[ $STEPS =~ ^[1-9][0-9]*$ ]]; then
    exp_die "STEPS='$STEPS' is not a step count (a positive integer)"
  fi
  PYTHON=${PYTHON:-/usr/bin/python3}
  FIGURE_FORMATS=${FIGURE_FORMATS:-png,svg}
  EXP_BIN=$(exp_abs "${MOEBENCH:-$EXP_ROOT/build/moebench}")
  EXP_OUT=$(exp_abs "${OUT:-$EXP_ROOT/results/$EXP_NAME}")
  EXP_OUT=$(realpath -m "$EXP_OUT")
  cd "$EXP_ROOT"
  # What the commands say: paths relative to the repository root where they can be.
  EXP_BIN_REL=$(exp_rel "$EXP_BIN")
  EXP_OUT_REL=$(exp_rel "$EXP_OUT")
  if [ -n "${LAUNCHER:-}" ]; then
    read -r -a EXP_LAUNCH <<<"$LAUNCHER"
  else
    EXP_LAUNCH=(launch/mpirun.sh -np "$NP")
  fi
  [ "$EXP_DRY_RUN" = 1 ] && return 0

  [ -x "$EXP_BIN" ] || exp_die "no moebench binary at $EXP_BIN: build it (launch/build.sh) or set MOEBENCH=PATH"
  "$PYTHON" -c "import h5py, matplotlib, numpy" 2>/dev/null ||
    exp_die "$PYTHON lacks h5py, numpy or matplotlib: run launch/setup.sh or set PYTHON=..."
  exp_prepare_out
  exp_header
}

# The results directory: a fresh one, or one that a driver wrote before (the marker file
# .moebench-experiment), whose outputs are replaced. Anything else is left alone.
exp_prepare_out() {
  local marker=$EXP_OUT/.moebench-experiment
  if [ -e "$EXP_OUT" ] && [ ! -d "$EXP_OUT" ]; then
    exp_die "OUT=$EXP_OUT exists and is not a directory"
  fi
  if [ -d "$EXP_OUT" ] && [ -n "$(ls -A "$EXP_OUT")" ] && [ ! -f "$marker" ]; then
    exp_die "OUT=$EXP_OUT is not empty and was not written by an experiment driver; choose another OUT or empty it"
  fi
  if [ -f "$marker" ] && ! grep -qx "experiment $EXP_NAME" "$marker"; then
    exp_die "OUT=$EXP_OUT holds the results of another experiment ($(head -n 1 "$marker")); choose another OUT"
  fi
  mkdir -p "$EXP_OUT"
  # Only what a driver writes. The summary, figures and report are always made anew; the
  # traces (with the CSVs beside them) and logs are kept by --resume.
  rm -rf "$EXP_OUT/summary" "$EXP_OUT/figures" "$EXP_OUT/report.md" "$EXP_OUT/report.html"
  if [ "$EXP_RESUME" = 0 ]; then
    find "$EXP_OUT" -maxdepth 1 -type f \( -name '*.h5' -o -name '*.csv' -o -name '*.csv.partial' \
      -o -name 'commands.sh' \) -delete
    rm -rf "$EXP_OUT/logs"
  fi
  mkdir -p "$EXP_OUT/logs"
  printf 'experiment %s\nmode %s\n' "$EXP_NAME" "$EXP_MODE" >"$marker"
}

# exp_merge OPTION...: sets EXP_MERGED to the options with later occurrences of an option
# replacing earlier ones in place. `--name value` pairs and bare `--flag`s; a value never
# starts with `--`.
exp_merge() {
  local -a keys=()
  local -A values=() present=()
  local key
  while [ $# -gt 0 ]; do
    key=$1
    [[ $key == --* ]] || exp_die "'$key' is not a moebench option (options are --name value or --flag)"
    shift
    if [ -z "${present[$key]:-}" ]; then
      keys+=("$key")
      present[$key]=1
    fi
    if [ $# -gt 0 ] && [[ $1 != --* ]]; then
      values[$key]=$1
      shift
    else
      unset "values[$key]"
    fi
  done
  EXP_MERGED=()
  for key in "${keys[@]}"; do
    EXP_MERGED+=("$key")
    if [ -n "${values[$key]+set}" ]; then
      EXP_MERGED+=("${values[$key]}")
    fi
  done
}

# exp_add NAME KIND OPTION...: plans one run writing $OUT/NAME.h5. KIND: train, capacity or
# alltoall. Its options: EXP_BASE (the driver's options for the mode), STEPS (training runs),
# the extra options after `--`, then OPTION... (the run's own); a later option replaces an
# earlier one of the same name.
exp_add() {
  local name=$1 kind=$2
  shift 2
  case $kind in
    train|capacity|alltoall) ;;
    *) exp_die "internal: unknown run kind '$kind'" ;;
  esac
  [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || exp_die "internal: run name '$name'"
  local -a options=("${EXP_BASE[@]}")
  if [ "$kind" = train ] && [ -n "${STEPS:-}" ]; then
    options+=(--steps "$STEPS")
  fi
  options+=("${EXP_EXTRA[@]}" "$@" --out "$EXP_OUT_REL/$name.h5")
  exp_merge "${options[@]}"
  EXP_RUN_NAMES+=("$name")
  EXP_RUN_KINDS+=("$kind")
  EXP_RUN_ARGS+=("$(printf '%q ' "${EXP_MERGED[@]}")")
}

# exp_quote WORD...: the words as a shell command line; quoted only where needed (printf %q
# would also escape the commas of `--top-k 1,2`).
exp_quote() {
  local word line=""
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
      line+="$word "
    else
      line+="$(printf '%q' "$word") "
    fi
  done
  printf '%s' "${line% }"
}

# exp_record COMMAND...: appends the command to commands.sh (not yet its time).
exp_record() {
  printf '%s' "$(exp_quote "$@")" >>"$EXP_OUT/commands.sh"
}

# exp_step LOG COMMAND...: runs COMMAND with its output in logs/LOG.log and its line and time
# in commands.sh; on failure prints the end of the log and exits.
exp_step() {
  local log=$EXP_OUT/logs/$1.log start status
  shift
  printf '%s' "${EXP_RECORD_PREFIX:-}" >>"$EXP_OUT/commands.sh"
  exp_record "$@"
  printf '%s' "${EXP_RECORD_SUFFIX:-}" >>"$EXP_OUT/commands.sh"
  start=$SECONDS
  set +e
  "$@" >"$log" 2>&1 </dev/null
  status=$?
  set -e
  EXP_STEP_SECONDS=$((SECONDS - start))
  printf '  # %d s\n' "$EXP_STEP_SECONDS" >>"$EXP_OUT/commands.sh"
  if [ $status != 0 ]; then
    echo "$(basename "$0"): error: this command failed with exit status $status:" >&2
    echo "  $(exp_quote "$@")" >&2
    echo "last lines of $(exp_rel "$log"):" >&2
    tail -n 20 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
}

# exp_prepare LOG COMMAND...: a preparation step before the runs (e.g. a data shard).
exp_prepare() {
  if [ "$EXP_DRY_RUN" = 1 ]; then
    exp_quote "${@:2}"
    echo
    return 0
  fi
  echo "== $1: $(exp_quote "${@:2}")"
  exp_step "$@"
}

# One line of what a finished run reached, from its log.
exp_outcome() {
  local log=$1 kind=$2 line
  case $kind in
    train)
      line=$(grep -E '^# final validation' "$log" | tail -n 1 | sed 's/^# final validation: //')
      local speed
      speed=$(grep -oE '\([0-9.]+ tokens/s' "$log" | tail -n 1 | tr -d '(')
      echo "$line${speed:+, $speed}" ;;
    *) grep -E '^# Wrong (tokens|elements):' "$log" | tail -n 1 | sed 's/^# //' ;;
  esac
}

exp_header() {
  local revision
  revision=$(git -C "$EXP_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ "$revision" != unknown ] && [ -n "$(git -C "$EXP_ROOT" status --porcelain -- src include 2>/dev/null)" ]; then
    revision="$revision (with uncommitted changes in src/ or include/)"
  fi
  {
    echo "#!/usr/bin/env bash"
    echo "# $EXP_NAME experiment, --$EXP_MODE: the commands launch/$(basename "$0") ran, from the"
    echo "# repository root, each followed by its wall time."
    echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  cores (nproc): $(nproc)"
    echo "# $(uname -srm); git revision $revision"
    echo "# ranks: ${LAUNCHER:-launch/mpirun.sh -np $NP}; OMP_NUM_THREADS=${OMP_NUM_THREADS:-1 (launch/mpirun.sh default)}"
    echo "set -euo pipefail"
  } >"$EXP_OUT/commands.sh"
}

# exp_main: runs every planned run, then analyze, figures and the report.
exp_main() {
  local total=${#EXP_RUN_NAMES[@]} i name kind status
  local -a args
  [ "$total" -gt 0 ] || exp_die "internal: no runs planned"
  if [ "$EXP_DRY_RUN" = 1 ]; then
    for ((i = 0; i < total; i++)); do
      eval "args=(${EXP_RUN_ARGS[$i]})"
      exp_quote "${EXP_LAUNCH[@]}" "$EXP_BIN_REL" "${EXP_RUN_KINDS[$i]}" "${args[@]}"
      echo
    done
    echo "# then: moebench analyze, analysis/figures.py and analysis/report.py on $EXP_OUT_REL ($total runs, --$EXP_MODE)"
    return 0
  fi
  local begin=$SECONDS
  echo "== $EXP_NAME (--$EXP_MODE): $total runs, ${LAUNCHER:-$NP ranks}, into $EXP_OUT_REL"
  local -a traces=()
  for ((i = 0; i < total; i++)); do
    name=${EXP_RUN_NAMES[$i]}
    kind=${EXP_RUN_KINDS[$i]}
    eval "args=(${EXP_RUN_ARGS[$i]})"
    traces+=("$name.h5")
    local -a command=("${EXP_LAUNCH[@]}" "$EXP_BIN_REL" "$kind" "${args[@]}")
    local label
    label=$(printf '[%*d/%d] %-28s' "${#total}" $((i + 1)) "$total" "$name")
    if [ "$EXP_RESUME" = 1 ]; then
      status=$("$PYTHON" "$EXP_ROOT/launch/lib/trace_status.py" "$EXP_OUT/$name.h5")
      if [ "$status" = "complete moebench $kind ${args[*]}" ]; then
        echo "$label kept (complete trace of the same command)"
        printf '# kept from an earlier run: ' >>"$EXP_OUT/commands.sh"
        exp_record "${command[@]}"
        printf '\n' >>"$EXP_OUT/commands.sh"
        continue
      fi
    fi
    printf '%s ' "$label"
    exp_step "$name" "${command[@]}"
    echo "$(printf '%4d s' "$EXP_STEP_SECONDS")  $(exp_outcome "$EXP_OUT/logs/$name.log" "$kind")"
  done

  # The summary table, with trace paths relative to OUT (the report finds them there).
  local bin_from_out=$EXP_BIN
  if [[ $EXP_OUT_REL != /* && $EXP_BIN_REL != /* ]]; then
    bin_from_out=$(realpath -m --relative-to="$EXP_OUT" "$EXP_BIN")
  fi
  EXP_RECORD_PREFIX="(cd $(exp_quote "$EXP_OUT_REL") && " EXP_RECORD_SUFFIX=")"
  (cd "$EXP_OUT" && exp_step analyze "$bin_from_out" analyze "${traces[@]}" --out-dir summary)
  EXP_RECORD_PREFIX="" EXP_RECORD_SUFFIX=""
  exp_step figures "$PYTHON" analysis/figures.py "$EXP_OUT_REL" --format "$FIGURE_FORMATS"
  exp_step report "$PYTHON" analysis/report.py "$EXP_OUT_REL" --summary "$EXP_OUT_REL/summary/summary.csv" \
    --figures "$EXP_OUT_REL/figures" --moebench "$EXP_BIN_REL"
  local elapsed=$((SECONDS - begin))
  echo "== $EXP_NAME (--$EXP_MODE): $total runs, analyze, figures and report in $((elapsed / 60)) min $((elapsed % 60)) s"
  echo "   summary: $EXP_OUT_REL/summary/summary.csv  figures: $EXP_OUT_REL/figures/  report: $EXP_OUT_REL/report.md"
}
