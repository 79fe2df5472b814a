#!/usr/bin/env bash
# `moebench train` through the real binary:
#  - 1, 2 and 4 ranks that see the same global batch and route the same tokens (dropless,
#    no aux loss, so routing does not depend on how tokens are grouped) give the same loss
#    curve within 1e-5 (measured: 2.4e-7);
#  - a short run on the built-in corpus gets below 4.0 bits/byte on validation, with a learned
#    router and with hash routing: the corpus' byte-unigram entropy is 4.46 bits, so a model
#    under 4.0 uses context (80 steps reach ~3.4-3.7); and the training loss falls;
#  - the trace has every group with the documented shapes;
#  - BPE data trains, and bits per byte go through its tokenizer model's bytes per token;
#  - bad input gets one clear message and exit status 2.
#
# usage: bash tests/cli/train_run.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail
moebench=$1
mpirun=$2
python=${MOEBENCH_PYTHON:-/usr/bin/python3}
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=tests/cli/lib.bash
source "$here/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tiny=(--d-model 32 --layers 2 --heads 2 --experts 4 --top-k 2 --capacity-factor 0 --balance none
      --seq-len 32 --steps 8 --lr 1e-3 --warmup 2 --eval-every 100 --eval-batches 1)
for np in 1 2 4; do
  expect_success "final validation" -- \
    "$mpirun" -np $np "$moebench" train "${tiny[@]}" --batch-size $((4 / np)) --out "$work/p$np.h5"
done
expect_success "same curve" -- "$python" -c "
import h5py, numpy as np
curves = [h5py.File('$work/p%d.h5' % n)['train/loss'][...] for n in (1, 2, 4)]
assert len(curves[0]) == 8
for c in curves[1:]:
    assert np.abs(c - curves[0]).max() <= 1e-5, np.abs(c - curves[0]).max()
print('same curve', np.abs(curves[2] - curves[0]).max())
"
expect_success "train trace OK" -- "$python" "$here/check_train_trace.py" "$work/p4.h5" 4 8 2 4

short_run=(--d-model 64 --layers 2 --heads 4 --experts 4 --top-k 2 --seq-len 64 --batch-size 8
       --steps 80 --lr 3e-3 --warmup 10 --eval-every 40 --eval-batches 4 --log-every 40)
for router in softk hash; do
  expect_success "final validation" -- \
    "$mpirun" -np 2 "$moebench" train "${short_run[@]}" --router "$router" --out "$work/$router.h5"
  expect_success "learned" -- "$python" -c "
import h5py
f = h5py.File('$work/$router.h5')
loss, bpb = f['train/loss'][...], f['eval/bpb'][...]
assert bpb[-1] < 4.0, bpb
assert loss[-5:].mean() < loss[:5].mean() - 1.5, (loss[:5], loss[-5:])
print('learned', bpb[-1])
"
done

# BPE data (SentencePiece, vocabulary 600): bits per byte use the model written beside the
# shard; a model of another vocabulary, or none, is refused.
"$moebench" data --tokenizer bpe --vocab-size 600 --corpus-bytes 300000 --out "$work/bpe.bin" >/dev/null
"$moebench" data --tokenizer bpe --vocab-size 500 --corpus-bytes 300000 --out "$work/bpe500.bin" >/dev/null
expect_success "data: .*bpe.bin \(vocabulary 600\)" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --batch-size 2 --data "$work/bpe.bin" --out "$work/bpe.h5"
expect_success "train trace OK" -- "$python" "$here/check_train_trace.py" "$work/bpe.h5" 2 8 2 4 bpe
expect_failure "tokenizer model '$work/bpe500.model' has a vocabulary of 500 but '$work/bpe.bin' holds 600" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --batch-size 2 --data "$work/bpe.bin" \
  --tokenizer-model "$work/bpe500.model" --out "$work/x.h5"
expect_failure "--tokenizer-model goes with the BPE shard it wrote \\(--data\\); the built-in corpus is byte-level" --status 2 -- \
  "$moebench" train "${tiny[@]}" --batch-size 2 --tokenizer-model "$work/bpe.model" --out "$work/x.h5"
rm "$work/bpe.model"
expect_failure "'$work/bpe.bin' holds tokens of a vocabulary of 600; bits per byte needs the tokenizer model" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --batch-size 2 --data "$work/bpe.bin" --out "$work/x.h5"

# Bad input: one clear message, status 2.
printf '' >"$work/empty.txt"
expect_failure "--data: '[^']*none.txt' does not exist; check the path" -- \
  "$mpirun" -np 2 "$moebench" train --data "$work/none.txt" --out "$work/x.h5"
expect_failure "is empty; pass a file with some text" -- "$mpirun" -np 2 "$moebench" train --data "$work/empty.txt" --out "$work/x.h5"
printf 'a short text\n' >"$work/short.txt"
expect_failure "--seq-len 128 \(\+1 target token\) is longer than the training split" -- \
  "$mpirun" -np 2 "$moebench" train --data "$work/short.txt" --out "$work/x.h5"
expect_failure "--d-model 30 is not divisible by --heads 4" -- \
  "$moebench" train --d-model 30 --out "$work/x.h5"
expect_failure "--experts 6 is not divisible by the 4 ranks" -- \
  "$mpirun" -np 4 "$moebench" train --experts 6 --steps 1 --out "$work/x.h5"
expect_failure "--top-k 9 exceeds --experts 8" -- "$moebench" train --top-k 9 --out "$work/x.h5"
expect_failure "cannot write trace '$work/nodir/x.h5'" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --batch-size 1 --out "$work/nodir/x.h5"
expect_failure "--expert-precision: unknown value 'fp16' \\(accepted: fp32, bf16\\)" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --expert-precision fp16 --out "$work/fp16.h5"
expect_failure "--expert-precision bf16 needs --backend cuda \\(the CPU experts compute in fp32\\)" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --expert-precision bf16 --out "$work/bf16.h5"
expect_failure "--backend: unknown value 'tpu' \\(accepted: cpu, cuda\\)" -- \
  "$mpirun" -np 2 "$moebench" train "${tiny[@]}" --backend tpu --out "$work/tpu.h5"
expect_cuda_backend_refusals "$mpirun" "$work/cuda" -- "$moebench" train "${tiny[@]}"
if [ -z "$(find "$work" -name 'tpu.h5' -o -name 'cuda*.h5' -o -name 'bf16.h5' -o -name 'fp16.h5')" ]; then
  _lib_pass "failed --backend runs leave no trace"
else
  _lib_fail "failed --backend runs leave no trace" "$(find "$work" -name 'cuda*.h5')"
fi
finish
