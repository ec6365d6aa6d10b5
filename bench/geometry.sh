#!/usr/bin/env bash
# Geometry analyses: the same activations through nscope and through Debian's python3-sklearn, THREADS (2)
# threads each. The activations are those of the GPT-2-small-shaped bench model (random weights, as in
# bench/analysis.sh) on TOKENS (10,240) random tokens: blocks.6.hook_resid_post (768 wide) for the token rows,
# blocks.6.mlp.hook_post (3,072 neurons) over NEURON_TOKENS (2,048) tokens for the neuron row. An nscope run
# exports them (activations exporter); sklearn reads the .npy. nscope's time is the time its run spent in the
# analyzer (consume while streaming + finish, from the manifest; the forward pass excluded); sklearn's is the
# call on arrays in memory. Quality: trustworthiness (k 15) of both maps by sklearn's own function on the
# same rows; PCA explained variance ratios against a full SVD.
# umap-learn is not packaged in Debian 12: UMAP rows have no baseline and compare their trustworthiness with
# sklearn's t-SNE of the same points instead.
#   bash bench/geometry.sh [BUILD_DIR]       ROWS="pca tsne umap tsne_neurons" by default
# One function per row (row_<name>): add a row for another analyzer (kmeans, probes, ...) and list it in ROWS.
# shellcheck source=bench/geometry_common.sh
. "$(dirname "$0")/geometry_common.sh"
TOKENS=${TOKENS:-10240}
NEURON_TOKENS=${NEURON_TOKENS:-2048}
MLP=${MLP:-blocks.6.mlp.hook_post}
TRUST_SAMPLE=${TRUST_SAMPLE:-5000}
ROWS=${ROWS:-pca tsne umap tsne_neurons}
base="$py bench/geometry_baseline.py"
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
# sklearn's OpenMP threads sleep instead of spinning between parallel regions: on a shared machine spinning
# made its t-SNE 7x slower (78 s vs 11 s for 1,024 points at load 13); on an idle one the difference is noise.
export OMP_WAIT_POLICY=PASSIVE
field() { $py -c "import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {'d': d}))" "$1" "$2"; }
# fmt FORMAT EXPR...: printf-style formatting of arithmetic expressions ("%.1fx" "12.0/3.1").
fmt() { $py -c "import sys; print(sys.argv[1] % tuple(eval(v, {}) for v in sys.argv[2:]))" "$@"; }

# nscope_run NAME TOKENS HOOK ANALYSES EXPORTS: one run over TOKENS random tokens (128 per prompt); prints its
# run directory.
nscope_run() {
  local name=$1 tokens=$2 hook=$3 analyses=$4 exports=$5
  [ -f "$WORK/ids_$tokens.npy" ] || $py -c "import numpy as np; np.save('$WORK/ids_$tokens.npy', \
    np.random.RandomState(0).randint(0, 50257, size=($tokens // 128, 128)).astype(np.int64))"
  cat > "$WORK/$name.yaml" <<YAML
name: $name
seed: 0
model: { path: $model_abs }
prompts: [ { ids_file: $WORK/ids_$tokens.npy } ]
batch_size: 8
hooks: [ "$hook" ]
analyses: $analyses
exports: $exports
YAML
  "$BUILD_DIR/bin/nscope" --threads "$THREADS" run "$WORK/$name.yaml" --out "$WORK/runs" 2>/dev/null
}
# Seconds the run spent in its (single) analyzer: consume during the pass + finish.
analyzer_seconds() { field "$1/manifest.json" "d['models'][0]['timings']['consume1_s'] + d['models'][0]['timings']['finish1_s']"; }
# The token points of HOOK over TOKENS tokens as [tokens, width] float32, exported once.
points() {
  if [ ! -f "$WORK/x.npy" ]; then
    local run
    run=$(nscope_run export "$TOKENS" "$HOOK" "[]" "[ { use: activations } ]")
    $base tokens "$run/activations/$HOOK.npy" "$run/activations/attention_mask.npy" "$WORK/x.npy"
  fi
  echo "$WORK/x.npy"
}
# sklearn's PCA(50) + TSNE of the token points, once (the t-SNE and UMAP rows both compare with it).
sklearn_tsne() {
  [ -f "$WORK/sk_tsne.json" ] || $base tsne "$(points)" "$WORK/sk_tsne.npy" --threads "$THREADS" > "$WORK/sk_tsne.json"
}
# trust X Y: sklearn's trustworthiness of map Y of X on TRUST_SAMPLE seeded rows.
trust() { field <($base trust "$1" "$2" --sample "$TRUST_SAMPLE") "d['trustworthiness']"; }
row() { printf "%-40s %9s %9s %9s  %s\n" "$@"; }

row_pca() {
  local x run ns sk
  x=$(points)
  run=$(nscope_run pca "$TOKENS" "$HOOK" "[ { id: p, use: pca, hooks: [ \"$HOOK\" ], k: 50, points: 0 } ]" "[ json ]")
  ns=$(analyzer_seconds "$run")
  $base pca "$x" "$WORK/sk_evr.npy" > "$WORK/sk_pca.json"
  sk=$(field "$WORK/sk_pca.json" "d['seconds']")
  $base evr "$x" "$run/results/p.$HOOK.explained_variance_ratio.npy" "$WORK/sk_evr.npy" > "$WORK/evr.json"
  row "PCA k=50, $TOKENS x 768" "$(fmt %.2f "$ns")" "$(fmt %.2f "$sk")" "$(fmt %.1fx "$sk/$ns")" \
    "max |EVR - full SVD|: nscope $(fmt %.1e "$(field "$WORK/evr.json" "d['nscope']")"), sklearn ($(field \
    "$WORK/sk_pca.json" "d['solver']")) $(fmt %.1e "$(field "$WORK/evr.json" "d['sklearn']")")"
}

# embed_row NAME PARAMS: nscope's map of every token point; prints "seconds trustworthiness".
embed_map() {
  local run
  run=$(nscope_run "$1" "$TOKENS" "$HOOK" "[ { id: m, use: embed, hooks: [ \"$HOOK\" ], max_points: $TOKENS, \
trust_points: 0, $2 } ]" "[ json ]")
  $py -c "import numpy as np; assert np.load('$run/results/m.$HOOK.points.npy').shape[0] == $TOKENS"
  echo "$(analyzer_seconds "$run") $(trust "$(points)" "$run/results/m.$HOOK.embedding.npy")"
}

row_tsne() {
  local ns nt sk st
  read -r ns nt <<< "$(embed_map tsne "method: tsne, perplexity: 30, pca: 50")"
  sklearn_tsne
  sk=$(field "$WORK/sk_tsne.json" "d['seconds']")
  st=$(trust "$(points)" "$WORK/sk_tsne.npy")
  row "t-SNE (PCA 50, BH 0.5), $TOKENS pts" "$(fmt %.1f "$ns")" "$(fmt %.1f "$sk")" "$(fmt %.1fx "$sk/$ns")" \
    "trustworthiness nscope $(fmt %.4f "$nt"), sklearn $(fmt %.4f "$st") (diff $(fmt %+.4f "$nt-$st"))"
}

row_umap() {
  local ns nt st
  read -r ns nt <<< "$(embed_map umap "method: umap, neighbors: 15, pca: 50")"
  sklearn_tsne
  st=$(trust "$(points)" "$WORK/sk_tsne.npy")
  row "UMAP (PCA 50, 15 nb), $TOKENS pts" "$(fmt %.1f "$ns")" "n/a" "-" \
    "trustworthiness $(fmt %.4f "$nt") vs sklearn t-SNE $(fmt %.4f "$st") (umap-learn is not in Debian 12)"
}

row_tsne_neurons() {
  local run ns nt sk st
  run=$(nscope_run neurons_export "$NEURON_TOKENS" "$MLP" "[]" "[ { use: activations } ]")
  $base profiles "$run/activations/$MLP.npy" "$run/activations/attention_mask.npy" "$WORK/profiles.npy"
  run=$(nscope_run neurons "$NEURON_TOKENS" "$MLP" "[ { id: m, use: embed, hooks: [ \"$MLP\" ], method: tsne, \
points: neurons, profile_tokens: $NEURON_TOKENS, max_points: 3072, trust_points: 0, pca: 50 } ]" "[ json ]")
  ns=$(analyzer_seconds "$run")
  nt=$(trust "$WORK/profiles.npy" "$run/results/m.$MLP.embedding.npy")
  $base tsne "$WORK/profiles.npy" "$WORK/sk_neurons.npy" --threads "$THREADS" > "$WORK/sk_neurons.json"
  sk=$(field "$WORK/sk_neurons.json" "d['seconds']")
  st=$(trust "$WORK/profiles.npy" "$WORK/sk_neurons.npy")
  row "t-SNE of 3072 neurons x $NEURON_TOKENS tokens" "$(fmt %.1f "$ns")" "$(fmt %.1f "$sk")" "$(fmt %.1fx "$sk/$ns")" \
    "trustworthiness nscope $(fmt %.4f "$nt"), sklearn $(fmt %.4f "$st") (diff $(fmt %+.4f "$nt-$st"))"
}

echo "threads $THREADS; sklearn $($py -c 'import sklearn; print(sklearn.__version__)'); trustworthiness on" \
  "$TRUST_SAMPLE seeded rows (all rows when fewer); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
row analysis "nscope s" "sklearn s" "speed-up" quality
for r in $ROWS; do "row_$r"; done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
