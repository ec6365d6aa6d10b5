# Shared setup of the geometry benchmarks (bench/geometry.sh, bench/geometry_probe.sh), sourced with the
# script's arguments: the build, the Debian packages (python3-sklearn), the GPT-2-small-shaped bench model
# (made once), a work directory removed on exit, and the Python interpreter with numpy / sklearn.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${1:-build}
NSCOPE_WITH_BENCH=1 bash scripts/install-deps.sh
MODEL=${MODEL:-$BUILD_DIR/bench-gpt2-small}
THREADS=${THREADS:-2}
HOOK=${HOOK:-blocks.6.hook_resid_post}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL"
model_abs=$(cd "$MODEL" && pwd)
py=/usr/bin/python3
