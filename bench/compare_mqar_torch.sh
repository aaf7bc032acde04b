#!/bin/bash
# seqmix's MQAR main job against a PyTorch run of the same model, back to back.
#
#   bench/compare_mqar_torch.sh [--seqmix BINARY] [--threads N] [--steps N] [--skip-torch] [--threads-sweep]
#
# seqmix runs configs/mqar/attention.yaml (to valid accuracy 0.99, or 16 epochs);
# bench/torch_mqar.py is the same model, data distribution, optimizer and stopping
# rule in PyTorch (see its docstring), run with Debian's /usr/bin/python3,
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset. Both with OMP_NUM_THREADS=N
# (default 2). The times compared are each program's own training time (the
# loop with its evaluations; data generation excluded), plus steps and tokens/s,
# since the two reach 0.99 after different step counts (different draws).
#
# --steps N stops both after N steps (then the per-step throughput is what is
# compared); the full PyTorch run takes tens of minutes on a loaded machine.
# --threads-sweep also runs seqmix with 1 thread, to check that 2 threads are
# not slower than one.
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SEQMIX=$ROOT/build/seqmix
THREADS=2
STEPS=0
TORCH=1
SWEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --seqmix) SEQMIX=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --skip-torch) TORCH=0; shift ;;
    --threads-sweep) SWEEP=1; shift ;;
    *) usage ;;
  esac
done
[ -x "$SEQMIX" ] || { echo "compare_mqar_torch: $SEQMIX not found (build it, or pass --seqmix)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/compare_mqar.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "compare_mqar_torch: $(date -u '+%Y-%m-%d %H:%M UTC'), $THREADS threads, steps ${STEPS/#0/until 0.99}"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "avx512 flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep avx512 | tr '\n' ' ')"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} (passive avoids spinning against other processes; see bench/RESULTS.md)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

run_seqmix() {  # threads -> prints the "done:" line
  local extra=()
  [ "$STEPS" -gt 0 ] && extra=(--set training.epochs=0 --set training.steps="$STEPS")
  [ "$STEPS" -gt 0 ] && [ "$STEPS" -lt 200 ] && extra+=(--set schedule.warmup_steps=$((STEPS / 4)))
  OMP_NUM_THREADS=$1 "$SEQMIX" train "$ROOT/configs/mqar/attention.yaml" "${extra[@]}" --out "$WORK/seqmix_$1" \
    > "$WORK/seqmix_$1.log" 2>&1 || { echo "compare_mqar_torch: seqmix failed:" >&2; tail -20 "$WORK/seqmix_$1.log" >&2; exit 1; }
  grep -E '^done:' "$WORK/seqmix_$1.log"
}
secs() { sed -E 's/.* in ([0-9.]+)s.*/\1/'; }

SM=$(run_seqmix "$THREADS")
echo "seqmix ($THREADS threads): $SM"
SM_T=$(echo "$SM" | secs)
if [ "$SWEEP" = 1 ] && [ "$THREADS" != 1 ]; then
  SM1=$(run_seqmix 1)
  echo "seqmix (1 thread):  $SM1"
  printf '%s threads against 1: %.2fx\n' "$THREADS" "$(echo "$(echo "$SM1" | secs) / $SM_T" | bc -l)"
fi
if [ "$TORCH" = 1 ]; then
  extra=()
  [ "$STEPS" -gt 0 ] && extra=(--max-steps "$STEPS")
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS /usr/bin/python3 "$ROOT/bench/torch_mqar.py" \
    --threads "$THREADS" "${extra[@]}" > "$WORK/torch.log" 2>&1 \
    || { echo "compare_mqar_torch: torch_mqar.py failed:" >&2; tail -20 "$WORK/torch.log" >&2; exit 1; }
  TO=$(grep -E '^torch done:' "$WORK/torch.log")
  echo "PyTorch ($THREADS threads): $TO"
  TO_T=$(echo "$TO" | secs)
  sm_tps=$(echo "$SM" | sed -E 's/.*\| ([0-9]+) tok\/s.*/\1/')
  to_tps=$(echo "$TO" | sed -E 's/.*\| ([0-9]+) tok\/s.*/\1/')
  printf 'training time: seqmix %.1f s, PyTorch %.1f s: %.2fx; throughput %.2fx (target 3x)\n' "$SM_T" "$TO_T" \
    "$(echo "$TO_T / $SM_T" | bc -l)" "$(echo "$sm_tps / $to_tps" | bc -l)"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
