// NeuronScope SDK — plain views of activations as analyzers and exporters see them.
//
// No LibTorch here: the host converts every observed hook tensor to a contiguous row-major float32 CPU
// buffer and hands plugins a view of it (pointer + shape + dtype). Views are valid only during the call
// they are passed to (`consume`); copy what you need to keep.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace nscope {

enum class DType : uint8_t { Float32 = 0, Int64 = 1 };

/// A read-only, contiguous, row-major tensor view.
struct ActivationView {
    const void* data = nullptr;
    DType dtype = DType::Float32;
    std::vector<int64_t> shape;  ///< e.g. [b, p, d_mlp] for `blocks.3.mlp.hook_post`

    const float* f32() const { return static_cast<const float*>(data); }
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        return n;
    }
    /// Size of the last dimension (neurons / features); 1 for a scalar.
    int64_t inner() const { return shape.empty() ? 1 : shape.back(); }
    /// Product of all dimensions but the last (rows of the [rows, inner] matrix view).
    int64_t outer() const { return inner() == 0 ? 0 : numel() / inner(); }
};

/// One prompt of the run, as the recipe / script declared it.
struct PromptInfo {
    size_t index = 0;                 ///< global prompt index in the run (0-based)
    std::string text;                 ///< empty when given as token ids
    nlohmann::json labels;            ///< {"sense": "river"}, or null
    std::vector<std::string> tokens;  ///< token strings, one per valid position
};

/// One captured hook in a batch.
struct NamedActivation {
    std::string hook;  ///< canonical hook name, e.g. "blocks.0.mlp.hook_post"
    ActivationView view;
};

/// A batch of prompts after the forward pass. Rows are right-padded; `attention_mask` says which
/// positions are real. Activation values at padded positions are zero.
struct Batch {
    /// The model this batch came from: its index in RunContext::models for an analyzer that spans the models
    /// of a `models:` run (Analyzer::spans_models); 0 everywhere else.
    size_t model = 0;
    size_t rows = 0;
    size_t positions = 0;
    const int64_t* input_ids = nullptr;       ///< [rows, positions]
    const int64_t* attention_mask = nullptr;  ///< [rows, positions], 1 = real token
    std::vector<const PromptInfo*> prompts;   ///< one per row
    std::vector<NamedActivation> activations;
    /// With a recipe `gradient:`: d(metric summed over rows)/d(activation) per captured hook, same shapes.
    std::vector<NamedActivation> gradients;

    /// The activation for `hook`, or nullptr when that hook was not captured.
    const ActivationView* find(std::string_view hook) const {
        for (const auto& a : activations)
            if (a.hook == hook) return &a.view;
        return nullptr;
    }
    /// The gradient at `hook`, or nullptr when no gradient was asked for.
    const ActivationView* find_gradient(std::string_view hook) const {
        for (const auto& a : gradients)
            if (a.hook == hook) return &a.view;
        return nullptr;
    }
    bool valid(size_t row, size_t pos) const { return attention_mask[row * positions + pos] != 0; }
    size_t length(size_t row) const {
        size_t n = 0;
        for (size_t p = 0; p < positions; ++p) n += valid(row, p) ? 1 : 0;
        return n;
    }
};

}  // namespace nscope
