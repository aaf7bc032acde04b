#!/bin/bash
# Data-parallel throughput of `seqmix train`: one process without mpirun, then
# `mpirun -np 1` and `mpirun -np 2`, one OpenMP thread per rank, on the same global batch.
#
#   bench/bench_mpi.sh [--seqmix BINARY] [--steps N] [--gpt2] [--gpt2-steps N]
#
# MQAR: the benchmark step of bench/RESULTS.md (configs/mqar/attention.yaml at D=128,
# L=256, K=16, B=64). --gpt2 adds GPT-2 124M (configs/gpt2/gpt2_124m.yaml) at B=4, T=64
# on random token files written to a scratch directory. For each run it prints the
# training tokens/s (median of the log windows after the first, so start-up and the first
# step are left out), rank 0's gradient allreduce time per step and its share of the run,
# and the megabytes of gradients reduced per step (4 bytes x parameters).
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQMIX=$ROOT/build/seqmix
STEPS=40
GPT2=0
GPT2_STEPS=6
while [ $# -gt 0 ]; do
  case $1 in
    --seqmix) SEQMIX=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --gpt2) GPT2=1; shift ;;
    --gpt2-steps) GPT2_STEPS=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -x "$SEQMIX" ] || { echo "bench_mpi: $SEQMIX not found (build it, or pass --seqmix)" >&2; exit 2; }
command -v mpirun > /dev/null || { echo "bench_mpi: no mpirun (Debian: openmpi-bin)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/bench_mpi.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|avx2|avx512f|avx512bw|avx512_bf16|fma)$' | tr '\n' ' ')"
echo "mpirun: $(mpirun --version | head -1)"

# run LABEL RANKS(0: no mpirun) CONFIG LOG_INTERVAL STEPS overrides...
run() {
  local label=$1 ranks=$2 cfg=$3 every=$4 steps=$5
  shift 5
  local out=$WORK/run_$RANDOM
  local cmd=("$SEQMIX" train "$cfg" --out "$out" --set "training.steps=$steps" --set training.eval_interval=1000000
             --set training.checkpoint_interval=0 --set "logging.log_interval=$every" "$@")
  [ "$ranks" -gt 0 ] && cmd=(mpirun --allow-run-as-root --oversubscribe -np "$ranks" "${cmd[@]}")
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  OMP_NUM_THREADS=1 "${cmd[@]}" > "$WORK/log" 2>&1 || { cat "$WORK/log"; exit 1; }
  /usr/bin/python3 - "$out/metrics.jsonl" "$WORK/log" "$label" "$load" <<'EOF'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tps = [r["tokens_per_s"] for r in rows[1:]] or [rows[-1]["tokens_per_s"]]
log = open(sys.argv[2]).read()
ar = re.search(r"gradient allreduce: ([0-9.]+) ms per step, ([0-9.]+)% of the time; ([0-9.]+) MB", log)
extra = f"allreduce {ar.group(1)} ms/step ({ar.group(2)}% of the run), {ar.group(3)} MB reduced/step" if ar else "no allreduce"
print(f"{sys.argv[3]:<34} {statistics.median(tps):>10,.0f} tok/s   {extra}   (load {sys.argv[4]})")
EOF
}

MQAR=$ROOT/configs/mqar/attention.yaml
MQAR_SET=(--set model.d_model=128 --set model.max_position_embeddings=256 --set data.seq_len=256
          --set data.num_kv_pairs=16 --set training.batch_size=64 --set data.num_train_examples=4096
          --set data.num_test_examples=64 --set training.epochs=0 --set schedule.warmup_steps=0)
echo
echo "MQAR step (2 layers attention, B=64, L=256, D=128, V=8192, K=16), $STEPS steps, 1 thread per rank"
run "mqar, 1 process" 0 "$MQAR" 10 "$STEPS" "${MQAR_SET[@]}"
run "mqar, mpirun -np 1" 1 "$MQAR" 10 "$STEPS" "${MQAR_SET[@]}"
run "mqar, mpirun -np 2 (B=32 per rank)" 2 "$MQAR" 10 "$STEPS" "${MQAR_SET[@]}"

if [ "$GPT2" = 1 ]; then
  # Random GPT-2 token ids in nanoGPT's raw uint16 format.
  /usr/bin/python3 -c "
import numpy as np
rng = np.random.default_rng(0)
rng.integers(0, 50257, 200000).astype('<u2').tofile('$WORK/train.bin')
rng.integers(0, 50257, 20000).astype('<u2').tofile('$WORK/val.bin')"
  GPT2_SET=(--set "data.train_path=$WORK/train.bin" --set "data.val_path=$WORK/val.bin" --set data.seq_len=64
            --set training.batch_size=4 --set training.eval_batches=1 --set schedule.warmup_steps=0)
  echo
  echo "GPT-2 124M step (B=4, T=64), $GPT2_STEPS steps, 1 thread per rank"
  run "gpt2, 1 process" 0 "$ROOT/configs/gpt2/gpt2_124m.yaml" 1 "$GPT2_STEPS" "${GPT2_SET[@]}"
  run "gpt2, mpirun -np 2 (B=2 per rank)" 2 "$ROOT/configs/gpt2/gpt2_124m.yaml" 1 "$GPT2_STEPS" "${GPT2_SET[@]}"
fi
