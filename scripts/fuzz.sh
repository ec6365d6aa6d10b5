#!/usr/bin/env bash
# libFuzzer harnesses of tests/fuzz (docs/robustness.md): build, smoke-run, or run one for long.
#   bash scripts/fuzz.sh build                     # clang build in $FUZZ_BUILD_DIR (default build-fuzz)
#   bash scripts/fuzz.sh smoke [RUNS]              # every harness, RUNS inputs (default 2000) from its seeds
#   bash scripts/fuzz.sh run NAME [LIBFUZZER ARGS] # one harness, growing $FUZZ_WORK/NAME (e.g. -runs=1000000)
# Needs clang and libclang-rt (scripts/install-deps.sh with NSCOPE_WITH_FUZZ=1). Harness names: the
# fuzz_*.cpp files. Any crash, sanitizer report, leak or non-InputError exception exits non-zero and
# leaves the input as crash-* / leak-* / timeout-* in the current directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
WORK=${FUZZ_WORK:-$BUILD/fuzz-work}
NAMES=(npy tokenizer recipe prompts_jsonl safetensors model_index lua_script)
# Leaks are findings; UBSan already aborts (-fno-sanitize-recover); symbolized stacks for reports.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1   # LibTorch kernels (tensor materialisation) stay on this thread
# -close_fd_mask=1: scripts' print() output is not interesting; -max_len fits the seeds (tokenizers ~14 kB).
# Seeds that live elsewhere in the tree (read, never written): the example scripts and the sandbox-escape fixtures.
seed_dirs() {
  echo "$ROOT/tests/fuzz/corpus/$1"
  if [ "$1" = lua_script ]; then echo "$ROOT/scripts/lua"; echo "$ROOT/tests/fixtures/scripts/bad"; fi
}

COMMON=(-close_fd_mask=1 -max_len=16384 -timeout=25 -rss_limit_mb=4096 -print_final_stats=1)

case "${1:-}" in
  build)
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=${FUZZ_CXX:-clang++-16} \
      -DNSCOPE_FUZZ=ON -DNSCOPE_BUILD_TESTS=OFF ${FUZZ_CMAKE_ARGS:-}
    cmake --build "$BUILD" --target nscope_fuzzers -j "${JOBS:-$(nproc)}"
    ;;
  smoke)
    runs=${2:-2000}
    for n in "${NAMES[@]}"; do
      scratch=$(mktemp -d)   # new inputs go here, never into the checked-in seeds
      echo "== fuzz_$n: $runs runs"
      mapfile -t seeds < <(seed_dirs "$n")
      (cd "$scratch" && "$ROOT/$BUILD/bin/fuzz_$n" "${COMMON[@]}" -seed=1 -runs="$runs" . "${seeds[@]}" \
        > log.txt 2>&1) || { tail -n 60 "$scratch/log.txt"; echo "fuzz_$n FAILED (input: $scratch)"; exit 1; }
      grep -E "^(stat::number_of_executed_units|Done)" "$scratch/log.txt" || true
      rm -rf "$scratch"
    done
    ;;
  run)
    n=${2:?harness name}
    shift 2
    mkdir -p "$WORK/$n"
    cd "$WORK"
    mapfile -t seeds < <(seed_dirs "$n")
    exec "$ROOT/$BUILD/bin/fuzz_$n" "${COMMON[@]}" "$@" "$n" "${seeds[@]}"
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
