#!/usr/bin/env bash
# Causal-analysis benchmarks on the GPT-2-small-shaped bench model (bench/run.sh makes it), same threads, one run:
#   bash bench/causal.sh [BUILD_DIR]
# (a) attribution patching (heads, residual positions and every MLP neuron of every layer; 2 forwards + 1 backward
#     per pair) against one forward capturing the same hooks of the same prompts, and exhaustive head patching
#     (one patched row per head and pair) beside it; rounds alternate inside nscope_bench_causal.
# (b) gradient capture: d(mean next-token loss)/d(mlp.hook_post) of every layer, nscope against PyTorch eager
#     with forward hooks + retain_grad + backward, alternating ROUNDS times; per-round ratios nscope / PyTorch.
# PAIRS, TOKENS (attribution), SHAPES (gradients), ROUNDS, SECONDS_PER, THREADS from the environment.
source "$(dirname "$0")/common.sh"
cmake --build "$BUILD_DIR" --target nscope_bench_causal >/dev/null
MODEL=${GPT2_MODEL:-$BUILD_DIR/bench-gpt2-small}
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL" --arch gpt2
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), threads $THREADS"

echo "== (a) attribution patching vs one forward + capture (pairs ${PAIRS:-4} x ${TOKENS:-16} tokens)"
"$BUILD_DIR/bin/nscope_bench_causal" --threads "$THREADS" attribution "$MODEL" --pairs "${PAIRS:-4}" \
  --tokens "${TOKENS:-16}" --rounds "$ROUNDS"

echo "== (b) gradient capture, every mlp.hook_post: nscope vs PyTorch (retain_grad)"
printf "%-7s %12s %12s %7s %s\n" shape "nscope tok/s" "torch tok/s" ratio "(per round)"
for shape in ${SHAPES:-1x64 8x128}; do
  results=()
  for _ in $(seq "$ROUNDS"); do
    results+=("$("$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" --shape "$shape" \
                 --hooks mlp_post --grad --seconds "$SECONDS_PER")")
    results+=("$(/usr/bin/python3 bench/torch_baseline.py "$MODEL" --threads "$THREADS" --shape "$shape" \
                 --hooks mlp_post --grad --seconds "$SECONDS_PER")")
  done
  /usr/bin/python3 - "$shape" "${results[@]}" <<'PY'
import json, statistics, sys
shape = sys.argv[1]
runs = [json.loads(a) for a in sys.argv[2:]]
n = [r["tokens_per_s"] for r in runs[0::2]]
t = [r["tokens_per_s"] for r in runs[1::2]]
ratios = [a / b for a, b in zip(n, t)]
print(f"{shape:<7} {statistics.median(n):12.0f} {statistics.median(t):12.0f} {statistics.median(ratios):6.2f}x "
      f"({' '.join(f'{r:.2f}' for r in ratios)})")
PY
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
