#!/usr/bin/env bash
# Install dependencies, build nscope and run the main job.
#   bash scripts/quickstart.sh      # from the repository root, as root on Debian 12
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNSCOPE_BUILD_TESTS=OFF
cmake --build "$BUILD_DIR" -j "$(nproc)"
"$BUILD_DIR/bin/nscope" --version
"$BUILD_DIR/bin/nscope" plugins
