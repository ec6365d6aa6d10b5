#include "core/train/adamw.h"

#include <ATen/core/grad_mode.h>

#include <cmath>

#include "core/model/safetensors.h"
#include "nscope/error.h"

namespace nscope {

void AdamW::add(const std::string& name, const at::Tensor& p, bool decay_it) {
    names.push_back(name);
    params.push_back(p);
    m.push_back(at::zeros_like(p, at::kFloat));
    v.push_back(at::zeros_like(p, at::kFloat));
    decay.push_back(decay_it);
}

void AdamW::zero_grad() {
    for (auto& p : params)
        if (p.grad().defined()) p.mutable_grad().zero_();
}

double AdamW::clip_gradients(double max_norm) {
    at::NoGradGuard no_grad;
    double total = 0;
    for (auto& p : params)
        if (p.grad().defined()) total += p.grad().pow(2).sum().item<double>();
    total = std::sqrt(total);
    if (max_norm > 0 && total > max_norm)
        for (auto& p : params)
            if (p.grad().defined()) p.mutable_grad().mul_(max_norm / (total + 1e-6));
    return total;
}

void AdamW::step(double lr, int64_t t) {
    at::NoGradGuard no_grad;
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
    for (size_t i = 0; i < params.size(); ++i) {
        at::Tensor& p = params[i];
        const at::Tensor g = p.grad();
        if (!g.defined()) continue;
        m[i].mul_(beta1).add_(g, 1.0 - beta1);
        v[i].mul_(beta2).addcmul_(g, g, 1.0 - beta2);
        if (decay[i] && weight_decay != 0) p.mul_(1.0 - lr * weight_decay);
        const at::Tensor denom = (v[i] / bc2).sqrt_().add_(eps);
        p.addcdiv_(m[i], denom, -lr / bc1);
    }
}

void AdamW::save(const std::filesystem::path& file, std::vector<std::pair<std::string, at::Tensor>> extra) const {
    for (size_t i = 0; i < params.size(); ++i) {
        extra.emplace_back("m." + names[i], m[i]);
        extra.emplace_back("v." + names[i], v[i]);
    }
    write_safetensors(file, extra);
}

void AdamW::load(const std::filesystem::path& file) {
    SafetensorsWeights state({file});
    at::NoGradGuard g;
    for (size_t i = 0; i < params.size(); ++i) {
        m[i].copy_(state.get("m." + names[i]));
        v[i].copy_(state.get("v." + names[i]));
    }
}

}  // namespace nscope
