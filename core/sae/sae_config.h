// An SAE's sae.json (sae.h): readable without LibTorch or the weights, so that recipes and scripts can
// validate `saes:` against a model's hook widths before anything loads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/hook.h"

namespace nscope {

struct SaeConfig {
    std::string architecture = "topk";  ///< "topk" | "relu"
    int64_t d_in = 0, latents = 0;
    int64_t k = 0;                      ///< topk: active latents per token (0 for relu)
    double l1 = 0;                      ///< relu: the L1 coefficient it was trained with
    std::string hook;                   ///< the hook it was trained on ("blocks.2.hook_resid_post")
    nlohmann::json model = nlohmann::json::object();     ///< {"ref", "config_sha256", "architecture"}
    nlohmann::json training = nlohmann::json::object();  ///< settings (steps, lr, seed, ...)
    nlohmann::json stats = nlohmann::json::object();     ///< summary (mse, explained variance, L0, dead ...)

    nlohmann::json to_json() const;
    /// Parse and validate (known architecture, positive sizes, 0 < k <= latents); `where` names the source.
    static SaeConfig from_json(const nlohmann::json& j, const std::string& where);
    /// Throws InputError when the sizes or the architecture are invalid.
    void validate(const std::string& where) const;
};

/// The architectures train-sae and sae.json accept.
const std::vector<std::string>& sae_architectures();

/// `dir`/sae.json (or `dir` itself when it names a .json file).
std::filesystem::path sae_config_path(const std::filesystem::path& dir);
/// Read and validate an SAE folder's sae.json; InputError naming the file on any defect.
SaeConfig read_sae_config(const std::filesystem::path& dir);

/// An SAE attached to a model hook: its latents become the hook point `<hook>.sae`.
struct SaeAttachment {
    std::string hook;             ///< exact hook name of the model
    std::filesystem::path path;   ///< the SAE folder
};

/// What a run's manifest records of an attached SAE (manifest.json `saes`, which the report shows):
/// {"hook", "point" (`<hook>.sae`), "path", "sae": its sae.json (sizes, training, stats)}.
nlohmann::json sae_manifest_entry(const SaeAttachment& sae);

/// The name of the latent hook point of an SAE on `hook`.
inline std::string sae_hook_name(const std::string& hook) { return hook + ".sae"; }

/// The hook an SAE reads: `hook` must exist (InputError with "did you mean") and be [batch, pos, width].
const HookPoint& sae_input_hook(const std::vector<HookPoint>& hooks, const std::string& hook);

/// `hooks` with one `<hook>.sae` point ([batch, pos, latent], shape [-1, -1, latents]) inserted after each
/// attached hook. Checks from sae.json alone: the hook exists (with "did you mean"), is [batch, pos, width],
/// its width equals the SAE's d_in, and no hook has two SAEs. InputError otherwise.
std::vector<HookPoint> hooks_with_saes(const std::vector<HookPoint>& hooks, const std::vector<SaeAttachment>& saes);

}  // namespace nscope
