#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) in build-fuzz/ and runs each
# on a seed corpus made from the shipped configs, docs, test sources and a
# checkpoint written by seqmix itself.
#
#   scripts/fuzz.sh                 30 seconds per target (what scripts/test.sh runs)
#   scripts/fuzz.sh --seconds 600   a longer bounded run
#   scripts/fuzz.sh --runs 1000000  1,000,000 executions per target (docs/reliability.md)
#   scripts/fuzz.sh --runs 1000000 fuzz_text fuzz_config   only the targets named
#
# Any crash, sanitizer report, leak or timeout fails the script; libFuzzer saves
# the input under build-fuzz/crashes/<target>/, to be turned into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: $0 [--seconds N | --runs N] [TARGET...]"
all=(fuzz_config fuzz_checkpoint fuzz_checkpoint_content fuzz_recall fuzz_text fuzz_token_file)
limit=(-max_total_time=30)
case "${1:-}" in
  --seconds) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; limit=(-max_total_time="$2"); shift 2 ;;
  --runs) [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }; limit=(-runs="$2"); shift 2 ;;
  -*) echo "$usage" >&2; exit 2 ;;
esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  case " ${all[*]} " in
    *" $t "*) ;;
    *) echo "$0: unknown target '$t'; the targets are ${all[*]}" >&2; exit 2 ;;
  esac
done

CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DSEQMIX_FUZZ=ON >/dev/null
cmake --build build-fuzz -j2 --target "${targets[@]}"

seeds=build-fuzz/seeds
rm -rf "$seeds"
mkdir -p "$seeds"/{fuzz_config,fuzz_checkpoint,fuzz_checkpoint_content,fuzz_recall,fuzz_text,fuzz_token_file}
n=0
for f in configs/*/*.yaml; do
  n=$((n + 1))
  cp "$f" "$seeds/fuzz_config/$n.yaml"
  { cat "$f"; printf '#--set\nmodel.d_model=64\ntraining.steps=7\n'; } > "$seeds/fuzz_config/$n-set.yaml"
  # The recall target reads a data: block.
  awk '/^data:/{p=1; print; next} /^[^ #]/{p=0} p' "$f" > "$seeds/fuzz_recall/$n.yaml"
  printf '\x02' | cat - "$f" > "$seeds/fuzz_text/$n-char"
done
for f in docs/*.md tests/test_data_text.cpp tests/test_config.cpp; do
  [ -f "$f" ] || continue
  n=$((n + 1))
  head -c 4000 "$f" | { printf '\x06'; cat; } > "$seeds/fuzz_text/$n-char"
  head -c 4000 "$f" | { printf '\x07'; cat; } > "$seeds/fuzz_text/$n-byte"
done
# Checkpoints: one written by seqmix (with the digest) and, if h5py is there, an
# h5py copy of it (no digest: the child-process path).
if [ -x build/seqmix ]; then
  tmp=$(mktemp -d)
  cat > "$tmp/tiny.yaml" <<'YAML'
model: {vocab_size: 16, d_model: 8, n_layers: 1, mixer: {type: mamba}}
data: {kind: text, path: README.md, tokenizer: byte, seq_len: 8}
training: {steps: 2, batch_size: 2, eval_interval: 2, eval_batches: 1}
schedule: {warmup_steps: 0}
YAML
  sed -i "s|path: README.md|path: $PWD/README.md|; s|vocab_size: 16|vocab_size: 256|" "$tmp/tiny.yaml"
  if build/seqmix train "$tmp/tiny.yaml" --out "$tmp/run" >/dev/null 2>&1; then
    cp "$tmp/run/checkpoint.h5" "$seeds/fuzz_checkpoint/seqmix.h5"
    /usr/bin/python3 - "$tmp/run/checkpoint.h5" "$seeds/fuzz_checkpoint/h5py.h5" <<'PY' || true
import sys, h5py
src = h5py.File(sys.argv[1], 'r')
with h5py.File(sys.argv[2], 'w') as dst:
    for k, v in src.attrs.items(): dst.attrs[k] = v
    for k in src: src.copy(src[k], dst, name=k)
PY
  fi
  rm -rf "$tmp"
fi
printf 'not a checkpoint' > "$seeds/fuzz_checkpoint/text"
# A recipe of zero bytes is a checkpoint as seqmix writes it (fuzz/fuzz_checkpoint_content.cpp).
printf '\0' > "$seeds/fuzz_checkpoint_content/as-written"
# Token files: a nanoGPT .bin and an llm.c shard (header: magic 20240520, version 1, count).
/usr/bin/python3 - "$seeds/fuzz_token_file" <<'PY'
import struct, sys
d = sys.argv[1]
toks = [i * 7 % 50 for i in range(64)]
open(d + '/nanogpt', 'wb').write(bytes([0x11]) + struct.pack('<%dH' % len(toks), *toks))
header = [20240520, 1, len(toks)] + [0] * 253
open(d + '/llmc', 'wb').write(bytes([0x26]) + struct.pack('<256i', *header) + struct.pack('<%dH' % len(toks), *toks))
PY

status=0
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus/$t crashes=build-fuzz/crashes/$t
  mkdir -p "$corpus" "$crashes"
  echo "== $t ${limit[*]}"
  start=$(date +%s)
  # Leaks kept inside HDF5 (its error stack and caches) are HDF5's, as in scripts/test.sh.
  if ! LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp:print_suppressions=0 \
      build-fuzz/$t "$corpus" "$seeds/$t" "${limit[@]}" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 \
      -artifact_prefix="$crashes/" 2> "build-fuzz/$t.log"; then
    status=1
    echo "$t FAILED: see build-fuzz/$t.log and $crashes/" >&2
  fi
  seconds=$(( $(date +%s) - start ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "build-fuzz/$t.log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "build-fuzz/$t.log")
  echo "executions: ${runs:-?}  seconds: $seconds  exec/s: $(( ${runs:-0} / (seconds > 0 ? seconds : 1) ))" \
       " peak RSS: ${rss:-?} MB  corpus: $(ls "$corpus" | wc -l) files" \
       " crashes: $(ls "$crashes" | grep -vc '^slow-unit-')  slow inputs: $(ls "$crashes" | grep -c '^slow-unit-')" \
       " load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
exit $status
