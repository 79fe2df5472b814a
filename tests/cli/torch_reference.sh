#!/usr/bin/env bash
# The C++ MoE transformer against a PyTorch reference (llm.c style): for each case,
# export_model_case writes the tiny model's weights, tokens, routing plans, logits, losses and
# every gradient; tests/model/torch_reference.py rebuilds the model in PyTorch (float32,
# autograd) with the same weights and the C++ routing selection and compares logits, loss,
# router losses and every gradient (dense, router, expert) within its stated tolerance.
# Cases cover every router, the three router architectures, aux and z-loss, softk with and
# without renormalisation after dropping, and capacities that drop assignments; the model
# has MoE blocks 0 and 2 and a dense block 1. Two injected mistakes must make it fail.
#
# usage: bash tests/cli/torch_reference.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
# Needs Debian's python3-torch (launch/setup.sh); export_model_case is built with the tests
# next to the binary (<build>/tests/export_model_case; MOEBENCH_EXPORT_MODEL_CASE overrides).
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
reference="$here/../model/torch_reference.py"
export_case=${MOEBENCH_EXPORT_MODEL_CASE:-$(dirname "$moebench")/tests/export_model_case}
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$LIB_OUTPUT_FILE"' EXIT

if [ ! -x "$export_case" ]; then
  _lib_fail "export_model_case is built" \
    "not found at $export_case (build the target export_model_case, or set MOEBENCH_EXPORT_MODEL_CASE)"
  finish
fi
if ! "$python" -c "import torch" >/dev/null 2>&1; then
  _lib_fail "PyTorch is importable by $python" \
    "install Debian's python3-torch (launch/setup.sh lists it), or set MOEBENCH_PYTHON"
  finish
fi

# name | export_model_case options
cases=(
  "softk_hadamard|--router softk --router-arch mlp_hadamard --top-k 2 --capacity-factor 0.75 --temperature 0.7"
  "softk_renorm_prob|--router softk --router-arch linear --top-k 2 --capacity-factor 0.75 --renorm-after-drop 1 --drop-policy prob"
  "expert_choice_mlp|--router expert_choice --router-arch mlp --top-k 2 --capacity-factor 1.0"
  "top1_hadamard|--router top1 --router-arch mlp_hadamard --top-k 1 --capacity-factor 0.75"
  "top1_hard_gates|--router top1 --router-arch linear --top-k 1 --capacity-factor 0.75 --hard-gates 1"
  "topk_hard_mlp|--router topk_hard --router-arch mlp --top-k 2 --capacity-factor 0.75"
  "hash|--router hash --top-k 2 --capacity-factor 0.75"
)
for entry in "${cases[@]}"; do
  name=${entry%%|*}
  read -r -a options <<<"${entry#*|}"
  expect_success -- "$mpirun" -np 1 "$export_case" "$work/$name.bin" "${options[@]}" || continue
  if expect_success "^torch_reference OK$" -- "$python" "$reference" "$work/$name.bin"; then
    grep -E "largest max_abs" <<<"$LAST_OUTPUT" | sed "s/^ */      $name: /"
  fi
done

# The comparison is not vacuous: the exact GELU in PyTorch instead of the tanh form, or one
# C++ gradient element off by 1 %, must fail it.
for fault in exact-gelu grad; do
  expect_failure "^torch_reference FAILED" --status 1 -- \
    "$python" "$reference" "$work/softk_hadamard.bin" --fault "$fault"
done

finish
