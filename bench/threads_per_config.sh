#!/bin/bash
# One thread against two for every shipped training config (issue 8: two threads
# must never be slower than one, without the user choosing), and the two ways a
# step can use two threads (training.parallel: ops or batch, docs/model.md#threads).
#
#   bench/threads_per_config.sh [--seqmix BINARY] [--steps N] [--rounds N] [CONFIG...]
#
# Each config trains N steps (default 60; GPT-2 124M 2 steps, about a minute each)
# with OMP_NUM_THREADS=1, with =2 as configured (training.parallel: auto) and with =2
# in the other mode, alternately, ROUNDS times (default 2), with one evaluation and
# one checkpoint at the end. Printed per config: the median training time of each
# (the "done:" line's seconds, which exclude setup and data generation), the mode
# auto chose, and one thread's time over two threads' as configured (>= 1: two
# threads are not slower). A mode the config cannot use (a batch that does not
# divide among the threads) shows "-".
# Without CONFIG arguments: every config in configs/{mqar,text,zoology,gpt2}/.
# GPT-2 124M trains on random token files made here (its config names
# data/gpt2/*.bin, which the repository does not ship).
# Run it on a quiet machine: a second process on the cores makes two threads wait
# for each other.
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQMIX=$ROOT/build/seqmix
STEPS=60
ROUNDS=2
CONFIGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --seqmix) SEQMIX=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    -*) usage ;;
    *) CONFIGS+=("$1"); shift ;;
  esac
done
[ -x "$SEQMIX" ] || { echo "threads_per_config: $SEQMIX not found (build it, or pass --seqmix)" >&2; exit 2; }
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=("$ROOT"/configs/{mqar,text,zoology,gpt2}/*.yaml)
WORK=$(mktemp -d /tmp/threads_per_config.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "threads_per_config: $(date -u '+%Y-%m-%d %H:%M UTC'), seqmix $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "avx512 flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep avx512 | tr '\n' ' ')"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Random GPT-2 token files (nanoGPT's raw uint16 format), for configs that read them.
/usr/bin/python3 - "$WORK" <<'PY'
import random, struct, sys
rng = random.Random(0)
for name, n in (("train.bin", 1 << 20), ("val.bin", 1 << 16)):
    open(sys.argv[1] + "/" + name, "wb").write(struct.pack("<%dH" % n, *(rng.randrange(50257) for _ in range(n))))
PY

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

run() {  # config threads round [parallel mode] -> seconds of training ("-" if refused)
  local config=$1 threads=$2 out=$WORK/run_$2_$3_${4:-auto} steps=$STEPS extra=()
  grep -q '^ *train_path:' "$config" && { steps=2; extra=(--set data.train_path="$WORK/train.bin" --set data.val_path="$WORK/val.bin" --set training.eval_batches=1); }
  [ -n "${4:-}" ] && extra+=(--set training.parallel="$4")
  rm -rf "$out"
  if ! OMP_NUM_THREADS=$threads "$SEQMIX" train "$config" --out "$out" --set training.epochs=0 --set training.steps="$steps" \
    --set training.eval_interval="$steps" --set training.checkpoint_interval=0 --set schedule.warmup_steps=$((steps / 4)) \
    "${extra[@]}" > "$out.log" 2>&1; then
    grep -q 'training.parallel' "$out.log" && { echo -; return; }
    echo "threads_per_config: $config failed:" >&2; tail -20 "$out.log" >&2; exit 1
  fi
  sed -nE 's/^done: .* in ([0-9.]+)s.*/\1/p' "$out.log"
}

printf '%-46s %8s %10s %12s %6s %8s\n' config "1t s" "2t ops s" "2t batch s" auto "1t / 2t"
for config in "${CONFIGS[@]}"; do
  : > "$WORK/t1"; : > "$WORK/ops"; : > "$WORK/batch"
  for ((r = 0; r < ROUNDS; ++r)); do
    run "$config" 1 "$r" >> "$WORK/t1"
    t=$(run "$config" 2 "$r")
    if grep -q 'batch-parallel steps' "$WORK/run_2_${r}_auto.log"; then auto=batch other=ops; else auto=ops other=batch; fi
    echo "$t" >> "$WORK/$auto"
    run "$config" 2 "$r" "$other" >> "$WORK/$other"
  done
  t1=$(median < "$WORK/t1")
  med() { grep -q -- - "$1" && echo - || median < "$1"; }
  ops=$(med "$WORK/ops") batch=$(med "$WORK/batch")
  chosen=$([ "$auto" = batch ] && echo "$batch" || echo "$ops")
  printf '%-46s %8.2f %10s %12s %6s %7.2fx\n' "${config#"$ROOT"/configs/}" "$t1" "$ops" "$batch" "$auto" \
    "$(echo "$t1 / $chosen" | bc -l)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
