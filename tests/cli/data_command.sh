#!/usr/bin/env bash
# `moebench data` through the real binary: shards of the built-in corpus and of a text file
# with the right header and tokens, determinism, and bad input (one clear message, exit 2 on
# every rank, no hang, no shard or temporary file left behind), on one process and under MPI.
#
# usage: bash tests/cli/data_command.sh MOEBENCH_BINARY LAUNCH_MPIRUN_SH
set -uo pipefail  # no -e: every check runs and reports, finish gives the verdict
if [ $# -ne 2 ]; then
  echo "usage: $0 MOEBENCH_BINARY LAUNCH_MPIRUN_SH" >&2
  exit 2
fi
moebench=$1
mpirun=$2
# shellcheck source=tests/cli/lib.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"
work=$(mktemp -d)
trap 'rm -rf "$work"; rm -f "$LIB_OUTPUT_FILE"' EXIT

# check_shard NAME SHARD MIN_TOKENS MAX_TOKENS [TEXT_FILE]: the header is a version-1,
# width-1, vocabulary-256 shard whose count matches the file size and lies in the range; with
# TEXT_FILE, the tokens are exactly that file's bytes.
check_shard() {
  local name=$1 shard=$2 low=$3 high=$4 text=${5:-}
  local verdict
  verdict=$(python3 - "$shard" "$low" "$high" "$text" <<'EOF'
import struct, sys
shard, low, high, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(shard, "rb").read()
magic, version, width, count, vocab, reserved = struct.unpack("<8sIIQII", data[:32])
problems = []
if magic != b"MOETOK\0\0": problems.append(f"magic {magic!r}")
if version != 1: problems.append(f"version {version}")
if width != 1: problems.append(f"width {width}")
if vocab != 256: problems.append(f"vocab {vocab}")
if reserved != 0: problems.append(f"reserved {reserved}")
if len(data) != 32 + count * width: problems.append(f"{len(data)} bytes for {count} tokens")
if not low <= count <= high: problems.append(f"count {count} outside [{low}, {high}]")
if text and data[32:] != open(text, "rb").read(): problems.append("tokens differ from the text")
if not text and (b"\n\n" not in data[32:] or b'"' not in data[32:]): problems.append("no stories")
print("ok" if not problems else "; ".join(problems))
EOF
)
  if [ "$verdict" = ok ]; then
    _lib_pass "$name"
  else
    _lib_fail "$name" "$verdict"
  fi
}

summary='^moebench data: wrote [0-9]+ tokens'

# The built-in corpus: default size (~2 MB), a small one, determinism per seed.
expect_success "$summary \\([0-9]+ bytes, byte tokenizer, vocab 256, 1.000 text bytes/token\\) from the built-in story corpus \\(seed 1\\) to '$work/default.bin'" -- \
  "$moebench" data --out "$work/default.bin"
check_shard "default built-in shard: header and ~2 MB of stories" "$work/default.bin" 2000000 2200000
expect_success "$summary" -- "$moebench" data --out "$work/small.bin" --corpus-bytes 50000 --seed 7
check_shard "50 KB built-in shard" "$work/small.bin" 50000 55000
expect_success "$summary" -- "$moebench" data --out "$work/small2.bin" --corpus-bytes 50000 --seed 7
expect_success "$summary" -- "$moebench" data --out "$work/other.bin" --corpus-bytes 50000 --seed 8
if cmp -s "$work/small.bin" "$work/small2.bin" && ! cmp -s "$work/small.bin" "$work/other.bin"; then
  _lib_pass "same seed gives the same shard, another seed another one"
else
  _lib_fail "same seed gives the same shard, another seed another one" "cmp disagrees"
fi

# A text file with a TinyStories separator and UTF-8: the tokens are its bytes, verbatim.
printf 'Once upon a time, a cat sat.\n<|endoftext|>\nThe caf\xc3\xa9 was open. "Hi!" said Tom.\n' \
  >"$work/small.txt"
expect_success "$summary \\(1[0-9]+ bytes.* from '$work/small.txt' to '$work/text.bin'" -- \
  "$moebench" data --input "$work/small.txt" --out "$work/text.bin"
check_shard "text shard holds the file's bytes" "$work/text.bin" 1 1000 "$work/small.txt"

# Under MPI: rank 0 writes, the summary is printed once.
expect_success "$summary" -- "$mpirun" -np 2 "$moebench" data --input "$work/small.txt" \
  --out "$work/mpi.bin"
check_shard "text shard written under mpirun -np 2" "$work/mpi.bin" 1 1000 "$work/small.txt"
expect_success '^usage: moebench data' -- "$moebench" data --help

# BPE: a SentencePiece model trained on the text, written beside a width-2 shard of its
# vocabulary; more than one text byte per token; the same seed gives the same files.
bpe_summary="$summary \\([0-9]+ bytes, bpe tokenizer, vocab (300|400), (1\\.[5-9]|[2-9]\\.)[0-9]* text bytes/token\\)"
expect_success "$bpe_summary from the built-in story corpus \\(seed 1\\) to '$work/bpe.bin'" -- \
  "$moebench" data --tokenizer bpe --vocab-size 400 --corpus-bytes 100000 --out "$work/bpe.bin"
expect_success "$bpe_summary from '$work/small.txt' to '$work/bpe-text.bin'" -- \
  "$moebench" data --tokenizer bpe --vocab-size 300 --input "$work/small.txt" \
  --out "$work/bpe-text.bin" --tokenizer-model "$work/text-tokenizer.model"
"$moebench" data --tokenizer bpe --vocab-size 400 --corpus-bytes 100000 --out "$work/bpe2.bin" >/dev/null 2>&1
bpe_verdict=$(/usr/bin/python3 -c '
import struct, sys
data = open(sys.argv[1], "rb").read()
magic, version, width, count, vocab, reserved = struct.unpack("<8sIIQII", data[:32])
tokens = struct.unpack(f"<{count}H", data[32:])
problems = []
if (magic, version, width, vocab) != (b"MOETOK\0\0", 1, 2, 400): problems.append(f"header {magic!r} {version} {width} {vocab}")
if not 20000 < count < 70000: problems.append(f"count {count} for 100 KB of text")
if max(tokens) >= 400 or len(set(tokens)) < 100: problems.append(f"ids: max {max(tokens)}, {len(set(tokens))} distinct")
print("ok" if not problems else "; ".join(problems))' "$work/bpe.bin")
if [ "$bpe_verdict" = ok ] && [ -s "$work/bpe.model" ] && [ -s "$work/text-tokenizer.model" ]; then
  _lib_pass "BPE shard header, ids and tokenizer models"
else
  _lib_fail "BPE shard header, ids and tokenizer models" "$bpe_verdict; $(ls "$work")"
fi
if cmp -s "$work/bpe.bin" "$work/bpe2.bin" && cmp -s "$work/bpe.model" "$work/bpe2.model"; then
  _lib_pass "BPE: the same text and seed give the same model and shard"
else
  _lib_fail "BPE: the same text and seed give the same model and shard" "cmp disagrees"
fi
rm -f "$work"/*.model

# Bad input: one message, exit status 2.
: >"$work/empty.txt"
rm -f "$work"/*.bin
bad_cases=(
  "option '--out' is required|--input $work/small.txt"
  "--input: '$work/none.txt' does not exist; check the path|--input $work/none.txt --out $work/a.bin"
  "--input: '$work/empty.txt' is empty|--input $work/empty.txt --out $work/b.bin"
  "--input: '$work' is a directory|--input $work --out $work/c.bin"
  "--tokenizer bpe needs --vocab-size N|--tokenizer bpe --out $work/d.bin"
  "--vocab-size and --tokenizer-model apply to --tokenizer bpe only|--vocab-size 300 --out $work/d.bin"
  "--vocab-size 100: SentencePiece could not train a BPE model on this text: .*Vocabulary size is smaller than required_chars|--tokenizer bpe --vocab-size 100 --corpus-bytes 20000 --out $work/d.bin"
  "--vocab-size 60000: SentencePiece could not train a BPE model on this text: .*Vocabulary size too high .*Please set it to a value <= [0-9]+|--tokenizer bpe --vocab-size 60000 --corpus-bytes 20000 --out $work/d.bin"
  "--tokenizer-model must be a path other than --out|--tokenizer bpe --vocab-size 400 --out $work/d.bin --tokenizer-model $work/d.bin"
  "--tokenizer-model: cannot write the tokenizer model '$work/missing/d.model'|--tokenizer bpe --vocab-size 400 --corpus-bytes 20000 --out $work/d.bin --tokenizer-model $work/missing/d.model"
  "--tokenizer: unknown value 'words'|--tokenizer words --out $work/e.bin"
  "unknown option '--bogus'; run 'moebench data --help'|--bogus --out $work/f.bin"
  "cannot write token shard '$work/missing/g.bin': directory '$work/missing' does not exist|--out $work/missing/g.bin --corpus-bytes 1000"
  "cannot write token shard '$work': it is a directory|--out $work --corpus-bytes 1000"
  "--corpus-bytes sets the size of the built-in corpus and does nothing with --input|--input $work/small.txt --corpus-bytes 10 --out $work/h.bin"
  "--corpus-bytes must be >= 1|--corpus-bytes 0 --out $work/i.bin"
)
for entry in "${bad_cases[@]}"; do
  regex=${entry%%|*}
  read -r -a args <<<"${entry#*|}"
  expect_failure "$regex" --status 2 -- "$moebench" data "${args[@]}"
  expect_failure "$regex" -- "$mpirun" -np 2 "$moebench" data "${args[@]}"
done

# A shard given as --input (it would be tokenized as bytes).
"$moebench" data --out "$work/shard.bin" --corpus-bytes 1000 >/dev/null 2>&1
expect_failure "--input: '$work/shard.bin' is already a token shard" --status 2 -- \
  "$moebench" data --input "$work/shard.bin" --out "$work/j.bin"
rm -f "$work/shard.bin"

# Every rank exits with status 2 when rank 0 finds the input missing.
expect_every_rank_exits 2 2 "$mpirun" -- "$moebench" data --input "$work/none.txt" --out "$work/k.bin"

# Nothing was left behind by the failed runs: no shard, no temporary file.
leftover=$(find "$work" -name '*.bin' -o -name '*.tmp' -o -name '*.model' | wc -l)
if [ "$leftover" = 0 ]; then
  _lib_pass "failed runs leave no shard or temporary file"
else
  _lib_fail "failed runs leave no shard or temporary file" "found: $(find "$work" -name '*.bin' -o -name '*.tmp' -o -name '*.model')"
fi

finish
