#!/usr/bin/env bash
# Install dependencies, build nscope and run the quickstart study on the bundled model (offline), then make
# a short fine-tuning series of it on Debian's fortunes and show the activation drift (SKIP_DRIFT=1 skips).
#   bash scripts/quickstart.sh      # from the repository root, as root on Debian 12
# Prints the run directory; open its report.html in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSCOPE_BUILD_TESTS=OFF
cmake --build "$BUILD_DIR" -j "$(nproc)" --target nscope nscope_builtin_plugins
"$BUILD_DIR/bin/nscope" --version
run_dir=$("$BUILD_DIR/bin/nscope" run configs/quickstart.yaml)
echo
echo "Done. Open the report:   $run_dir/report.html"
echo "Results (JSON/CSV/npy):  $run_dir/results/"
echo "Neuron database:         $run_dir/results/neurons.sqlite"
if [ "${SKIP_DRIFT:-0}" != 1 ]; then
  echo
  echo "Fine-tuning series for drift studies (kjv-tiny on fortunes, ~2 minutes):"
  bash scripts/make-finetune-series.sh "$BUILD_DIR" "$BUILD_DIR/kjv-fortunes"
  "$BUILD_DIR/bin/nscope" script scripts/lua/drift.lua -- models/kjv-tiny \
    "$BUILD_DIR/kjv-fortunes/checkpoint-50" "$BUILD_DIR/kjv-fortunes/checkpoint-100" "$BUILD_DIR/kjv-fortunes"
  # The drift and cka analyzers over the base and the series, in lockstep (results in the run's top level).
  S="$(cd "$BUILD_DIR/kjv-fortunes" && pwd)"
  "$BUILD_DIR/bin/nscope" run configs/drift.yaml --set "models=[{path: $PWD/models/kjv-tiny, label: base}, \
{path: $S/checkpoint-50, label: step-50}, {path: $S/checkpoint-100, label: step-100}, {path: $S, label: final}]"
fi
