#!/usr/bin/env bash
# Geometry rows for probes and k-means: nscope's `probe` and `cluster` (method kmeans) against scikit-learn
# (Debian python3-sklearn) on the same activations, 2 threads each:
#   probe   — LogisticRegression(penalty="elasticnet", solver="saga") vs nscope's FISTA probe, same points,
#             same train / test split; time ratio and held-out accuracy difference;
#   kmeans  — KMeans(n_init=10) vs faiss k-means in `cluster`, the same standardised neuron profiles; time ratio,
#             inertia ratio, silhouette difference, adjusted Rand index between the two labelings.
# Activations of the GPT-2-small-shaped bench model over 80 prompts x 128 tokens (10,240 tokens): the probe on
# blocks.6.hook_resid_post (768 wide), k-means on its 768 neurons and on the 3072 of blocks.6.mlp.hook_post. The label is a "topic": half the tokens of a prompt of topic c come from 100 ids of
# that topic, the other half from 1000 ids all topics share (so the label is in the token at some positions,
# and in the context at the others).
# nscope's time is its share of the run (consume + finish of the analysis, from the manifest of a run with that
# analysis alone); scikit-learn's is its fit and scoring on the exported activations (loading not counted).
#   bash bench/geometry_probe.sh [BUILD_DIR]          (THREADS=2 by default)
# shellcheck source=bench/geometry_common.sh
. "$(dirname "$0")/geometry_common.sh"
KMEANS_HOOKS=${KMEANS_HOOKS:-blocks.6.hook_resid_post blocks.6.mlp.hook_post}
K=${K:-16}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS

# 4 topics x 20 prompts x 128 tokens: each token is, with probability 1/2, one of 100 ids of its prompt's topic
# (topic c: ids [c * 12500, c * 12500 + 100)), else one of 1000 ids shared by all topics.
$py - "$WORK" <<'PY'
import sys
import numpy as np
work = sys.argv[1]
rng = np.random.RandomState(0)
for c in range(4):
    own = c * 12500 + rng.randint(0, 100, size=(20, 128))
    shared = 40000 + rng.randint(0, 1000, size=(20, 128))
    np.save(f"{work}/ids{c}.npy", np.where(rng.rand(20, 128) < 0.5, own, shared).astype(np.int64))
np.save(f"{work}/classes.npy", np.repeat(np.arange(4), 20))
PY
run() {  # run NAME ANALYSES_YAML EXPORTS HOOKS -> run directory
  cat > "$WORK/$1.yaml" <<YAML
name: $1
seed: 0
model: { path: $model_abs }
prompts:
  - { ids_file: $WORK/ids0.npy, labels: { topic: c0 } }
  - { ids_file: $WORK/ids1.npy, labels: { topic: c1 } }
  - { ids_file: $WORK/ids2.npy, labels: { topic: c2 } }
  - { ids_file: $WORK/ids3.npy, labels: { topic: c3 } }
batch_size: 8
hooks: $4
analyses: $2
exports: $3
YAML
  "$BUILD_DIR/bin/nscope" --threads "$THREADS" run "$WORK/$1.yaml" --out "$WORK/runs" 2>/dev/null
}
hooks_yaml="[ $(for h in $HOOK $KMEANS_HOOKS; do printf '"%s", ' "$h"; done) ]"
export_dir=$(run export "[]" "[ activations ]" "$hooks_yaml")
probe_dir=$(run probe "[ { id: probe, use: probe, label: topic, max_points: 20000, control: false } ]" "[ json ]" \
  "[ \"$HOOK\" ]")
ln -s "$export_dir/activations" "$probe_dir/activations"
$py bench/geometry_probe_baseline.py probe "$probe_dir" "$HOOK" "$WORK/classes.npy" --threads "$THREADS" > "$WORK/probe32.json"
$py bench/geometry_probe_baseline.py probe "$probe_dir" "$HOOK" "$WORK/classes.npy" --threads "$THREADS" --float64 \
  > "$WORK/probe64.json"
kmeans_dirs=()
for h in $KMEANS_HOOKS; do
  d=$(run "kmeans-$h" "[ { id: kmeans, use: cluster, method: kmeans, k: $K, n_init: 10, points: 20000 } ]" "[ json ]" \
    "[ \"$h\" ]")
  ln -s "$export_dir/activations" "$d/activations"
  $py bench/geometry_probe_baseline.py kmeans "$d" "$h" --k "$K" --n-init 10 --threads "$THREADS" > "$d/sklearn.json"
  kmeans_dirs+=("$d")
done

$py - "$WORK" "$probe_dir" "${kmeans_dirs[@]}" <<'PY'
import json, sys
work, probe_dir, kmeans_dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
def nscope_seconds(d):
    t = json.load(open(f"{d}/manifest.json"))["models"][0]["timings"]
    return t["consume1_s"] + t["finish1_s"]
print(f"{'row':<46} {'nscope s':>9} {'sklearn s':>9} {'speed-up':>9}  quality")
ns = nscope_seconds(probe_dir)
for name in ("probe32", "probe64"):
    r = json.load(open(f"{work}/{name}.json"))
    print(f"{'probe vs LogisticRegression saga, ' + r['dtype']:<46} {ns:9.2f} {r['seconds']:9.2f} "
          f"{r['seconds'] / ns:8.1f}x  accuracy {r['nscope_accuracy']:.4f} vs {r['accuracy']:.4f} "
          f"({100 * (r['nscope_accuracy'] - r['accuracy']):+.2f} points); iterations {r['nscope_iterations']} "
          f"(converged {r['nscope_converged']}) vs saga epochs {r['n_iter']} (converged {r['converged']}); "
          f"{r['points']} points, {r['test']} held out")
for d in kmeans_dirs:
    ks = nscope_seconds(d)
    r = json.load(open(f"{d}/sklearn.json"))
    name = f"kmeans vs KMeans, {r['neurons']} neurons x {r['profile_points']}"
    print(f"{name:<46} {ks:9.2f} {r['seconds']:9.2f} {r['seconds'] / ks:8.1f}x  "
          f"inertia {r['nscope_inertia']:.2f} vs {r['inertia']:.2f} (ratio {r['nscope_inertia'] / r['inertia']:.4f}); "
          f"silhouette {r['nscope_silhouette']:.4f} vs {r['silhouette']:.4f}; adjusted Rand {r['adjusted_rand']:.3f}")
PY
