#include "core/sae/sae_config.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

const std::vector<std::string>& sae_architectures() {
    static const std::vector<std::string> names{"topk", "relu"};
    return names;
}

nlohmann::json SaeConfig::to_json() const {
    return {{"format", "nscope-sae"}, {"version", 1}, {"architecture", architecture}, {"d_in", d_in},
            {"latents", latents}, {"k", k}, {"l1", l1}, {"hook", hook}, {"model", model},
            {"training", training}, {"stats", stats}};
}

void SaeConfig::validate(const std::string& where) const {
    const auto& archs = sae_architectures();
    if (std::find(archs.begin(), archs.end(), architecture) == archs.end())
        throw InputError(where + ": unknown SAE architecture '" + architecture + "'" + did_you_mean(architecture, archs) +
                         " (one of " + join(archs, ", ") + ")");
    if (d_in <= 0 || latents <= 0)
        throw InputError(where + ": d_in and latents must be positive (d_in " + std::to_string(d_in) + ", latents " +
                         std::to_string(latents) + ")");
    if (architecture == "topk" && (k <= 0 || k > latents))
        throw InputError(where + ": k (" + std::to_string(k) + ") must be between 1 and the number of latents (" +
                         std::to_string(latents) + ")");
    if (l1 < 0) throw InputError(where + ": l1 must not be negative");
}

SaeConfig SaeConfig::from_json(const nlohmann::json& j, const std::string& where) {
    if (!j.is_object()) throw InputError(where + ": expected a JSON object");
    if (j.value("format", "") != "nscope-sae")
        throw InputError(where + ": not an SAE config (its \"format\" is not \"nscope-sae\"); write SAEs with `nscope train-sae`");
    SaeConfig c;
    try {
        c.architecture = j.at("architecture").get<std::string>();
        c.d_in = j.at("d_in").get<int64_t>();
        c.latents = j.at("latents").get<int64_t>();
        c.k = j.value("k", int64_t{0});
        c.l1 = j.value("l1", 0.0);
        c.hook = j.value("hook", "");
        c.model = j.value("model", nlohmann::json::object());
        c.training = j.value("training", nlohmann::json::object());
        c.stats = j.value("stats", nlohmann::json::object());
    } catch (const nlohmann::json::exception& e) {
        throw InputError(where + ": " + e.what());
    }
    c.validate(where);
    return c;
}

fs::path sae_config_path(const fs::path& dir) {
    return dir.extension() == ".json" ? dir : dir / "sae.json";
}

SaeConfig read_sae_config(const fs::path& dir) {
    const fs::path file = sae_config_path(dir);
    std::ifstream in(file);
    if (!in) throw InputError("no SAE at '" + dir.string() + "': cannot read " + file.string());
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw InputError(file.string() + ": not valid JSON (" + e.what() + ")");
    }
    return SaeConfig::from_json(j, file.string());
}

nlohmann::json sae_manifest_entry(const SaeAttachment& sae) {
    return {{"hook", sae.hook}, {"point", sae_hook_name(sae.hook)}, {"path", sae.path.string()},
            {"sae", read_sae_config(sae.path).to_json()}};
}

const HookPoint& sae_input_hook(const std::vector<HookPoint>& hooks, const std::string& hook) {
    auto it = std::find_if(hooks.begin(), hooks.end(), [&](const HookPoint& h) { return h.name == hook; });
    if (it == hooks.end()) {
        std::vector<std::string> names;
        for (const auto& h : hooks) names.push_back(h.name);
        throw InputError("unknown hook '" + hook + "' for an SAE" + did_you_mean(hook, names) +
                         ". List the hooks with `nscope hooks MODEL`.");
    }
    if (it->dims.size() != 3 || it->dims[0] != "batch" || it->dims[1] != "pos")
        throw InputError("SAEs read [batch, pos, width] hooks (resid, mlp, attn_out), and '" + hook + "' is [" +
                         join(it->dims, ", ") + "]");
    return *it;
}

std::vector<HookPoint> hooks_with_saes(const std::vector<HookPoint>& hooks, const std::vector<SaeAttachment>& saes) {
    std::vector<HookPoint> out = hooks;
    std::set<std::string> seen;
    for (const auto& a : saes) {
        if (!seen.insert(a.hook).second)
            throw InputError("two SAEs on hook '" + a.hook + "': attach at most one SAE per hook");
        const HookPoint& target = sae_input_hook(hooks, a.hook);
        if (std::any_of(hooks.begin(), hooks.end(), [&](const HookPoint& h) { return h.name == sae_hook_name(a.hook); }))
            throw InputError("hook '" + a.hook + "' already has an SAE: attach at most one SAE per hook");
        auto it = std::find_if(out.begin(), out.end(), [&](const HookPoint& h) { return h.name == a.hook; });
        const SaeConfig c = read_sae_config(a.path);
        if (c.d_in != target.shape[2])
            throw InputError("the SAE at " + a.path.string() + " reads " + std::to_string(c.d_in) + "-wide activations but hook '" +
                             a.hook + "' is " + std::to_string(target.shape[2]) + " wide" +
                             (c.hook.empty() ? "" : " (it was trained on " + c.hook + ")"));
        HookPoint latent{sae_hook_name(a.hook), {"batch", "pos", "latent"}, {-1, -1, c.latents}};
        out.insert(it + 1, std::move(latent));
    }
    return out;
}

}  // namespace nscope
