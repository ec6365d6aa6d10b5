// NeuronScope SDK — everything a third-party analyzer or exporter needs. No LibTorch: this compiles in
// seconds. (Model adapters also include "nscope/model_adapter.h", which pulls in ATen.)
//
// A minimal analyzer plugin, complete:
//
//   #include <nscope/sdk.h>
//
//   // Counts the real tokens of the run.
//   class TokenCount : public nscope::Analyzer {
//   public:
//       void begin(const nscope::RunContext&) override {}
//       void consume(const nscope::Batch& b) override {
//           for (size_t r = 0; r < b.rows; ++r) tokens_ += b.length(r);
//       }
//       nscope::Result finish() override {
//           nscope::Result r;
//           r.data["tokens"] = tokens_;
//           return r;
//       }
//       bool mergeable() const override { return true; }
//       void merge(const nscope::Analyzer& o) override {
//           tokens_ += static_cast<const TokenCount&>(o).tokens_;
//       }
//   private:
//       size_t tokens_ = 0;
//   };
//   NSCOPE_ANALYZER_PLUGIN(TokenCount, "token-count", "1.0.0", "counts real tokens")
//
// Build it with CMake:
//
//   find_package(NeuronScope REQUIRED)
//   nscope_add_plugin(token_count SOURCES token_count.cpp)
//
// and point the host at the build folder: `nscope plugins --plugin-path build/` (or NSCOPE_PLUGIN_PATH).
// Use it from a recipe: `analyses: [ { id: n, use: token-count } ]`.
#pragma once

#include "nscope/activation.h"
#include "nscope/analyzer.h"
#include "nscope/error.h"
#include "nscope/exporter.h"
#include "nscope/hook.h"
#include "nscope/host.h"
#include "nscope/io.h"
#include "nscope/plugin.h"
#include "nscope/result.h"
#include "nscope/state.h"
#include "nscope/version.h"
