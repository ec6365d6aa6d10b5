#include "core/model/interventions.h"

#include "core/model/hook_match.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {

const std::vector<std::string>& intervention_ops() {
    static const std::vector<std::string> ops = {"zero", "mean", "scale", "set", "clamp_range", "mask_range", "add",
                                                 "patch"};
    return ops;
}

namespace {

int head_axis(const HookPoint& h) {
    for (size_t i = 0; i < h.dims.size(); ++i)
        if (h.dims[i] == "head" || h.dims[i] == "kv_head") return static_cast<int>(i);
    return -1;
}

std::string ints(const std::vector<int64_t>& v) {
    std::vector<std::string> s;
    for (auto x : v) s.push_back(std::to_string(x));
    return "[" + join(s, ", ") + "]";
}

}  // namespace

void validate_intervention(const std::vector<HookPoint>& hooks, const InterventionSpec& spec) {
    const std::string what = "intervention {hook: " + spec.hook + ", op: " + spec.op + "}";
    const auto& ops = intervention_ops();
    if (std::find(ops.begin(), ops.end(), spec.op) == ops.end())
        throw InputError(what + ": unknown op '" + spec.op + "'" + did_you_mean(spec.op, ops) +
                         ". Supported: " + join(ops, ", "));
    const auto names = match_hooks(hooks, {spec.hook});  // throws with "did you mean"
    for (const auto& name : names) {
        const auto it = std::find_if(hooks.begin(), hooks.end(), [&](const HookPoint& h) { return h.name == name; });
        const HookPoint& h = *it;
        const int64_t last = h.sizes.empty() ? -1 : h.sizes.back();
        for (int64_t n : spec.neurons)
            if (n < 0 || (last > 0 && n >= last))
                throw InputError(what + ": neuron index " + std::to_string(n) + " is out of range for " + h.name +
                                 " " + hook_shape_string(h) + " (valid: 0.." +
                                 (last > 0 ? std::to_string(last - 1) : std::string("?")) + ")");
        if (!spec.heads.empty()) {
            const int ax = head_axis(h);
            if (ax < 0)
                throw InputError(what + ": " + h.name + " " + hook_shape_string(h) +
                                 " has no head dimension; `heads` applies to attn.hook_q/k/v/z/attn_scores/pattern");
            for (int64_t hd : spec.heads)
                if (hd < 0 || hd >= h.sizes[static_cast<size_t>(ax)])
                    throw InputError(what + ": head index " + std::to_string(hd) + " is out of range for " + h.name +
                                     " (" + std::to_string(h.sizes[static_cast<size_t>(ax)]) + " heads: 0.." +
                                     std::to_string(h.sizes[static_cast<size_t>(ax)] - 1) + ")");
        }
        auto check_vec = [&](size_t n, const char* field) {
            const size_t want = spec.neurons.empty() ? static_cast<size_t>(last) : spec.neurons.size();
            if (last > 0 && n != want)
                throw InputError(what + ": `" + field + "` has " + std::to_string(n) + " values but " +
                                 (spec.neurons.empty() ? "the last dimension of " + h.name + " has "
                                                       : std::string("`neurons` selects ")) +
                                 std::to_string(want));
        };
        if (spec.op == "add") check_vec(spec.vector.size(), "vector");
        if (spec.op == "mean") check_vec(spec.mean_values.size(), "mean_values");
    }
    if (spec.op == "patch" && !spec.source_prompt)
        throw InputError(what + ": patch needs `source_prompt` (the prompt whose clean run supplies the values)");
    if (spec.op == "patch" && *spec.source_prompt < 0)
        throw InputError(what + ": source_prompt must be >= 0");
    if ((spec.op == "clamp_range" || spec.op == "mask_range") && spec.lo > spec.hi)
        throw InputError(what + ": lo (" + std::to_string(spec.lo) + ") is greater than hi (" + std::to_string(spec.hi) +
                         ")");
    for (int64_t p : spec.prompts)
        if (p < 0) throw InputError(what + ": prompt index " + std::to_string(p) + " is negative");
    (void)ints;
}

InterventionSpec intervention_from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw InputError("an intervention must be an object, got " + j.dump());
    static const std::vector<std::string> keys = {"hook", "op", "neurons", "heads", "positions", "prompts", "value",
                                                  "factor", "lo", "hi", "range", "vector", "source_prompt",
                                                  "mean_values"};
    for (auto it = j.begin(); it != j.end(); ++it)
        if (std::find(keys.begin(), keys.end(), it.key()) == keys.end())
            throw InputError("intervention: unknown key '" + it.key() + "'" + did_you_mean(it.key(), keys));
    InterventionSpec s;
    s.raw = j;
    try {
        if (!j.contains("hook") || !j.contains("op")) throw InputError("intervention needs `hook` and `op`: " + j.dump());
        s.hook = j.at("hook").get<std::string>();
        s.op = j.at("op").get<std::string>();
        if (j.contains("neurons")) s.neurons = j["neurons"].get<std::vector<int64_t>>();
        if (j.contains("heads")) s.heads = j["heads"].get<std::vector<int64_t>>();
        if (j.contains("positions")) s.positions = j["positions"].get<std::vector<int64_t>>();
        if (j.contains("prompts")) s.prompts = j["prompts"].get<std::vector<int64_t>>();
        if (j.contains("value")) s.value = j["value"].get<double>();
        if (j.contains("factor")) s.factor = j["factor"].get<double>();
        if (j.contains("lo")) s.lo = j["lo"].get<double>();
        if (j.contains("hi")) s.hi = j["hi"].get<double>();
        if (j.contains("range")) {
            const auto r = j["range"].get<std::vector<double>>();
            if (r.size() != 2) throw InputError("intervention: `range` must be [lo, hi]");
            s.lo = r[0], s.hi = r[1];
        }
        if (j.contains("vector")) s.vector = j["vector"].get<std::vector<float>>();
        if (j.contains("mean_values")) s.mean_values = j["mean_values"].get<std::vector<float>>();
        if (j.contains("source_prompt")) s.source_prompt = j["source_prompt"].get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
        throw InputError("intervention " + j.dump() + ": wrong type: " + e.what());
    }
    return s;
}

}  // namespace nscope
