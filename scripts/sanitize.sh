#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (docs/robustness.md, tests/sanitizers/).
#   bash scripts/sanitize.sh inprocess   # build and run nscope_tests_inprocess: the in-process test cases
#                                        # (parsers, tokenizers, recipe parsing, Lua tensors, analyzers) (CI)
#   bash scripts/sanitize.sh serve       # build and run nscope_tests_serve: `nscope serve` in one process (API,
#                                        # error paths, 8 concurrent clients x 50 requests)
#   bash scripts/sanitize.sh full        # build everything and run the whole ctest suite
# Environment: SANITIZE_BUILD_DIR (default build-asan), JOBS (default: cores), SANITIZE_CMAKE_ARGS (extra
# cmake arguments, e.g. -DCMAKE_CXX_COMPILER_LAUNCHER=ccache). GCC, RelWithDebInfo, -fsanitize=address,undefined
# with -fno-sanitize-recover=all; the sanitizer options and suppression files come from tests/CMakeLists.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SANITIZE_BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}
mode=${1:-}
case "$mode" in inprocess|serve|full) ;; *) sed -n '2,10p' "$0"; exit 2 ;; esac

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNSCOPE_BUILD_TESTS=ON -DNSCOPE_BUILD_BENCH=OFF \
  -DNSCOPE_SANITIZE=address,undefined ${SANITIZE_CMAKE_ARGS:-}
BUILD_DIR="$BUILD" bash scripts/fetch-test-data.sh
if [ "$mode" != full ]; then
  cmake --build "$BUILD" -j "$JOBS" --target "nscope_tests_$mode"
  # shellcheck disable=SC1091
  . "$BUILD/sanitizer-env.sh"   # ASAN_OPTIONS, LSAN_OPTIONS, UBSAN_OPTIONS as ctest sets them
  if [ "$mode" = serve ]; then "$BUILD/bin/nscope_tests_serve" "~[chromium]"; else "$BUILD/bin/nscope_tests_inprocess"; fi
else
  cmake --build "$BUILD" -j "$JOBS"
  ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure
fi
