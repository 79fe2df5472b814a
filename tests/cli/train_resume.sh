#!/usr/bin/env bash
# Checkpoint and resume through the real binary: the rest of the loss curve after --resume is
# bitwise identical to an uninterrupted run with the same rank count, and a checkpoint that
# does not fit the run (other options, other rank count, corrupt, missing) is refused with one
# clear message and exit status 2.
#
# usage: bash tests/cli/train_resume.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--d-model 32 --layers 2 --heads 2 --top-k 2 --capacity-factor 1.0 --router softk
     --balance bias --seq-len 32 --batch-size 2 --steps 12 --lr 2e-3 --warmup 3 --eval-every 100
     --eval-batches 1)
run=("${common[@]}" --experts 4)
expect_success "final validation" -- "$mpirun" -np 2 "$moebench" train "${run[@]}" --out "$work/whole.h5"
expect_success "checkpoint: $work/part.ckpt/step_6$" -- \
  "$mpirun" -np 2 "$moebench" train "${run[@]}" --checkpoint-every 6 --out "$work/part.h5"
expect_success "resumed from $work/part.ckpt/step_6 at step 6" -- \
  "$mpirun" -np 2 "$moebench" train "${run[@]}" --resume "$work/part.ckpt/step_6" --out "$work/rest.h5"
expect_success "bitwise" -- "$python" -c "
import h5py
whole, rest = h5py.File('$work/whole.h5'), h5py.File('$work/rest.h5')
assert list(rest['train/step'][...]) == list(range(6, 12)), rest['train/step'][...]
for name in ('train/loss', 'train/grad_norm', 'routing/layer_0/load', 'eval/loss'):
    a, b = whole[name][...], rest[name][...]
    tail = a[6:] if name != 'eval/loss' else a
    assert tail.tobytes() == b.tobytes(), (name, tail, b)
print('bitwise')
"
expect_failure "it was saved with experts=4 but this run has experts=8" -- \
  "$mpirun" -np 2 "$moebench" train "${common[@]}" --experts 8 --resume "$work/part.ckpt/step_6" --out "$work/x.h5"
expect_failure "resume with mpirun -np 2" -- \
  "$mpirun" -np 4 "$moebench" train "${run[@]}" --resume "$work/part.ckpt/step_6" --out "$work/x.h5"
printf 'X' | dd of="$work/part.ckpt/step_6/rank_1.bin" bs=1 seek=100 conv=notrunc 2>/dev/null
expect_failure "checksum" -- \
  "$mpirun" -np 2 "$moebench" train "${run[@]}" --resume "$work/part.ckpt/step_6" --out "$work/x.h5"
expect_failure "$work/none" -- \
  "$mpirun" -np 2 "$moebench" train "${run[@]}" --resume "$work/none" --out "$work/x.h5"
finish
