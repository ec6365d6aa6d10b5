// The computing side of `nscope serve` (docs/serve.md): the models given on the command line, loaded through
// the same loader as `nscope run`, each behind its own mutex (one forward at a time per model; HTTP threads
// queue on it), and the JSON answers of the /api/ endpoints that need a forward. No HTTP here and no
// LibTorch in this header: server.cpp only sees JSON.
//
//   Engine engine(registry, {"models/kjv-tiny"}, "float32");
//   json j = engine.activations({{"model", "kjv-tiny"}, {"prompt", "In the beginning"}});
//
// Requests are JSON objects; a bad request throws InputError (HTTP 400) or NotFound (HTTP 404).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/error.h"

namespace nscope {

class PluginRegistry;

namespace serve {

/// An unknown model, run or file (HTTP 404).
class NotFound : public InputError {
public:
    using InputError::InputError;
};

/// A model that failed to load (HTTP 503): the server stays up and /api/models says why.
class Unavailable : public InputError {
public:
    using InputError::InputError;
};

struct EngineLimits {
    size_t max_prompt_chars = 4000;  ///< prompt text length (bytes)
    size_t max_tokens = 256;         ///< tokens per prompt (also capped by the model's context)
    int max_top = 256;               ///< neurons per layer in a heatmap
};

class Engine {
public:
    /// Loads every model now; a model that fails to load is kept with its error (status "error").
    Engine(const PluginRegistry& plugins, const std::vector<std::string>& refs, const std::string& dtype,
           EngineLimits limits = {});
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// GET /api/models: name, ref, status ("ready" / "error"), error, info, hook suffixes.
    nlohmann::json models() const;
    /// The JSON descriptions of the ready models' architectures, by name (for matching neuron databases).
    nlohmann::json model_info(const std::string& name) const;

    nlohmann::json tokenize(const nlohmann::json& req);
    /// Per layer, a token x neuron heatmap of the top-N most active / most variable neurons at a hook.
    nlohmann::json activations(const nlohmann::json& req);
    /// One neuron on the prompt: values per token, stats, histogram, top tokens / n-grams, direct logit effect.
    nlohmann::json neuron(const nlohmann::json& req);
    /// Attention patterns per layer / head and the `heads` analyzer's scores for the prompt.
    nlohmann::json attention(const nlohmann::json& req);
    /// The `logit_lens` analyzer on the prompt (its grid figure and tables).
    nlohmann::json logit_lens(const nlohmann::json& req);
    /// Interventions (the recipe / Lua table form) -> next-token top tokens before / after, KL.
    nlohmann::json edit(const nlohmann::json& req);

    const EngineLimits& limits() const { return limits_; }

    struct Slot;  // one model (engine.cpp)

private:
    Slot& slot(const nlohmann::json& req);

    const PluginRegistry& plugins_;
    EngineLimits limits_;
    std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace serve
}  // namespace nscope
