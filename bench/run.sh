#!/usr/bin/env bash
# Forward benchmark: nscope vs PyTorch eager with forward hooks, same model, same threads, same run.
#   bash bench/run.sh [BUILD_DIR]        (needs python3-torch: NSCOPE_WITH_BENCH=1 scripts/install-deps.sh)
# Models (ARCHS, default all three): gpt2 = GPT-2 small, gpt_neox = Pythia-160M-shaped (parallel residual),
# gemma = Gemma 1 at GPT-2-small scale (multi-query, head_dim 256, GeGLU). DTYPES, SHAPES select the cells.
# Each cell runs nscope and PyTorch alternately ROUNDS times (default 3) and reports the median tokens/s of
# each and the median of the per-round ratios nscope / PyTorch: a shared 2-core VM drifts by +-10% over
# minutes, and alternating keeps both contenders under the same conditions.
source "$(dirname "$0")/common.sh"
printf "%-9s %-9s %-6s %-9s %12s %12s %7s %s\n" model dtype shape hooks "nscope tok/s" "torch tok/s" ratio "(per round)"
for arch in ${ARCHS:-gpt2 gpt_neox gemma}; do
MODEL=$BUILD_DIR/bench-$arch
[ "$arch" = gpt2 ] && MODEL=${GPT2_MODEL:-$BUILD_DIR/bench-gpt2-small}
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL" --arch "$arch"
for dtype in ${DTYPES:-float32 bfloat16}; do
  for shape in ${SHAPES:-1x16 1x64 8x128}; do
    for hooks in none mlp_post; do
      results=()
      for _ in $(seq "$ROUNDS"); do
        results+=("$("$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" --dtype $dtype --shape $shape \
                     --hooks $hooks --seconds "$SECONDS_PER")")
        results+=("$(/usr/bin/python3 bench/torch_baseline.py "$MODEL" --threads "$THREADS" --dtype $dtype --shape $shape \
                     --hooks $hooks --seconds "$SECONDS_PER")")
      done
      /usr/bin/python3 - "$arch" "$dtype" "$shape" "$hooks" "${results[@]}" <<'PY'
import json, statistics, sys
arch, dtype, shape, hooks = sys.argv[1:5]
runs = [json.loads(a) for a in sys.argv[5:]]
n = [r["tokens_per_s"] for r in runs[0::2]]
t = [r["tokens_per_s"] for r in runs[1::2]]
ratios = [a / b for a, b in zip(n, t)]
print(f"{arch:<9} {dtype:<9} {shape:<6} {hooks:<9} {statistics.median(n):12.0f} {statistics.median(t):12.0f} "
      f"{statistics.median(ratios):6.2f}x ({' '.join(f'{r:.2f}' for r in ratios)})")
PY
    done
  done
done
done
