#include "core/run/model_access.h"

#include <ATen/core/grad_mode.h>

#include "core/run/recipe.h"
#include "nscope/error.h"

namespace nscope {

OwnedTensor to_owned(const at::Tensor& t) {
    const at::Tensor c = t.detach().to(at::kFloat).contiguous();
    OwnedTensor o;
    o.shape = c.sizes().vec();
    o.data.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    return o;
}

SessionModelAccess::SessionModelAccess(ModelSession& session,
                                       std::function<std::vector<int64_t>(const std::string&)> tokenize)
    : session_(session), tokenize_(std::move(tokenize)) {
    access_.run = [this](const ModelCall& c) { return run(c); };
    access_.unembed = [this](const ActivationView& v) { return unembed(v); };
    access_.tokenize = [this](const std::string& text) {
        if (!tokenize_) throw InputError("the model has no tokenizer.json: give token ids instead of text");
        return tokenize_(text);
    };
}

ModelOutput SessionModelAccess::run(const ModelCall& call) {
    if (call.rows.empty()) throw InputError("model call: no rows");
    std::vector<size_t> indices = call.prompt_indices;
    if (indices.empty())
        for (size_t i = 0; i < call.rows.size(); ++i) indices.push_back(i);
    ForwardRequest req;
    req.capture = call.capture;
    req.metric = call.metric;
    req.more_metrics = call.more_metrics;
    req.gradients = call.gradients;
    req.keep_logits = call.logits;
    if (!call.interventions.is_array())
        throw InputError("model call: interventions must be a list of {hook, op, ...} objects");
    if (!call.interventions.empty())
        for (auto& e : parse_interventions(json_to_yaml(call.interventions), "model call interventions", {}, 0))
            req.interventions.push_back(std::move(e.spec));
    std::lock_guard<std::mutex> lock(mutex_);
    ForwardOutput f = session_.forward(call.rows, nullptr, indices, req);
    ModelOutput out;
    out.lengths = f.lengths;
    for (const auto& [name, t] : f.captures) out.captures[name] = to_owned(t);
    for (const auto& [name, t] : f.gradients) out.gradients[name] = to_owned(t);
    if (call.logits) out.logits = to_owned(f.logits);
    auto values = [](const at::Tensor& t) {
        const at::Tensor m = t.to(at::kDouble).contiguous();
        return std::vector<double>(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
    };
    if (f.metric.defined()) out.metric = values(f.metric);
    for (const auto& m : f.more_metrics) out.more_metrics.push_back(values(m));
    return out;
}

OwnedTensor SessionModelAccess::unembed(const ActivationView& resid) {
    const int64_t d = session_.model().handle.info.d_model;
    if (resid.dtype != DType::Float32 || resid.shape.empty() || resid.shape.back() != d)
        throw InputError("unembed: expects float32 residual-stream vectors [..., " + std::to_string(d) + "]");
    const at::Tensor x = at::from_blob(const_cast<void*>(resid.data), resid.shape, at::kFloat)
                             .to(session_.model().options.dtype);
    std::lock_guard<std::mutex> lock(mutex_);
    at::NoGradGuard no_grad;
    return to_owned(session_.model().adapter->unembed(x));
}

}  // namespace nscope
