#!/usr/bin/env bash
# Streaming analyses: stats + topk over every mlp.hook_post of a GPT-2-small-shaped model, against
#  (1) nscope's bare forward (no hooks, no analyses) -> overhead of capture + streaming analysis, and
#  (2) a PyTorch baseline that caches the activations with hooks and computes the same with torch ops,
# at 10k and 100k tokens, with peak memory of each (GNU time's max RSS).
#   bash bench/analysis.sh [BUILD_DIR]          (after bench/run.sh has built the bench model)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
NSCOPE_WITH_BENCH=1 bash scripts/install-deps.sh
MODEL=${MODEL:-$BUILD_DIR/bench-gpt2-small}
THREADS=${THREADS:-$(nproc)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
[ -f "$MODEL/model.safetensors" ] || "$BUILD_DIR/bin/nscope_bench_forward" make-model "$MODEL"
model_abs=$(cd "$MODEL" && pwd)
printf "%-8s %-22s %10s %10s %9s\n" tokens run seconds "peak MiB" "vs bare"
for tokens in ${TOKENS:-10240 102400}; do
  /usr/bin/python3 -c "import numpy as np; np.save('$WORK/ids.npy', np.random.RandomState(0).randint(0, 50257, size=($tokens // 128, 128)).astype(np.int64))"
  cat > "$WORK/streaming.yaml" <<YAML
name: streaming
model: { path: $model_abs }
prompts: [ { ids_file: $WORK/ids.npy } ]
batch_size: 8
hooks: [ "blocks.*.mlp.hook_post" ]
analyses:
  - { id: stats, use: stats }
  - { id: top, use: topk, k: 10, ngram: 1, max_ngrams: 24 }
exports: [ json ]
YAML
  declare -A secs mem
  # Bare forward: the same model and batch shape (8x128) with no hook observed, from the forward bench.
  /usr/bin/time -f "%M" -o "$WORK/bare.rss" "$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" \
    --shape 8x128 --hooks none --seconds 10 > "$WORK/bare.json"
  secs[bare]=$(/usr/bin/python3 -c "import json; print($tokens / json.load(open('$WORK/bare.json'))['tokens_per_s'])")
  mem[bare]=$(( $(cat "$WORK/bare.rss") / 1024 ))
  for run in streaming; do
    /usr/bin/time -f "%M" -o "$WORK/$run.rss" "$BUILD_DIR/bin/nscope" --threads "$THREADS" run "$WORK/$run.yaml" --out "$WORK/runs" > "$WORK/$run.dir" 2>/dev/null
    secs[$run]=$(/usr/bin/python3 -c "import json; m=json.load(open('$(cat "$WORK/$run.dir")/manifest.json')); print(m['models'][0]['timings']['pass1_s'] + m['models'][0]['timings'].get('export_s', 0))")
    mem[$run]=$(( $(cat "$WORK/$run.rss") / 1024 ))
  done
  # The baseline keeps every activation: at 100k tokens that is ~15 GB before the analysis copies it.
  if py=$(/usr/bin/python3 bench/analysis_baseline.py "$MODEL" "$WORK/ids.npy" --threads "$THREADS" 2>/dev/null); then
    psecs=$(/usr/bin/python3 -c "import json; print(json.loads('$py')['seconds'])")
    pmem=$(/usr/bin/python3 -c "import json; print(int(json.loads('$py')['peak_mib']))")
  else
    psecs=nan pmem="failed (out of memory?)"
  fi
  /usr/bin/python3 - "$tokens" "${secs[bare]}" "${mem[bare]}" "${secs[streaming]}" "${mem[streaming]}" "$psecs" "$pmem" <<'PY'
import sys
t, bs, bm, ss, sm, ps, pm = sys.argv[1:]
bs, ss, ps = float(bs), float(ss), float(ps)
print(f"{t:<8} {'nscope bare forward':<22} {bs:10.1f} {bm:>10} {'1.00x':>9}")
print(f"{t:<8} {'nscope stats+topk':<22} {ss:10.1f} {sm:>10} {ss/bs:8.2f}x")
print(f"{t:<8} {'pytorch cache+torch ops':<22} {ps:10.1f} {pm:>10} {ps/bs:8.2f}x")
PY
done
