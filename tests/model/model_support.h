// Test support for the model runtime: the plugin registry, the fixture models and oracle comparisons.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/model/model_loader.h"
#include "core/model/session.h"
#include "core/plugin/registry.h"

// ATen pulls in glog, whose CHECK macro (abort on failure) would shadow Catch's CHECK: drop it here and
// include this header before <catch2/catch.hpp>.
#ifdef TWOBLUECUBES_CATCH_HPP_INCLUDED
#error "include tests/model/model_support.h before <catch2/catch.hpp>"
#endif
#undef CHECK

namespace nscope::test {

/// The plugins of this build (scanned once).
const PluginRegistry& registry();

/// tests/fixtures/models/<name>
std::string fixture_model(const std::string& name);

/// An oracle .npy of a fixture model as a tensor (float32 or int64).
at::Tensor oracle(const std::string& model, const std::string& file);

/// The fixture's prompts: token ids per row without padding (and token types, BERT).
std::vector<std::vector<int64_t>> oracle_rows(const std::string& model, const std::string& file = "input_ids.npy");

/// Max |a - b| over valid positions: `pos_axis` of both tensors is indexed by mask [b, p] (1 = valid).
double max_abs_valid(const at::Tensor& a, const at::Tensor& b, const at::Tensor& mask, int64_t pos_axis);

}  // namespace nscope::test
