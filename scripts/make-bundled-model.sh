#!/usr/bin/env bash
# Reproduce the bundled model models/kjv-tiny from public-domain text that Debian ships:
# the King James Bible (package bible-kjv). Deterministic for the same seed and thread count.
#   bash scripts/make-bundled-model.sh [BUILD_DIR]      (about 8 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:-build}
NSCOPE="$BUILD_DIR/bin/nscope"
WORK=${WORK:-$BUILD_DIR/bundled-model}
mkdir -p "$WORK"
if ! command -v bible >/dev/null; then
  apt-get install -y -qq --no-install-recommends bible-kjv >/dev/null
fi
# The whole text, one verse per line, without the "Ge1:1 " references.
bible -f -l100000 Gen1:1-Rev22:21 | sed 's/^[0-9]*[A-Za-z]*[0-9]*:[0-9]* //' > "$WORK/kjv.txt"
"$NSCOPE" --threads 2 train --data "$WORK/kjv.txt" --out "$WORK/kjv-tiny" \
  --vocab 4096 --layers 4 --d-model 256 --heads 4 --context 128 \
  --steps 1200 --batch-size 16 --lr 2e-3 --warmup 100 --seed 0 --save-dtype bfloat16
mkdir -p models/kjv-tiny
cp "$WORK/kjv-tiny/config.json" "$WORK/kjv-tiny/model.safetensors" "$WORK/kjv-tiny/tokenizer.json" models/kjv-tiny/
echo "models/kjv-tiny updated"
