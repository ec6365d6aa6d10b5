#!/usr/bin/env bash
# Sharded studies (docs/scale.md), on the bundled model (models/kjv-tiny) with random prompts of 128 tokens:
#   (1) overhead of sharding: one process with every core against SHARDS shards run concurrently with
#       one thread each (on a 2-core machine: 4 shards share the 2 cores), plus the merge; same recipe
#       (stats + topk over every mlp.hook_post), same tokens; the baseline is the one-process run;
#   (2) a long corpus through stats + topk + the SQLite neuron database: wall time, tokens/s and peak RSS
#       per phase from the manifest (flat memory: the pass's peak must not grow with the corpus).
# Then the merge of many synthetic shards (nscope_bench_merge, 100 x 12 x 3072 neurons by default).
#   bash bench/scale.sh [BUILD_DIR]      (TOKENS=102400 SHARDS=4 LONG_TOKENS=1048576 by default)
#   PARTS="long" bash bench/scale.sh     (only some parts: any of shards, long, merge; all three by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
NSCOPE="$BUILD_DIR/bin/nscope"
MODEL="$(pwd)/models/kjv-tiny"
TOKENS=${TOKENS:-102400} SHARDS=${SHARDS:-4} LONG_TOKENS=${LONG_TOKENS:-1048576}
PARTS=${PARTS:-shards long merge}
part() { [[ " $PARTS " == *" $1 "* ]]; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
py=/usr/bin/python3
field() { $py -c "import json, sys; m = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
now() { date +%s.%N; }

recipe() {  # name prompts -> recipe file
  cat > "$WORK/$1.yaml" <<YAML
name: $1
model: { path: $MODEL }
prompts: [ { random: { count: $2, length: 64, repeat: 2 } } ]
batch_size: 8
hooks: [ "blocks.*.mlp.hook_post" ]
analyses: [ { id: stats, use: stats }, { id: top, use: topk, k: 10, ngram: 1 } ]
exports: [ json${3:+, $3} ]
YAML
  echo "$WORK/$1.yaml"
}

if part shards; then
echo "== sharding overhead: $TOKENS tokens, 1 process x $(nproc) threads vs $SHARDS shards x 1 thread"
r=$(recipe shard $((TOKENS / 128)))
t0=$(now)
"$NSCOPE" --log-level warn --threads "$(nproc)" run "$r" --out "$WORK/one" > /dev/null
t1=$(now)
for i in $(seq 0 $((SHARDS - 1))); do
  "$NSCOPE" --log-level warn --threads 1 run "$r" --out "$WORK/shards/$i" --shard "$i/$SHARDS" > /dev/null &
done
wait
t2=$(now)
"$NSCOPE" --log-level warn merge "$WORK"/shards/*/shard/* --out "$WORK/merged" > /dev/null
t3=$(now)
$py - "$t0" "$t1" "$t2" "$t3" <<PY
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:])
one, shards, merge = t1 - t0, t2 - t1, t3 - t2
print(f"one process      {one:8.2f} s")
print(f"$SHARDS shards        {shards:8.2f} s  + merge {merge:.2f} s = {shards + merge:.2f} s  ({(shards + merge) / one:.2f}x one process)")
PY
fi

if part long; then
echo "== long corpus: $LONG_TOKENS tokens through stats + topk + sqlite"
r=$(recipe long $((LONG_TOKENS / 128)) "{ use: sqlite, path: $WORK/neurons.sqlite }")
t0=$(now)
run=$("$NSCOPE" --log-level warn run "$r" --out "$WORK/long")
t1=$(now)
m="$run/manifest.json"
$py - "$m" "$t0" "$t1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); t = float(sys.argv[3]) - float(sys.argv[2])
mod = m["models"][0]
print(f"tokens {mod['tokens']}, wall {t:.1f} s, forward+analysis {mod['tokens_per_s']:.0f} tokens/s")
peaks = mod["memory"].get("peak_rss_mib") or mod["memory"]
print("peak RSS per phase:", json.dumps(peaks))
print("timings:", json.dumps(mod["timings"]))
PY
echo "neuron database: $(du -m "$WORK/neurons.sqlite" | cut -f1) MB"
fi

if part merge; then
echo "== merge of synthetic shards"
"$BUILD_DIR/bin/nscope_bench_merge" ${MERGE_ARGS:---shards 100 --hooks 12 --width 3072 --k 10 --context 0 --ngram 0 --repeat 3}
fi
