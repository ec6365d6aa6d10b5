#!/usr/bin/env bash
# Installs exactly the Debian 12 packages NeuronScope needs to build, test and benchmark.
# Run as root (or with sudo). Safe to re-run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev            # model execution (LibTorch 1.13)
  libopenblas0-openmp     # fast BLAS for LibTorch; NOT libopenblas0-pthread (fights OpenMP threads)
  liblua5.4-dev           # experiment scripts
  libboost-dev libboost-filesystem-dev  # Boost.DLL plugin loading
  libyaml-cpp-dev         # recipes
  libeigen3-dev           # SDK activation views
  libspectra-dev          # embed: top eigenvectors (Lanczos) for its PCA step
  libhnswlib-dev          # embed: approximate nearest neighbours (HNSW)
  libfaiss-dev            # k-means of the cluster analyzer
  libspdlog-dev           # logging
  catch2                  # tests
  nlohmann-json3-dev      # manifests, tokenizer.json
  libcli11-dev            # command line
  libpcre2-dev            # tokenizer regex pre-tokenizers
  libsqlite3-dev          # neuron database exporter
  chromium                # headless browser: the report.html and nscope serve tests render the pages
  libcpp-httplib-dev      # nscope serve (HTTP server)
  munge slurmctld slurmd slurm-client  # the [slurm] test starts a single-node Slurm (scripts/slurm/local-cluster.sh)
)
if [ "${NSCOPE_WITH_FUZZ:-0}" = 1 ]; then
  # scripts/fuzz.sh: clang 16 (clang 14 rejects C++20 parts of the host in the C++17 fuzz build), libFuzzer
  # and the sanitizer runtimes, llvm-symbolizer for readable reports
  packages+=(clang-16 libclang-rt-16-dev llvm-16)
fi
if [ "${NSCOPE_WITH_BENCH:-0}" = 1 ]; then
  packages+=(python3-torch python3-numpy python3-sklearn time)   # bench/run.sh, bench/analysis.sh, bench/geometry*.sh
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# npm fetches plotly.js for the report exporter at build time (and test tokenizers). Only installed from
# Debian when no npm is on PATH: a NodeSource / nvm node already brings its own npm, and Debian's npm
# package would conflict with it.
if ! command -v npm >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
# Guard against the pthread OpenBLAS variant, whose thread pool fights LibTorch's OpenMP threads.
if dpkg-query -W -f='${Status}' libopenblas0-pthread 2>/dev/null | grep -q "install ok installed"; then
  echo "warning: libopenblas0-pthread is installed; LibTorch should use libopenblas0-openmp" >&2
fi
