#!/usr/bin/env bash
# A fine-tuning series for drift studies: the bundled models/kjv-tiny fine-tuned on Debian's fortune
# cookies (package fortunes), with a checkpoint every 50 steps. About 2 minutes on 2 cores.
#   bash scripts/make-finetune-series.sh [BUILD_DIR] [OUT_DIR]
# then: nscope run configs/drift.yaml   (the drift and cka analyzers over base, checkpoints and final model)
# or:   nscope script scripts/lua/drift.lua -- models/kjv-tiny OUT_DIR/checkpoint-50 OUT_DIR/checkpoint-100 OUT_DIR
# Knobs (environment): STEPS (200), EVERY (50), BATCH (16), CONTEXT (128), WARMUP (20), and DATA=FILE to fine-tune on another
# text instead of the fortunes (the tests use a short series on a license text: tests/CMakeLists.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
OUT=${2:-$BUILD_DIR/kjv-fortunes}
STEPS=${STEPS:-200}
EVERY=${EVERY:-50}
BATCH=${BATCH:-16}
CONTEXT=${CONTEXT:-128}
WARMUP=${WARMUP:-20}
mkdir -p "$OUT"
if [ -n "${DATA:-}" ]; then
  cp "$DATA" "$OUT/data.txt"
else
  if [ ! -d /usr/share/games/fortunes ]; then
    apt-get install -y -qq --no-install-recommends fortunes >/dev/null
  fi
  # Every fortune file (not the .dat indexes), the '%' separators dropped.
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 | sort -z |
    xargs -0 cat | grep -v '^%$' > "$OUT/data.txt"
fi
"$BUILD_DIR/bin/nscope" --threads 2 finetune models/kjv-tiny --data "$OUT/data.txt" --out "$OUT" \
  --steps "$STEPS" --checkpoint-every "$EVERY" --batch-size "$BATCH" --context "$CONTEXT" --lr 1e-3 --warmup "$WARMUP" --seed 0
echo "fine-tuning series in $OUT: $(ls -d "$OUT"/checkpoint-* | tr '\n' ' ')and the final model"
