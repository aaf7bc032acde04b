#!/usr/bin/env bash
# The main job: set up, build, and train the attention model on CPU-sized MQAR
# (configs/mqar/attention.yaml); prints its accuracy at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2 --target seqmix
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
out=runs/mqar_attention_$(date +%Y%m%d_%H%M%S)
./build/seqmix train configs/mqar/attention.yaml --out "$out" "$@"
./build/seqmix eval "$out"
