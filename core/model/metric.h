// Scalar metrics of a forward's output (nscope/model_access.h `Metric`): the quantity whose gradient a
// recipe, script or analyzer asks for, and the effect measure of causal analyses (ablations, patching).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "nscope/model_access.h"

namespace nscope {

/// Check a metric before any forward: known kind, the number of tokens the kind needs, token ids inside
/// the vocabulary, one token list per row when per-row. `where` prefixes messages ("gradient.metric").
void validate_metric(const Metric& m, int64_t vocab_size, size_t rows, const std::string& where);

/// The metric per row, float32 [b], differentiable through `logits` [b, p, vocab] (float32).
/// `ids` [b, p] int64 and `lengths` give each row's tokens; `reference` [b, p, vocab] holds the reference
/// logits for `kl` (undefined otherwise). Throws InputError for a position outside a row, or a `loss` over
/// a one-token row.
at::Tensor metric_per_row(const Metric& m, const at::Tensor& logits, const at::Tensor& ids,
                          const std::vector<int64_t>& lengths, const at::Tensor& reference);

}  // namespace nscope
