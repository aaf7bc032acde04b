#!/bin/bash
# Issue 9's long-context mixer targets, seqmix against PyTorch in one run, interleaved:
# each round runs seqmix's layers, then PyTorch's, then both decoders, so that a load
# that comes and goes on the shared machine hits both alike; the ratios are taken per
# round and their median is printed.
#
#   bench/compare_mixers_torch.sh [--rounds N] [--threads N] [--mixers attention,linear_attention,h3]
#                                 [--ctx 1024,4096] [--bench BINARY]
#
# seqmix: build/bench_attention (layers, kernel, decode). PyTorch: bench/torch_mixers.py
# with Debian's /usr/bin/python3, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, its tuned
# allocator, at 1 head and at 4 heads (seqmix runs 4); the faster of the two is "the
# strongest PyTorch form" each ratio is taken against.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/build/bench_attention
ROUNDS=3
THREADS=2
MIXERS=attention,linear_attention,h3
CTX=1024,4096
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --mixers) MIXERS=$2; shift 2 ;;
    --ctx) CTX=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
[ -x "$BENCH" ] || { echo "compare_mixers_torch: $BENCH not found (cmake --build build --target bench_attention)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/compare_mixers.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "compare_mixers_torch: $(date -u '+%Y-%m-%d %H:%M UTC'), $THREADS threads, $ROUNDS rounds"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "simd flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx|fma)' | tr '\n' ' ')"
echo "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset} (inherited by both; passive stops idle threads spinning against other processes)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

torch_run() {  # heads, extra args...
  local heads=$1; shift
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=$THREADS /usr/bin/python3 \
    "$ROOT/bench/torch_mixers.py" --heads "$heads" --no-train --repeats 5 "$@"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "--- round $r, load $(cut -d' ' -f1 /proc/loadavg)"
  OMP_NUM_THREADS=$THREADS "$BENCH" layers --mixers "$MIXERS" --reps 5 | tee -a "$WORK/seqmix.txt" | grep '^layer'
  for h in 1 4; do
    torch_run $h --only "$MIXERS" --decode-ctx "" | sed "s/^  \([a-z_0-9]*\) /torch h$h \1 /" |
      tee -a "$WORK/torch.txt" | grep '^torch h'
  done
  if [[ ",$MIXERS," == *,attention,* ]]; then
    OMP_NUM_THREADS=$THREADS "$BENCH" decode --ctx "$CTX" | tee -a "$WORK/seqmix.txt" | grep '^decode'
    for h in 1 4; do
      torch_run $h --only attention --no-layers --decode-ctx "$CTX" | grep -A1 -E '^ +[0-9]+k ctx' | tail -1 |
        sed "s/^ *attention/torch decode h$h/" | tee -a "$WORK/torch.txt"
    done
  fi
done
OMP_NUM_THREADS=$THREADS "$BENCH" kernel --reps 5 | grep -v '^#'

echo "--- summary (median over rounds; PyTorch: the faster of 1 and 4 heads in each round)"
/usr/bin/python3 - "$WORK/seqmix.txt" "$WORK/torch.txt" "$MIXERS" "$CTX" "$ROUNDS" <<'EOF'
import re, statistics, sys
seq, tor, mixers, ctx, rounds = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3].split(","), \
    [int(c) for c in sys.argv[4].split(",")], int(sys.argv[5])
for m in mixers:
    s = [float(x) for x in re.findall(rf"^layer {m} +([0-9.]+) ms", seq, re.M)]
    t = {h: [float(x) for x in re.findall(rf"^torch h{h} {m} +([0-9.]+) ms", tor, re.M)] for h in (1, 4)}
    best = [min(a, b) for a, b in zip(t[1], t[4])]
    ratios = [b / a for a, b in zip(s, best)]
    print(f"{m:18s} seqmix {statistics.median(s):8.1f} ms  torch best {statistics.median(best):8.1f} ms  "
          f"(h1 {statistics.median(t[1]):.1f}, h4 {statistics.median(t[4]):.1f})  "
          f"speed-up per round {', '.join(f'{x:.2f}' for x in ratios)}  median {statistics.median(ratios):.2f}x")
if "attention" in mixers:
    sd = re.findall(r"^decode attention ctx +(\d+) +([0-9.]+) tok/s best +([0-9.]+) tok/s median", seq, re.M)
    td = {h: [l.split()[3:] for l in tor.splitlines() if l.startswith(f"torch decode h{h}")] for h in (1, 4)}
    for i, c in enumerate(ctx):
        s = [float(b) for n, b, _ in sd if int(n) == c]
        tb = [max(float(a[i]), float(b[i])) for a, b in zip(td[1], td[4])]
        ratios = [a / b for a, b in zip(s, tb)]
        print(f"decode ctx {c:6d}: seqmix {statistics.median(s):8.0f} tok/s  torch best {statistics.median(tb):8.0f} "
              f"tok/s  ratio per round {', '.join(f'{x:.2f}' for x in ratios)}  median {statistics.median(ratios):.2f}x")
EOF
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
