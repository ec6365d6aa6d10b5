#include "core/model/model_loader.h"

#include <set>

#include "core/model/safetensors.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {

const HookPoint* ModelHandle::hook(std::string_view name) const {
    for (const auto& h : hooks)
        if (h.name == name) return &h;
    return nullptr;
}

ModelHandle describe_model_files(const PluginRegistry& registry, ModelFiles files) {
    const auto& cfg = files.config;
    const std::string where = files.dir.empty() ? std::string("config") : (files.dir / "config.json").string();
    std::vector<std::string> keys;
    if (cfg.contains("architectures") && cfg["architectures"].is_array())
        for (const auto& a : cfg["architectures"])
            if (a.is_string()) keys.push_back(a.get<std::string>());
    if (cfg.contains("model_type") && cfg["model_type"].is_string()) keys.push_back(cfg["model_type"].get<std::string>());
    if (keys.empty())
        throw InputError(where + ": neither \"architectures\" nor \"model_type\" is set, so no adapter can be chosen");

    ModelHandle h;
    std::vector<std::string> supported;
    std::set<std::string> seen;
    const auto factories = registry.model_factories();
    for (const auto& key : keys) {
        for (const auto& [plugin, factory] : factories) {
            const auto archs = factory->architectures();
            if (std::find(archs.begin(), archs.end(), key) != archs.end()) {
                h.plugin = plugin;
                h.factory = factory;
                break;
            }
        }
        if (h.factory) break;
    }
    if (!h.factory) {
        for (const auto& [plugin, factory] : factories)
            for (const auto& a : factory->architectures())
                if (seen.insert(a).second) supported.push_back(a + " (" + plugin->id + ")");
        std::vector<std::string> names(seen.begin(), seen.end());
        throw InputError(where + ": unknown architecture '" + keys.front() + "'" + did_you_mean(keys.front(), names) +
                         ". Supported: " + (supported.empty() ? std::string("none (no model plugins loaded)")
                                                              : join(supported, ", ")) +
                         ". Add an adapter plugin under plugins/models/<arch>/ to run it.");
    }
    h.files = std::move(files);
    h.info = h.factory->describe(h.files.config);
    h.info.adapter = h.plugin->id;
    h.hooks = h.factory->hook_points(h.files.config);
    return h;
}

ModelHandle describe_model(const PluginRegistry& registry, const std::string& path_or_id) {
    return describe_model_files(registry, resolve_model(path_or_id));
}

LoadedModel load_model(const PluginRegistry& registry, const std::string& path_or_id, const ModelOptions& options) {
    if (options.dtype != at::kFloat && options.dtype != at::kBFloat16)
        throw InputError("unsupported compute dtype " + std::string(c10::toString(options.dtype)) +
                         " (use float32 or bfloat16)");
    if (options.int8_weights && (options.trainable || options.dtype != at::kFloat))
        throw InputError(options.trainable ? "int8 weights are for inference only: train or fine-tune in float32 or bfloat16"
                                           : "int8 weights compute in float32; do not combine them with bfloat16");
    LoadedModel m;
    m.handle = describe_model(registry, path_or_id);
    m.weights = std::make_shared<SafetensorsWeights>(m.handle.files.weight_files, m.handle.factory->weight_naming());
    m.adapter = m.handle.factory->load(m.handle.files.config, *m.weights, options);
    m.options = options;
    return m;
}

LoadedModel init_random_model(const PluginRegistry& registry, const nlohmann::json& config, uint64_t seed,
                              const ModelOptions& options) {
    LoadedModel m;
    ModelFiles files;
    files.name = "random";
    files.config = config;
    m.handle = describe_model_files(registry, std::move(files));
    m.adapter = m.handle.factory->init_random(config, seed, options);
    m.options = options;
    return m;
}

ModelOptions parse_model_dtype(const std::string& s) {
    ModelOptions o;
    if (s == "float32" || s == "fp32" || s == "f32" || s == "float") return o;
    if (s == "bfloat16" || s == "bf16") {
        o.dtype = at::kBFloat16;
        return o;
    }
    if (s == "int8" || s == "qint8") {
        o.int8_weights = true;
        return o;
    }
    throw InputError("unknown dtype '" + s + "'" + did_you_mean(s, model_dtype_names()) +
                     " (supported: float32, bfloat16, int8 = int8 linear weights with float32 compute)");
}

std::string model_dtype_name(const ModelOptions& o) {
    if (o.int8_weights) return "int8";
    return o.dtype == at::kBFloat16 ? "bfloat16" : "float32";
}

}  // namespace nscope
