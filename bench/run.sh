#!/usr/bin/env bash
# Forward benchmark: nscope vs PyTorch eager with forward hooks, same model, same threads, same run.
#   bash bench/run.sh [BUILD_DIR]        (needs python3-torch: NSCOPE_WITH_BENCH=1 scripts/install-deps.sh)
# Prints a table of tokens/s and the ratio nscope / PyTorch for each shape, dtype and hook setting.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build-bench}
THREADS=${THREADS:-$(nproc)}
SECONDS_PER=${SECONDS_PER:-4}
NSCOPE_WITH_BENCH=1 bash scripts/install-deps.sh
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSCOPE_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD_DIR" --target nscope_bench_forward nscope_builtin_plugins >/dev/null
MODEL=${MODEL:-$BUILD_DIR/bench-gpt2-small}
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL"
printf "%-9s %-6s %-9s %12s %12s %7s\n" dtype shape hooks "nscope tok/s" "torch tok/s" ratio
for dtype in float32 bfloat16; do
  for shape in 1x16 1x64 8x128; do
    for hooks in none mlp_post; do
      n=$("$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" --dtype $dtype --shape $shape --hooks $hooks --seconds "$SECONDS_PER")
      t=$(/usr/bin/python3 bench/torch_baseline.py "$MODEL" --threads "$THREADS" --dtype $dtype --shape $shape --hooks $hooks --seconds "$SECONDS_PER")
      /usr/bin/python3 - "$n" "$t" <<'PY'
import json, sys
n, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{n['dtype']:<9} {n['shape']:<6} {n['hooks']:<9} {n['tokens_per_s']:12.0f} {t['tokens_per_s']:12.0f} {n['tokens_per_s']/t['tokens_per_s']:6.2f}x")
PY
    done
  done
done
