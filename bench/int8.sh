#!/usr/bin/env bash
# int8 weights vs float32 in nscope on the forward bench model (GPT-2 small, random weights):
#   bash bench/int8.sh [BUILD_DIR]
# For each shape, float32 and int8 run alternately ROUNDS times (default 3); prints the median tokens/s of
# each, the median per-round ratio int8 / float32, and the resident memory the model added to the process
# (RSS after the timed forwards minus RSS before loading: the weights, every one read by then, plus the
# forward's buffers).
source "$(dirname "$0")/common.sh"
MODEL=${MODEL:-$BUILD_DIR/bench-gpt2-small}
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL"
printf "%-6s %-9s %12s %12s %7s %10s %10s %s\n" shape hooks "fp32 tok/s" "int8 tok/s" ratio "fp32 MiB" "int8 MiB" "(per round)"
for shape in ${SHAPES:-1x16 1x64 8x128}; do
  for hooks in ${HOOKS:-none}; do
    results=()
    for _ in $(seq "$ROUNDS"); do
      for dtype in float32 int8; do
        results+=("$("$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" --dtype $dtype \
                     --shape $shape --hooks $hooks --seconds "$SECONDS_PER")")
      done
    done
    python3 - "$shape" "$hooks" "${results[@]}" <<'PY'
import json, statistics, sys
shape, hooks, runs = sys.argv[1], sys.argv[2], [json.loads(a) for a in sys.argv[3:]]
f, q = runs[0::2], runs[1::2]
ratios = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(f, q)]
mib = lambda rs: statistics.median(r["rss_added_bytes"] for r in rs) / 2**20
print(f"{shape:<6} {hooks:<9} {statistics.median(r['tokens_per_s'] for r in f):12.0f} "
      f"{statistics.median(r['tokens_per_s'] for r in q):12.0f} {statistics.median(ratios):6.2f}x "
      f"{mib(f):10.0f} {mib(q):10.0f} ({' '.join(f'{r:.2f}' for r in ratios)})")
PY
  done
done
