#!/usr/bin/env bash
# Sets up (Debian packages), builds in Release and runs the whole test suite; then
# builds a second directory with AddressSanitizer + UndefinedBehaviorSanitizer and
# runs the whole suite there; then runs each libFuzzer target for 30 seconds.
# All three must pass. On 2 cores this fits CI's 90 minutes (docs/reliability.md
# has the measured times).
#
#   SEQMIX_TEST_SKIP_SANITIZE=1   skip the sanitizer suite (a quick local check)
#   SEQMIX_TEST_SKIP_FUZZ=1       skip the fuzz runs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j2
ctest --test-dir build --output-on-failure -j1

if [ -z "${SEQMIX_TEST_SKIP_SANITIZE:-}" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DSEQMIX_SANITIZE=ON
  # The program and the tests only: the benchmarks are not run here.
  targets=$(cmake --build build-asan --target help | sed -n 's/^\.\.\. \(seqmix\|test_[a-z0-9_]*\)$/\1/p' | grep -v '^test_support$')
  # shellcheck disable=SC2086
  cmake --build build-asan -j2 --target $targets
  # Leaks inside libraries we call (HDF5's error paths, the OpenMP runtime) are
  # theirs; ours are reported. halt_on_error: a report fails the test.
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
  LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j1
fi

if [ -z "${SEQMIX_TEST_SKIP_FUZZ:-}" ]; then
  bash scripts/fuzz.sh --seconds 30
fi
