#!/usr/bin/env bash
# Streaming analyses: stats + topk over every mlp.hook_post of a GPT-2-small-shaped model (float32, batches
# of 8 x 128 tokens), at 10k and 100k tokens, against
#   (1) nscope's bare forward over the same tokens, cold like a run's pass: the full model, and the model
#       without the unembedding (a run that needs no logits skips it, so this is the same model work as
#       the streaming run: the ratio to it is the cost of capture + analysis);
#   (2) a PyTorch baseline that caches the activations with hooks and computes the same with torch ops;
#   then the analyzers alone (nscope_bench_analyzers) against the time to read every value once.
# Peak memory is GNU time's maximum RSS of each process.
#   bash bench/analysis.sh [BUILD_DIR]          (TOKENS="10240 102400" by default)
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
py=/usr/bin/python3
json_field() { $py -c "import json, sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }
rss_mib() { echo $(( $(cat "$1") / 1024 )); }

printf "%-8s %-34s %9s %9s %11s %11s\n" tokens run seconds "peak MiB" "vs forward" "vs no-unemb"
for tokens in ${TOKENS:-10240 102400}; do
  $py -c "import numpy as np; np.save('$WORK/ids.npy', np.random.RandomState(0).randint(0, 50257, size=($tokens // 128, 128)).astype(np.int64))"
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
  for bare in full no_unembed; do
    flag=""; [ $bare = no_unembed ] && flag=--no-logits
    /usr/bin/time -f "%M" -o "$WORK/$bare.rss" "$BUILD_DIR/bin/nscope_bench_forward" --threads "$THREADS" run "$MODEL" \
      --shape 8x128 --hooks none --tokens "$tokens" $flag > "$WORK/$bare.json"
  done
  /usr/bin/time -f "%M" -o "$WORK/stream.rss" "$BUILD_DIR/bin/nscope" --threads "$THREADS" run "$WORK/streaming.yaml" \
    --out "$WORK/runs" > "$WORK/stream.dir" 2>/dev/null
  manifest="$(cat "$WORK/stream.dir")/manifest.json"
  # The baseline caches every activation and then concatenates it: 2 x tokens x 12 x 3072 x 4 bytes.
  need_kb=$(( tokens * 12 * 3072 * 4 * 2 / 1024 ))
  avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
  if [ "$need_kb" -lt "$avail_kb" ] && \
     $py bench/analysis_baseline.py "$MODEL" "$WORK/ids.npy" --threads "$THREADS" > "$WORK/torch.json" 2>/dev/null; then
    psecs=$(json_field "$WORK/torch.json" "['seconds']"); pmem=$(json_field "$WORK/torch.json" "['peak_mib']")
  else
    psecs=nan pmem=nan  # does not fit in memory (30 GB at 100k tokens)
  fi
  $py - "$tokens" "$WORK" "$manifest" "$psecs" "$pmem" <<'PY'
import json, sys
t, work, manifest, psecs, pmem = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
rss = lambda name: int(open(f"{work}/{name}.rss").read()) // 1024
full = json.load(open(f"{work}/full.json"))["seconds"]
bare = json.load(open(f"{work}/no_unembed.json"))["seconds"]
tm = json.load(open(manifest))["models"][0]["timings"]
rows = [("nscope forward (full model)", full, rss("full")),
        ("nscope forward without unembedding", bare, rss("no_unembed")),
        ("nscope stats+topk: forward pass", tm["pass1_s"], None),
        ("nscope stats+topk: + finish + export", tm["pass1_s"] + tm["finish1_s"] + tm["export_s"], rss("stream")),
        ("pytorch cache + torch ops", psecs, None if pmem != pmem else int(pmem))]
for name, s, mem in rows:
    m = "-" if mem is None else str(mem)
    print(f"{t:<8} {name:<34} {s:9.1f} {m:>9} {s / full:10.2f}x {s / bare:10.2f}x")
model_s = tm["pass1_s"] - tm["consume1_s"]
print(f"{t:<8} (time in analyzers: {tm['consume1_s']:.2f} s = {100 * tm['consume1_s'] / model_s:.1f}% of the pass's model time)")
PY
done

# The analyzers alone on synthetic batches of the same shape, against reading every value once.
echo
"$BUILD_DIR/bin/nscope_bench_analyzers" --threads "$THREADS" --tokens 10240 \
  --analyses "stats; topk k=10 ngram=1 max_ngrams=24" 2>/dev/null | grep -v '^{'
