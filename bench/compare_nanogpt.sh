#!/bin/bash
# nanoGPT's shakespeare_char CPU recipe against seqmix's, back to back on this machine.
#
#   bench/compare_nanogpt.sh NANOGPT_DIR [--seqmix BINARY] [--threads N] [--all-mixers] [--iters N]
#
# NANOGPT_DIR is a checkout of karpathy/nanoGPT (not part of this repository). Its
# shakespeare_char data (train.bin, val.bin, meta.pkl) is prepared from
# /work/shared/data/tinyshakespeare.txt (override with SEQMIX_SHAKESPEARE=path), the
# same file as nanoGPT's input.txt, by the same rules as its prepare.py: sorted
# characters as the vocabulary, the first 90% for training.
#
# The recipe (issue 8): train.py config/train_shakespeare_char.py --device=cpu
# --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
# --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
# --dropout=0.0, against configs/text/shakespeare_char_attention.yaml (the same
# model, optimizer, schedule and evaluation: 250-step intervals, 20 batches).
# Both run with OMP_NUM_THREADS=N (default 2) and Debian's /usr/bin/python3, with
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset. Wall time is the whole process
# (start-up, evaluations and checkpoints included) for both.
#
# Prints both wall times, both final validation losses and the ratio; with
# --all-mixers also the other four mixers' configs on the same recipe, each
# against the attention model's wall time. --iters shortens both runs (smoke test;
# the losses are then not comparable with the 2000-iteration figures).
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
NANOGPT=$(cd "$1" && pwd); shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQMIX=$ROOT/build/seqmix
THREADS=2
ALL=0
ITERS=2000
while [ $# -gt 0 ]; do
  case $1 in
    --seqmix) SEQMIX=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --all-mixers) ALL=1; shift ;;
    --iters) ITERS=$2; shift 2 ;;
    *) usage ;;
  esac
done
TEXT=${SEQMIX_SHAKESPEARE:-/work/shared/data/tinyshakespeare.txt}
[ -f "$NANOGPT/train.py" ] || { echo "compare_nanogpt: $NANOGPT/train.py not found (pass a nanoGPT checkout)" >&2; exit 2; }
[ -x "$SEQMIX" ] || { echo "compare_nanogpt: $SEQMIX not found (build it, or pass --seqmix)" >&2; exit 2; }
[ -f "$TEXT" ] || { echo "compare_nanogpt: $TEXT not found (set SEQMIX_SHAKESPEARE)" >&2; exit 2; }
PY=/usr/bin/python3
WORK=$(mktemp -d /tmp/compare_nanogpt.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# nanoGPT's data, by the rules of its prepare.py (which would also import requests).
DATA=$NANOGPT/data/shakespeare_char
"$PY" - "$TEXT" "$DATA" <<'EOF'
import os, pickle, sys
import numpy as np
text, out = sys.argv[1], sys.argv[2]
data = open(text).read()
chars = sorted(set(data))
stoi = {c: i for i, c in enumerate(chars)}
n = len(data)
for name, part in (("train.bin", data[:int(n * 0.9)]), ("val.bin", data[int(n * 0.9):])):
    np.array([stoi[c] for c in part], dtype=np.uint16).tofile(os.path.join(out, name))
with open(os.path.join(out, "meta.pkl"), "wb") as f:
    pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)
EOF

# A short smoke run also shortens the 100-step warmup (seqmix refuses a warmup
# longer than the run).
NG_EXTRA=(); SM_EXTRA=()
if [ "$ITERS" -lt 200 ]; then
  NG_EXTRA=(--warmup_iters=$((ITERS / 4))); SM_EXTRA=(--set schedule.warmup_steps=$((ITERS / 4)))
fi

now() { date +%s.%N; }
echo "compare_nanogpt: $(date -u '+%Y-%m-%d %H:%M UTC'), $THREADS threads, $ITERS iterations"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "avx512 flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep avx512 | tr '\n' ' ')"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} (passive avoids spinning against other processes; see bench/RESULTS.md)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

t0=$(now)
(cd "$NANOGPT" && env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS "$PY" train.py \
  config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 \
  --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=$ITERS \
  --lr_decay_iters=$ITERS --dropout=0.0 --out_dir="$WORK/nanogpt" "${NG_EXTRA[@]}") > "$WORK/nanogpt.log" 2>&1 \
  || { echo "compare_nanogpt: nanoGPT failed:" >&2; tail -20 "$WORK/nanogpt.log" >&2; exit 1; }
t1=$(now)
NG_WALL=$(echo "$t1 - $t0" | bc)
NG_VAL=$(grep -E '^step [0-9]+: train loss' "$WORK/nanogpt.log" | tail -1 | sed -E 's/.*val loss ([0-9.]+).*/\1/')

run_seqmix() {  # config -> prints "wall valid_loss"
  local cfg=$1 out=$WORK/seqmix_$(basename "$1" .yaml)
  local s e
  s=$(now)
  OMP_NUM_THREADS=$THREADS "$SEQMIX" train "$cfg" --set data.path="$TEXT" --set training.steps=$ITERS \
    "${SM_EXTRA[@]}" --out "$out" > "$out.log" 2>&1 || { echo "compare_nanogpt: seqmix $cfg failed:" >&2; tail -20 "$out.log" >&2; exit 1; }
  e=$(now)
  echo "$(echo "$e - $s" | bc) $(grep -E '^done:' "$out.log" | sed -E 's/.*valid loss ([0-9.]+).*/\1/')"
}

read -r SM_WALL SM_VAL < <(run_seqmix "$ROOT/configs/text/shakespeare_char_attention.yaml")
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-28s %10s %12s\n' "run" "wall s" "valid loss"
printf '%-28s %10.1f %12s\n' "nanoGPT (PyTorch $("$PY" -c 'import torch; print(torch.__version__)'))" "$NG_WALL" "$NG_VAL"
printf '%-28s %10.1f %12s\n' "seqmix attention" "$SM_WALL" "$SM_VAL"
echo
printf 'seqmix is %.2fx faster than nanoGPT (target 3x); validation loss difference %+.3f (target within 0.02)\n' \
  "$(echo "$NG_WALL / $SM_WALL" | bc -l)" "$(echo "$SM_VAL - $NG_VAL" | bc -l)"

if [ "$ALL" = 1 ]; then
  echo
  printf '%-28s %10s %12s %18s\n' "mixer (same recipe)" "wall s" "valid loss" "x attention wall"
  for m in linear_attention gla h3 mamba; do
    read -r W VL < <(run_seqmix "$ROOT/configs/text/shakespeare_char_$m.yaml")
    printf '%-28s %10.1f %12s %18.2f\n' "seqmix $m" "$W" "$VL" "$(echo "$W / $SM_WALL" | bc -l)"
  done
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
