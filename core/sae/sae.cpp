#include "core/sae/sae.h"

#include <ATen/core/grad_mode.h>

#include "core/model/safetensors.h"
#include "core/util/files.h"
#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

Sae Sae::init(const SaeConfig& config, uint64_t seed) {
    config.validate("SAE settings");
    Sae s;
    s.config_ = config;
    at::manual_seed(seed);
    at::NoGradGuard no_grad;
    s.W_dec_ = at::randn({config.latents, config.d_in}, at::kFloat);
    s.normalize_decoder();
    s.W_enc_ = s.W_dec_.t().contiguous();  // tied at the start (Gao et al.): encoder and decoder agree
    s.b_enc_ = at::zeros({config.latents}, at::kFloat);
    s.b_dec_ = at::zeros({config.d_in}, at::kFloat);
    return s;
}

Sae Sae::load(const fs::path& dir) {
    Sae s;
    s.config_ = read_sae_config(dir);
    const fs::path folder = dir.extension() == ".json" ? dir.parent_path() : dir;
    const fs::path file = folder / "sae.safetensors";
    if (!fs::is_regular_file(file)) throw InputError("the SAE at " + folder.string() + " has no sae.safetensors");
    SafetensorsWeights w({file});
    const int64_t d = s.config_.d_in, n = s.config_.latents;
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
        if (!w.contains(name)) throw InputError(file.string() + " has no tensor '" + name + "': not an SAE written by nscope train-sae");
        at::Tensor t = w.get(name);
        if (t.sizes().vec() != shape)
            throw InputError(file.string() + ": tensor '" + name + "' has shape " + c10::str(t.sizes()) + ", but sae.json (d_in " +
                             std::to_string(d) + ", latents " + std::to_string(n) + ") needs " + c10::str(at::IntArrayRef(shape)));
        return t.to(at::kFloat).clone();  // own the data: the mapping closes with `w`
    };
    s.W_enc_ = get("W_enc", {d, n});
    s.b_enc_ = get("b_enc", {n});
    s.W_dec_ = get("W_dec", {n, d});
    s.b_dec_ = get("b_dec", {d});
    for (const auto& [name, t] : s.tensors())
        if (!at::isfinite(t).all().item<bool>()) throw InputError(file.string() + ": tensor '" + name + "' has NaN or infinite values");
    return s;
}

void Sae::save(const fs::path& dir) const {
    fs::create_directories(dir);
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (const auto& [name, t] : tensors()) out.emplace_back(name, t.detach().contiguous());
    write_safetensors(dir / "sae.safetensors", out, {{"format", "nscope-sae"}});
    write_file_atomic(dir / "sae.json", config_.to_json().dump(2) + "\n");
}

at::Tensor Sae::pre_activations(const at::Tensor& x) const {
    return at::addmm(b_enc_, (x - b_dec_).reshape({-1, config_.d_in}), W_enc_)
        .view([&] {
            auto s = x.sizes().vec();
            s.back() = config_.latents;
            return s;
        }());
}

at::Tensor Sae::activate(const at::Tensor& pre) const {
    if (config_.architecture == "relu") return at::relu(pre);
    auto [values, indices] = at::topk(pre, config_.k, -1);
    return at::zeros_like(pre).scatter(-1, indices, at::relu(values));
}

at::Tensor Sae::decode(const at::Tensor& z) const {
    auto shape = z.sizes().vec();
    shape.back() = config_.d_in;
    return at::addmm(b_dec_, z.reshape({-1, config_.latents}), W_dec_).view(shape);
}

std::vector<std::pair<std::string, at::Tensor>> Sae::tensors() const {
    return {{"W_enc", W_enc_}, {"b_enc", b_enc_}, {"W_dec", W_dec_}, {"b_dec", b_dec_}};
}

void Sae::normalize_decoder() {
    at::NoGradGuard no_grad;
    W_dec_.div_(W_dec_.norm(2, {1}, true).clamp_min(1e-12));
}

}  // namespace nscope
