#!/usr/bin/env bash
# GPT-2 124M, one training step (forward, backward, AdamW): seqmix against llm.c's
# train_gpt2.c and PyTorch (nanoGPT's model.py), back to back in one run (issue 9).
#
#   bench/compare_llmc.sh LLMC_DIR NANOGPT_DIR [BUILD_DIR] [LLMC_STEPS]
#
# LLMC_DIR: a karpathy/llm.c checkout in which train_gpt2 was built with llm.c's own
#   Makefile (`make train_gpt2`: cc -Ofast -march=native -fopenmp -DOMP on this machine).
#   Nothing here builds it.
# NANOGPT_DIR: a karpathy/nanoGPT checkout (its model.py is imported).
# BUILD_DIR: the seqmix build directory holding bench_train_step (default: build).
# LLMC_STEPS: training steps of train_gpt2 to time (default 6; its step 0 is warm-up).
#
# Shapes: B=4, T=64 for all three (train_gpt2.c hard-codes B=4, T=64 in its main), then
# B=4, T=256 for seqmix and PyTorch only (llm.c's main cannot take another shape).
#
# train_gpt2 reads gpt2_124M.bin and tiny_shakespeare token files from its working
# directory; there is no network here, so this script writes them into a scratch
# directory: the checkpoint in llm.c's layout (256 int32 header: magic 20240326,
# version 3, maxT 1024, V 50257, L 12, NH 12, C 768, Vp 50304; then float32 parameters
# in llm.c's order wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b,
# fcw, fcb, fcprojw, fcprojb, lnfw, lnfb), matrices N(0, 0.02), layernorm weights 1
# and biases 0 (so the loss starts near ln 50257 as in the other two); token files in
# llm.c's format (256 int32 header: magic 20240520, version 1, count; then uint16 ids)
# with uniform random ids. train_gpt2 runs 41 steps with evaluation and sampling in
# between; the script stops it (by its pid) after LLMC_STEPS timed steps, before its
# first sampling at step 20, and reads its peak RSS (VmHWM) just before.
#
# The threads are OMP_NUM_THREADS (default 2) for all three. Run on a machine as quiet
# as you can get and read the load averages printed beside each figure; the script does
# not renice itself (run it as `nice -n 5 bench/compare_llmc.sh ...` on a shared machine).
# On a machine with more runnable threads than cores, libgomp's default barrier spin
# dominates all three programs, unequally; run once more with OMP_WAIT_POLICY=passive
# (inherited by all three) and report both (bench/RESULTS.md, issue 9 section).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
LLMC_DIR=$(cd "$1" && pwd)
NANOGPT_DIR=$(cd "$2" && pwd)
BUILD_DIR=${3:-build}
LLMC_STEPS=${4:-6}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

[[ -x "$LLMC_DIR/train_gpt2" ]] || { echo "compare_llmc.sh: no train_gpt2 in $LLMC_DIR (run 'make train_gpt2' there)" >&2; exit 2; }
[[ -f "$NANOGPT_DIR/model.py" ]] || { echo "compare_llmc.sh: no model.py in $NANOGPT_DIR" >&2; exit 2; }
[[ -x "$BUILD_DIR/bench_train_step" ]] || { echo "compare_llmc.sh: no $BUILD_DIR/bench_train_step (cmake --build $BUILD_DIR --target bench_train_step)" >&2; exit 2; }

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/compare_llmc.XXXXXX")
LLMC_PID=
cleanup() {
  if [[ -n "$LLMC_PID" ]] && kill -0 "$LLMC_PID" 2>/dev/null; then kill "$LLMC_PID"; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "# compare_llmc.sh $(date -u '+%Y-%m-%d %H:%M UTC'), OMP_NUM_THREADS=$OMP_NUM_THREADS, OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)}, load average $(loadavg)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
echo "# llm.c $(git -C "$LLMC_DIR" log -1 --format=%h 2>/dev/null || echo '(not a git checkout)'), nanoGPT $(git -C "$NANOGPT_DIR" log -1 --format=%h 2>/dev/null || echo '(not a git checkout)')"

echo "## writing llm.c's random checkpoint and token files into $SCRATCH"
mkdir -p "$SCRATCH/dev/data/tinyshakespeare"
"$PY" - "$SCRATCH" <<'PYEOF'
import sys
import numpy as np
out = sys.argv[1]
maxT, V, L, NH, C, Vp = 1024, 50257, 12, 12, 768, 50304
header = np.zeros(256, dtype=np.int32)
header[:8] = [20240326, 3, maxT, V, L, NH, C, Vp]
# (shape numel, init) in train_gpt2.c's fill_in_parameter_sizes order
tensors = [(Vp * C, "n"), (maxT * C, "n"), (L * C, "1"), (L * C, "0"), (L * 3 * C * C, "n"), (L * 3 * C, "0"),
           (L * C * C, "n"), (L * C, "0"), (L * C, "1"), (L * C, "0"), (L * 4 * C * C, "n"), (L * 4 * C, "0"),
           (L * C * 4 * C, "n"), (L * C, "0"), (C, "1"), (C, "0")]
rng = np.random.default_rng(1234)
with open(f"{out}/gpt2_124M.bin", "wb") as f:
    f.write(header.tobytes())
    for n, init in tensors:
        if init == "n":
            f.write((rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)).tobytes())
        else:
            f.write(np.full(n, 1.0 if init == "1" else 0.0, dtype=np.float32).tobytes())
print(f"gpt2_124M.bin: {sum(n for n, _ in tensors):,} parameters")
for split, ntok in (("train", 200_000), ("val", 40_000)):
    h = np.zeros(256, dtype=np.int32)
    h[:3] = [20240520, 1, ntok]
    with open(f"{out}/dev/data/tinyshakespeare/tiny_shakespeare_{split}.bin", "wb") as f:
        f.write(h.tobytes())
        f.write(rng.integers(0, V, ntok, dtype=np.uint16).tobytes())
PYEOF

run_seqmix() {  # B T
  echo "## seqmix B=$1 T=$2 (load average $(loadavg))"
  "$BUILD_DIR/bench_train_step" --B "$1" --T "$2" | tee "$SCRATCH/seqmix_$1_$2.txt"
}
run_torch() {  # B T
  echo "## PyTorch + nanoGPT B=$1 T=$2 (load average $(loadavg))"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" "$HERE/torch_gpt2_step.py" "$NANOGPT_DIR" --B "$1" --T "$2" \
    | grep -v -e '^WARNING: using slow attention' | tee "$SCRATCH/torch_$1_$2.txt"
}
run_llmc() {
  echo "## llm.c train_gpt2 B=4 T=64, $LLMC_STEPS steps (load average $(loadavg))"
  # stdbuf: train_gpt2 writes to a pipe/file, so make its stdout line-buffered to see each step as it ends.
  (cd "$SCRATCH" && exec stdbuf -oL "$LLMC_DIR/train_gpt2") > "$SCRATCH/llmc.txt" 2>&1 &
  LLMC_PID=$!
  local hwm=0
  while kill -0 "$LLMC_PID" 2>/dev/null; do
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$LLMC_PID/status" 2>/dev/null || echo "$hwm")
    if [[ $(grep -c '^step ' "$SCRATCH/llmc.txt") -ge $LLMC_STEPS ]]; then
      kill "$LLMC_PID"
      break
    fi
    sleep 0.5
  done
  wait "$LLMC_PID" 2>/dev/null || true
  LLMC_PID=
  grep -e '^step ' -e '^num_parameters' -e '^val loss' -e 'Bad' -e 'Error' "$SCRATCH/llmc.txt" || true
  if [[ $(grep -c '^step ' "$SCRATCH/llmc.txt") -lt 2 ]]; then
    echo "compare_llmc.sh: train_gpt2 did not report two steps; its output:" >&2
    cat "$SCRATCH/llmc.txt" >&2
    exit 1
  fi
  # step 0 allocates activations, gradients and moments on first touch: warm-up
  grep '^step ' "$SCRATCH/llmc.txt" | tail -n +2 | sed 's/.*took \([0-9.]*\) ms.*/\1/' | sort -g |
    awk -v hwm="$hwm" '{a[NR] = $1} END {printf "RESULT llmc B=4 T=64 ms_step=%.1f peak_rss_mib=%.0f steps=%d\n", a[int((NR + 1) / 2)], hwm / 1024, NR}' |
    tee -a "$SCRATCH/llmc_result.txt"
}

run_seqmix 4 64
run_llmc
run_torch 4 64
run_seqmix 4 256
run_torch 4 256
echo "# load average at the end: $(loadavg)"

field() {  # file key
  grep -h '^RESULT' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
S64=$(field "$SCRATCH/seqmix_4_64.txt" ms_step); L64=$(field "$SCRATCH/llmc_result.txt" ms_step); P64=$(field "$SCRATCH/torch_4_64.txt" ms_step)
S256=$(field "$SCRATCH/seqmix_4_256.txt" ms_step); P256=$(field "$SCRATCH/torch_4_256.txt" ms_step)
echo
echo "## Summary: GPT-2 124M training step, ms (median), peak RSS MiB, OMP_NUM_THREADS=$OMP_NUM_THREADS"
printf '| shape | seqmix ms | llm.c ms | PyTorch ms | seqmix / llm.c | seqmix GFLOP/s | sgemm GFLOP/s | RSS seqmix | RSS llm.c | RSS PyTorch |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
printf '| B=4 T=64 | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$S64" "$L64" "$P64" \
  "$(awk -v s="$S64" -v l="$L64" 'BEGIN {printf "%.2f", s / l}')" "$(field "$SCRATCH/seqmix_4_64.txt" gflops)" \
  "$(field "$SCRATCH/seqmix_4_64.txt" sgemm_gflops)" "$(field "$SCRATCH/seqmix_4_64.txt" peak_rss_mib)" \
  "$(field "$SCRATCH/llmc_result.txt" peak_rss_mib)" "$(field "$SCRATCH/torch_4_64.txt" peak_rss_mib)"
printf '| B=4 T=256 | %s | (not run) | %s | | %s | %s | %s | | %s |\n' "$S256" "$P256" \
  "$(field "$SCRATCH/seqmix_4_256.txt" gflops)" "$(field "$SCRATCH/seqmix_4_256.txt" sgemm_gflops)" \
  "$(field "$SCRATCH/seqmix_4_256.txt" peak_rss_mib)" "$(field "$SCRATCH/torch_4_256.txt" peak_rss_mib)"
