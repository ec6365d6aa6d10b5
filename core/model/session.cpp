#include "core/model/session.h"

#include <ATen/core/grad_mode.h>

#include "core/model/hook_dispatch.h"
#include "core/model/hook_match.h"
#include "core/model/intervention_edit.h"
#include "core/model/interventions.h"
#include "core/model/metric.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {
namespace {

/// `t` as contiguous float32 in one copy at most. (`to(kFloat)` keeps a strided layout, such as the
/// unembedding's output, and a later `contiguous()` would copy a second time.)
at::Tensor float32_contiguous(const at::Tensor& t) {
    if (t.scalar_type() == at::kFloat) return t.contiguous();
    return t.to(t.options().dtype(at::kFloat), /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Contiguous);
}

int axis_of(const HookPoint& h, std::initializer_list<const char*> names) {
    for (size_t i = 0; i < h.dims.size(); ++i)
        for (const char* n : names)
            if (h.dims[i] == n) return static_cast<int>(i);
    return -1;
}

/// Shape [1,..,n,..,1] with n at `axis` of a rank-`rank` tensor.
std::vector<int64_t> along(int64_t rank, int axis, int64_t n) {
    std::vector<int64_t> s(static_cast<size_t>(rank), 1);
    s[static_cast<size_t>(axis)] = n;
    return s;
}

struct PaddedBatch {
    at::Tensor ids, mask, types;
    std::vector<int64_t> lengths;
};

PaddedBatch make_batch(const std::vector<std::vector<int64_t>>& rows, const std::vector<std::vector<int64_t>>* types) {
    PaddedBatch b;
    size_t P = 0;
    for (const auto& r : rows) {
        if (r.empty()) throw InputError("a prompt has no tokens: every row needs at least one token id");
        P = std::max(P, r.size());
    }
    const auto B = static_cast<int64_t>(rows.size());
    b.ids = at::zeros({B, static_cast<int64_t>(P)}, at::kLong);
    b.mask = at::zeros({B, static_cast<int64_t>(P)}, at::kLong);
    auto ids = b.ids.accessor<int64_t, 2>();
    auto mask = b.mask.accessor<int64_t, 2>();
    for (size_t r = 0; r < rows.size(); ++r) {
        for (size_t p = 0; p < rows[r].size(); ++p) ids[r][p] = rows[r][p], mask[r][p] = 1;
        b.lengths.push_back(static_cast<int64_t>(rows[r].size()));
    }
    if (types != nullptr) {
        if (types->size() != rows.size())
            throw InputError("token_type_ids has " + std::to_string(types->size()) + " rows but there are " +
                             std::to_string(rows.size()) + " prompts");
        b.types = at::zeros({B, static_cast<int64_t>(P)}, at::kLong);
        auto t = b.types.accessor<int64_t, 2>();
        for (size_t r = 0; r < rows.size(); ++r) {
            if (!(*types)[r].empty() && (*types)[r].size() != rows[r].size())
                throw InputError("token_type_ids row " + std::to_string(r) + " has " +
                                 std::to_string((*types)[r].size()) + " entries for " + std::to_string(rows[r].size()) +
                                 " tokens");
            for (size_t p = 0; p < (*types)[r].size(); ++p) t[r][p] = (*types)[r][p];
        }
    }
    return b;
}

/// Bool mask over heads and neurons, broadcastable to `t` ([1,...] on batch and position axes).
at::Tensor head_neuron_mask(const at::Tensor& t, const HookPoint& h, const InterventionSpec& s) {
    const int64_t rank = t.dim();
    at::Tensor m = at::ones(std::vector<int64_t>(static_cast<size_t>(rank), 1), at::kBool);
    if (!s.heads.empty()) {
        const int ax = axis_of(h, {"head", "kv_head"});
        at::Tensor hm = at::zeros({t.size(ax)}, at::kBool);
        for (int64_t x : s.heads) hm[x] = true;
        m = m & hm.view(along(rank, ax, t.size(ax)));
    }
    if (!s.neurons.empty()) {
        const int64_t n = t.size(rank - 1);
        at::Tensor nm = at::zeros({n}, at::kBool);
        for (int64_t x : s.neurons) {
            if (x < 0 || x >= n)
                throw InputError("intervention on " + h.name + ": neuron index " + std::to_string(x) +
                                 " is out of range (last dimension has " + std::to_string(n) + ")");
            nm[x] = true;
        }
        m = m & nm.view(along(rank, static_cast<int>(rank - 1), n));
    }
    return m;
}

}  // namespace

ModelSession::ModelSession(LoadedModel& model) : model_(model) {
    if (!model_.adapter) throw RuntimeError("ModelSession: the model has no adapter loaded");
}

void ModelSession::register_prompt(size_t index, std::vector<int64_t> ids, std::vector<int64_t> token_type_ids) {
    prompts_[index] = Prompt{std::move(ids), std::move(token_type_ids)};
    for (auto it = clean_.begin(); it != clean_.end();)
        it = it->first.first == index ? clean_.erase(it) : std::next(it);
}

void ModelSession::clear_cache() {
    clean_.clear();
    reference_ = reference_ids_ = reference_mask_ = at::Tensor();
}

int ModelSession::hook_id(const std::string& name) const {
    const auto& hooks = model_.adapter->hook_points();
    for (size_t i = 0; i < hooks.size(); ++i)
        if (hooks[i].name == name) return static_cast<int>(i);
    std::vector<std::string> names;
    for (const auto& h : hooks) names.push_back(h.name);
    throw InputError("unknown hook '" + name + "'" + did_you_mean(name, names) +
                     ". List the hooks with `nscope hooks MODEL`.");
}

at::Tensor ModelSession::clean_capture(size_t prompt, int hook, const Prompt& p) {
    const auto key = std::make_pair(prompt, hook);
    // The same index may name other tokens in a later call (Lua runs, analyzers' own rows): check the ids.
    if (auto it = clean_.find(key); it != clean_.end() && it->second.first == p.ids) return it->second.second;
    std::vector<std::vector<int64_t>> rows{p.ids}, types{p.types};
    PaddedBatch b = make_batch(rows, p.types.empty() ? nullptr : &types);
    HostHookDispatcher d(model_.adapter->hook_points().size());
    at::Tensor got;
    d.add_observer(hook, [&](int, const at::Tensor& t) { got = t.detach().clone(); });
    at::NoGradGuard no_grad;
    model_.adapter->forward({b.ids, b.mask, b.types, /*logits=*/false}, &d);
    if (!got.defined()) throw RuntimeError("the adapter never fired hook " + model_.adapter->hook_points()[hook].name);
    clean_[key] = {p.ids, got};
    return got;
}

at::Tensor ModelSession::reference_logits(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& types) {
    if (!types.defined() && reference_ids_.defined() && reference_ids_.sizes() == ids.sizes() &&
        reference_ids_.equal(ids) && reference_mask_.equal(mask))
        return reference_;
    at::NoGradGuard no_grad;
    at::Tensor ref = float32_contiguous(model_.adapter->forward({ids, mask, types, /*logits=*/true}, nullptr));
    if (types.defined()) return ref;  // token types (BERT pairs) are not part of the key: not cached
    reference_ = ref, reference_ids_ = ids.clone(), reference_mask_ = mask.clone();
    return reference_;
}

ForwardOutput ModelSession::forward(const std::vector<std::vector<int64_t>>& rows,
                                    const std::vector<std::vector<int64_t>>* token_type_ids,
                                    const std::vector<size_t>& prompt_indices, const ForwardRequest& request) {
    if (rows.empty()) throw InputError("forward: no prompts");
    if (prompt_indices.size() != rows.size())
        throw InputError("forward: " + std::to_string(prompt_indices.size()) + " prompt indices for " +
                         std::to_string(rows.size()) + " rows");
    const auto& hooks = model_.adapter->hook_points();
    const bool want_grad = !request.gradients.empty();
    if (request.metric) validate_metric(*request.metric, model_.handle.info.vocab_size, rows.size(), "metric");
    for (const auto& m : request.more_metrics) validate_metric(m, model_.handle.info.vocab_size, rows.size(), "metric");
    if (want_grad) {
        if (!request.metric)
            throw InputError("gradients need a metric to differentiate (" + join(metric_kinds(), ", ") + ")");
        if (model_.options.dtype != at::kFloat)
            throw InputError(std::string("gradients need the model in float32, and it is loaded as ") +
                             c10::toString(model_.options.dtype) + "; set `dtype: float32` on the model");
    }
    PaddedBatch b = make_batch(rows, token_type_ids);
    const int64_t B = b.ids.size(0), P = b.ids.size(1);
    HostHookDispatcher d(hooks.size());
    ForwardOutput out;
    out.input_ids = b.ids;
    out.attention_mask = b.mask;
    out.lengths = b.lengths;

    // Interventions: validate, expand patterns, and register editors (they run before observers).
    for (const auto& spec : request.interventions) {
        validate_intervention(hooks, spec);
        const InterventionOp& op = intervention_op(spec.op);
        for (int id : match_hook_ids(hooks, spec.hook)) {
            const HookPoint& h = hooks[static_cast<size_t>(id)];
            // Rows this edit applies to, with their positions resolved.
            std::vector<EditTarget> targets;
            for (int64_t r = 0; r < B; ++r) {
                const size_t gp = prompt_indices[static_cast<size_t>(r)];
                if (!spec.prompts.empty() &&
                    std::find(spec.prompts.begin(), spec.prompts.end(), static_cast<int64_t>(gp)) == spec.prompts.end())
                    continue;
                std::vector<int64_t> pos;
                for (int64_t p : spec.positions) pos.push_back(resolve_position(p, b.lengths[r], gp, h.name));
                targets.push_back({r, std::move(pos)});
            }
            if (targets.empty()) continue;
            at::Tensor source;  // patch: the source prompt's clean activation
            int64_t src_len = 0;
            if (spec.source_prompt) {
                const auto sp = static_cast<size_t>(*spec.source_prompt);
                Prompt p;
                const auto in_batch = std::find(prompt_indices.begin(), prompt_indices.end(), sp);
                if (in_batch != prompt_indices.end()) {
                    const auto r = static_cast<size_t>(in_batch - prompt_indices.begin());
                    p.ids = rows[r];
                    if (token_type_ids != nullptr) p.types = (*token_type_ids)[r];
                } else if (auto it = prompts_.find(sp); it != prompts_.end()) {
                    p = it->second;
                } else {
                    throw InputError(spec.op + " on " + h.name + ": source prompt " + std::to_string(sp) +
                                     " is neither in this batch nor registered with the session");
                }
                src_len = static_cast<int64_t>(p.ids.size());
                source = clean_capture(sp, id, p);
            }
            const int pos_ax = axis_of(h, {"pos", "query_pos"});
            const bool has_key_axis = axis_of(h, {"key_pos"}) >= 0;
            d.add_editor(id, [&, spec, id, pos_ax, has_key_axis, targets, source, src_len](int, at::Tensor& t) {
                const HookPoint& hp = hooks[static_cast<size_t>(id)];
                const at::Tensor hn = head_neuron_mask(t, hp, spec);
                // Rows x positions [b, p] broadcast to the hook's rank, and-ed with heads / neurons.
                at::Tensor rp = at::zeros({t.size(0), t.size(pos_ax)}, at::kBool);
                for (const auto& [r, pos] : targets) {
                    if (spec.positions.empty()) rp[r].fill_(true);
                    else
                        for (int64_t q : pos) rp[r][q] = true;
                }
                std::vector<int64_t> shape(static_cast<size_t>(t.dim()), 1);
                shape[0] = t.size(0);
                shape[static_cast<size_t>(pos_ax)] = t.size(pos_ax);
                const at::Tensor selected = rp.view(shape) & hn;
                EditArgs args{t, selected, hn, spec, hp, targets, b.lengths, prompt_indices, source, src_len, pos_ax,
                              has_key_axis};
                op.apply(args);
            });
        }
    }

    // Host callbacks (Lua hook functions): editors after the interventions.
    for (const auto& [pattern, callback] : request.callbacks) {
        for (const auto& name : match_hooks(hooks, {pattern})) {
            d.add_editor(hook_id(name), [&callback, name](int, at::Tensor& t) { callback(name, t); });
        }
    }

    // Gradient taps: `t + delta` with a zero delta that requires grad, after every edit, so that d(metric)/d(delta)
    // is the gradient w.r.t. the activation that flows downstream (through all later hooks too).
    std::map<int, at::Tensor> taps;
    for (const auto& name : request.gradients) {
        const int id = hook_id(name);
        if (taps.count(id)) continue;
        taps[id] = at::Tensor();
        d.add_editor(id, [&taps](int i, at::Tensor& t) {
            at::Tensor delta = at::zeros_like(t, at::MemoryFormat::Contiguous).requires_grad_(true);
            taps[i] = delta;
            t = t + delta;
        });
    }

    // Captures: what flows downstream after the edits, float32, zero at padded positions.
    std::vector<int> capture_ids;
    for (const auto& name : request.capture) capture_ids.push_back(hook_id(name));
    std::map<int, at::Tensor> got;
    for (int id : capture_ids)
        d.add_observer(id, [&got](int i, const at::Tensor& t) { got[i] = float32_contiguous(t.detach()); });

    // kl's reference: the same rows without this request's edits.
    bool any_metric = request.metric.has_value(), needs_reference = request.metric && request.metric->kind == "kl";
    for (const auto& m : request.more_metrics) any_metric = true, needs_reference |= m.kind == "kl";
    const at::Tensor reference = needs_reference ? reference_logits(b.ids, b.mask, b.types) : at::Tensor();

    at::Tensor logits;
    {
        at::AutoGradMode grad_mode(want_grad);  // without gradients the forward stays under no-grad
        logits = model_.adapter->forward({b.ids, b.mask, b.types, request.keep_logits || any_metric}, &d);
        if (request.metric) {
            out.metric = metric_per_row(*request.metric, logits.to(at::kFloat), b.ids, b.lengths, reference);
            if (want_grad) out.metric.sum().backward();
            out.metric = out.metric.detach();
        }
        at::NoGradGuard no_grad;
        for (const auto& m : request.more_metrics)
            out.more_metrics.push_back(metric_per_row(m, logits.detach().to(at::kFloat), b.ids, b.lengths, reference));
        if (logits.defined()) logits = logits.detach();
    }
    const at::Tensor valid = b.mask.to(at::kBool);  // [b, p]
    const bool padded = !valid.all().item<bool>();
    // `t` with padded positions zeroed (a copy: in float32 a capture is the model's own tensor).
    auto without_padding = [&](const HookPoint& h, at::Tensor c) {
        for (size_t a = 0; padded && a < h.dims.size() && a < static_cast<size_t>(c.dim()); ++a) {
            if (h.dims[a] != "pos" && h.dims[a] != "query_pos" && h.dims[a] != "key_pos") continue;
            std::vector<int64_t> s(static_cast<size_t>(c.dim()), 1);
            s[0] = B;
            s[a] = P;
            c = c.masked_fill(valid.logical_not().view(s), 0.0);
        }
        return c.contiguous();
    };
    for (int id : capture_ids) {
        const HookPoint& h = hooks[static_cast<size_t>(id)];
        auto it = got.find(id);
        if (it == got.end()) throw RuntimeError("the model adapter never fired hook " + h.name);
        out.captures[h.name] = without_padding(h, it->second);
    }
    for (const auto& [id, delta] : taps) {
        const HookPoint& h = hooks[static_cast<size_t>(id)];
        if (!delta.defined()) throw RuntimeError("the model adapter never fired hook " + h.name);
        // A hook the metric does not depend on (e.g. after the metric's position) has no gradient: zeros.
        const at::Tensor g = delta.grad().defined() ? delta.grad() : at::zeros_like(delta);
        out.gradients[h.name] = without_padding(h, float32_contiguous(g.detach()));
    }
    if (request.keep_logits) out.logits = float32_contiguous(logits);
    return out;
}

}  // namespace nscope
