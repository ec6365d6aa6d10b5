// From a path or hub id to a running model: resolve the files, pick the adapter plugin by config.json,
// describe the model (no weights read), then load the weights.
//
//   PluginRegistry reg; reg.scan(PluginRegistry::search_path({}));
//   ModelHandle h = describe_model(reg, "gpt2");          // info + hook points, for validating recipes
//   LoadedModel m = load_model(reg, "gpt2", {at::kFloat});
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/model/model_files.h"
#include "core/plugin/registry.h"
#include "nscope/model_adapter.h"

namespace nscope {

struct ModelHandle {
    ModelFiles files;
    const LoadedPlugin* plugin = nullptr;
    std::shared_ptr<ModelFactory> factory;
    ModelInfo info;
    std::vector<HookPoint> hooks;  ///< from config.json alone, no weights read

    /// The hook point of that canonical name, or null.
    const HookPoint* hook(std::string_view name) const;
};

/// Resolve the model and pick its adapter. Unknown architecture -> InputError listing the supported ones.
ModelHandle describe_model(const PluginRegistry& registry, const std::string& path_or_id);

/// The same for an already-resolved folder (or a config built in memory: `files.dir` may be empty).
ModelHandle describe_model_files(const PluginRegistry& registry, ModelFiles files);

struct LoadedModel {
    ModelHandle handle;
    std::shared_ptr<WeightSource> weights;  ///< the safetensors (null for a randomly initialised model)
    std::unique_ptr<ModelAdapter> adapter;
    ModelOptions options;  ///< as loaded (compute dtype)
};

/// Describe, open the safetensors (mmap) and build the adapter.
LoadedModel load_model(const PluginRegistry& registry, const std::string& path_or_id, const ModelOptions& options);

/// A model with fresh random weights from a config (training from scratch).
LoadedModel init_random_model(const PluginRegistry& registry, const nlohmann::json& config, uint64_t seed,
                              const ModelOptions& options);

/// The dtypes a model runs in: "float32" / "bfloat16" (also "fp32", "bf16") set the compute dtype; "int8"
/// (also "qint8") keeps float32 compute with int8 linear weights (ModelOptions::int8_weights). InputError
/// otherwise, listing them.
ModelOptions parse_model_dtype(const std::string& s);

/// The canonical name of a model dtype ("float32", "bfloat16", "int8").
std::string model_dtype_name(const ModelOptions& o);

/// The model dtype names recipes, scripts and the CLI accept.
inline const std::vector<std::string>& model_dtype_names() {
    static const std::vector<std::string> names{"float32", "bfloat16", "int8"};
    return names;
}

}  // namespace nscope
