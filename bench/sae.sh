#!/usr/bin/env bash
# SAE training throughput: nscope (core/train/sae_trainer.cpp) vs the same TopK SAE step in PyTorch
# (bench/sae_torch.py, Debian python3-torch), THREADS threads each, in one run, ratio printed. Two shapes:
# the bundled model's residual stream (d 256, 2,048 latents) and a GPT-2-small-shaped hook (d 768, 6,144
# latents), k 32, BATCH tokens per step, STEPS steps, on Gaussian activations (the SAE step does not depend on
# their values). Then `nscope train-sae` end to end on the bundled model (forward to the hook included).
#   bash bench/sae.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
THREADS=${THREADS:-1}
BATCH=${BATCH:-1024}
STEPS=${STEPS:-40}
py=/usr/bin/python3
ninja -C "$BUILD_DIR" -j2 nscope nscope_bench_sae nscope_builtin_plugins >/dev/null
export OMP_NUM_THREADS=$THREADS
rate() { sed -n 's/^tokens\/s \([0-9.]*\).*/\1/p'; }
printf "%-28s %12s %12s %8s\n" "shape" "nscope tok/s" "torch tok/s" "ratio"
for shape in "256 2048" "768 6144"; do
  set -- $shape
  ns=$("$BUILD_DIR/bin/nscope_bench_sae" --d-in "$1" --latents "$2" --k 32 --batch "$BATCH" --steps "$STEPS" --threads "$THREADS" 2>/dev/null | rate)
  pt=$($py bench/sae_torch.py "$1" "$2" 32 "$BATCH" "$STEPS" "threads=$THREADS" | rate)
  printf "%-28s %12.0f %12.0f %7.2fx\n" "d $1, latents $2, k 32" "$ns" "$pt" "$($py -c "print($ns / $pt)")"
done
out=$(mktemp -d)
"$BUILD_DIR/bin/nscope" --threads "$THREADS" train-sae models/kjv-tiny --hook blocks.2.hook_resid_post \
  --data /usr/share/common-licenses/GPL-3 --out "$out/sae" --latents 2048 --k 32 --steps "$STEPS" \
  --batch-tokens "$BATCH" 2>/dev/null | grep -E "tokens/s|explained|loss"
rm -rf "$out"
