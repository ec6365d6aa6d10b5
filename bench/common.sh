# Shared setup of the forward benchmarks (bench/run.sh, bench/int8.sh), sourced with the script's arguments:
# settings from the environment, the Debian packages, the benchmark binary and the plugins built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${1:-build-bench}
THREADS=${THREADS:-$(nproc)}
SECONDS_PER=${SECONDS_PER:-3}
ROUNDS=${ROUNDS:-3}
NSCOPE_WITH_BENCH=1 bash scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSCOPE_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target nscope_bench_forward nscope_builtin_plugins >/dev/null
