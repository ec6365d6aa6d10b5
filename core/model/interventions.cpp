#include "core/model/interventions.h"

#include <algorithm>
#include <cstdio>

#include "core/model/hook_match.h"
#include "core/model/intervention_edit.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {

namespace {

using Kind = InterventionParamKind;

int axis_of(const HookPoint& h, std::initializer_list<const char*> names) {
    for (size_t i = 0; i < h.dims.size(); ++i)
        for (const char* n : names)
            if (h.dims[i] == n) return static_cast<int>(i);
    return -1;
}

/// A per-neuron vector over the last dim: `values` given for the selected neurons (or all of them).
at::Tensor neuron_vector(const std::vector<float>& values, const InterventionSpec& s, int64_t n, at::ScalarType dtype,
                         const std::string& hook) {
    at::Tensor v = at::zeros({n}, at::kFloat);
    const size_t want = s.neurons.empty() ? static_cast<size_t>(n) : s.neurons.size();
    if (values.size() != want)  // validated at plan time; a hook whose width the config did not give lands here
        throw InputError("intervention " + s.op + " on " + hook + ": needs " + std::to_string(want) +
                         " values, got " + std::to_string(values.size()));
    if (s.neurons.empty()) {
        std::copy(values.begin(), values.end(), v.data_ptr<float>());
    } else {
        for (size_t i = 0; i < values.size(); ++i) v[s.neurons[i]] = values[i];
    }
    return v.to(dtype);
}

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// ---- apply, one function per op ----------------------------------------------------------------------------

void apply_zero(EditArgs& a) { a.t = a.t.masked_fill(a.selected, 0.0); }
void apply_set(EditArgs& a) { a.t = a.t.masked_fill(a.selected, a.spec.value); }
void apply_scale(EditArgs& a) { a.t = at::where(a.selected, a.t * a.spec.factor, a.t); }
void apply_clamp_range(EditArgs& a) { a.t = at::where(a.selected, a.t.clamp(a.spec.lo, a.spec.hi), a.t); }
void apply_mask_range(EditArgs& a) {
    a.t = a.t.masked_fill(a.selected & a.t.ge(a.spec.lo) & a.t.le(a.spec.hi), a.spec.value);
}
void apply_mask_ranges(EditArgs& a) {
    const auto dt = a.t.scalar_type();
    const int64_t n = a.t.size(-1);
    const at::Tensor lo = neuron_vector(a.spec.lo_values, a.spec, n, dt, a.hook.name);
    const at::Tensor hi = neuron_vector(a.spec.hi_values, a.spec, n, dt, a.hook.name);
    a.t = a.t.masked_fill(a.selected & a.t.ge(lo) & a.t.le(hi), a.spec.value);
}

void check_mask_ranges(const InterventionSpec& s, const std::string& what) {
    if (s.lo_values.size() != s.hi_values.size())
        throw InputError(what + ": `lo` has " + std::to_string(s.lo_values.size()) + " values but `hi` has " +
                         std::to_string(s.hi_values.size()));
    for (size_t i = 0; i < s.lo_values.size(); ++i)
        if (s.lo_values[i] > s.hi_values[i])
            throw InputError(what + ": lo[" + std::to_string(i) + "] (" + num(s.lo_values[i]) + ") is greater than hi[" +
                             std::to_string(i) + "] (" + num(s.hi_values[i]) + ")");
}

void apply_add(EditArgs& a) {
    const auto dt = a.t.scalar_type();
    a.t = a.t + a.selected.to(dt) * neuron_vector(a.spec.vector, a.spec, a.t.size(-1), dt, a.hook.name);
}
void apply_mean(EditArgs& a) {
    const auto dt = a.t.scalar_type();
    a.t = at::where(a.selected, neuron_vector(a.spec.means, a.spec, a.t.size(-1), dt, a.hook.name).expand_as(a.t), a.t);
}

void apply_patch(EditArgs& a) {
    const InterventionSpec& spec = a.spec;
    const int64_t src_len = a.source_length;
    at::Tensor edited = a.t.clone();
    const at::Tensor src = a.source.to(a.t.scalar_type()).select(0, 0);
    const at::Tensor mask = a.heads_neurons.select(0, 0).select(a.pos_axis - 1, 0);
    for (const auto& target : a.targets) {
        const int64_t len = a.lengths[static_cast<size_t>(target.row)];
        const size_t prompt = a.prompt_indices[static_cast<size_t>(target.row)];
        std::vector<std::pair<int64_t, int64_t>> pairs;  // (target position, source position)
        if (spec.positions.empty()) {
            if (len != src_len)
                throw InputError("patch on " + a.hook.name + ": prompt " + std::to_string(prompt) + " has " +
                                 std::to_string(len) + " tokens but source prompt " + std::to_string(*spec.source_prompt) +
                                 " has " + std::to_string(src_len) + "; give `positions` to patch prompts of different lengths");
            for (int64_t q = 0; q < len; ++q) pairs.emplace_back(q, q);
        } else {
            if (a.has_key_axis && len != src_len)
                throw InputError("patch on " + a.hook.name + ": attention hooks can only be patched between prompts of "
                                 "equal length");
            for (size_t i = 0; i < spec.positions.size(); ++i)
                pairs.emplace_back(target.positions[i],
                                   resolve_position(spec.positions[i], src_len, static_cast<size_t>(*spec.source_prompt),
                                                    a.hook.name));
        }
        at::Tensor row = edited.select(0, target.row);
        for (const auto& [tp, sp] : pairs) {
            at::Tensor dst = row.select(a.pos_axis - 1, tp);
            const at::Tensor val = src.select(a.pos_axis - 1, sp);
            for (int64_t d = 0; d < dst.dim(); ++d)  // attention maps: the source's key span
                if (dst.size(d) != val.size(d)) dst = dst.narrow(d, 0, val.size(d));
            dst.copy_(at::where(mask.expand_as(dst).contiguous(), val, dst));
        }
    }
    a.t = edited;
}

const InterventionParam kValue{"value", Kind::Number, true, "the value written", &InterventionSpec::value};
const InterventionParam kRange{"range", Kind::Range, true, "[lo, hi], the bounds"};

}  // namespace

int64_t resolve_position(int64_t p, int64_t len, size_t prompt, const std::string& hook) {
    const int64_t q = p < 0 ? len + p : p;
    if (q < 0 || q >= len)
        throw InputError("intervention on " + hook + ": position " + std::to_string(p) + " is outside prompt " +
                         std::to_string(prompt) + " (" + std::to_string(len) + " tokens)");
    return q;
}

const std::vector<InterventionOp>& intervention_table() {
    static const std::vector<InterventionOp> table = {
        {"zero", "selected values := 0", {}, apply_zero},
        {"mean", "selected values := recorded per-neuron means",
         {{"means", Kind::Vector, true, "per-neuron means (e.g. a stats result's .mean.npy)", nullptr, &InterventionSpec::means}},
         apply_mean},
        {"scale", "selected values *= factor",
         {{"factor", Kind::Number, true, "the multiplier", &InterventionSpec::factor}}, apply_scale},
        {"set", "selected values := value", {kValue}, apply_set},
        {"clamp_range", "selected values clamped into [lo, hi]", {kRange}, apply_clamp_range},
        {"mask_range", "selected values inside [lo, hi] := value (NeuronLens)",
         {kRange, {"value", Kind::Number, false, "the value written (default 0)", &InterventionSpec::value}},
         apply_mask_range},
        {"mask_ranges", "selected values inside their own [lo, hi] := value (NeuronLens ranges)",
         {{"lo", Kind::Vector, true, "lower bounds, one per selected neuron", nullptr, &InterventionSpec::lo_values},
          {"hi", Kind::Vector, true, "upper bounds, one per selected neuron", nullptr, &InterventionSpec::hi_values},
          {"value", Kind::Number, false, "the value written (default 0)", &InterventionSpec::value}},
         apply_mask_ranges, check_mask_ranges},
        {"add", "selected values += vector (steering)",
         {{"vector", Kind::Vector, true, "the steering vector", nullptr, &InterventionSpec::vector}}, apply_add},
        {"patch", "selected values := the same hook in source_prompt's clean run",
         {{"source_prompt", Kind::PromptIndex, true, "the prompt whose clean run supplies the values"}}, apply_patch},
    };
    return table;
}

const InterventionOp& intervention_op(const std::string& name) {
    const auto& table = intervention_table();
    for (const auto& op : table)
        if (name == op.name) return op;
    std::vector<std::string> names;
    for (const auto& op : table) names.push_back(op.name);
    throw InputError("unknown intervention op '" + name + "'" + did_you_mean(name, names) + ". Ops: " + join(names, ", ") +
                     ".");
}

const std::vector<std::string>& intervention_common_keys() {
    static const std::vector<std::string> keys = {"hook", "op", "neurons", "heads", "positions", "prompts"};
    return keys;
}

std::vector<std::string> intervention_param_keys(const InterventionOp& op) {
    std::vector<std::string> keys;
    for (const auto& p : op.params) {
        keys.push_back(p.key);
        if (p.kind == Kind::Vector) keys.push_back(std::string(p.key) + "_file");
        if (p.kind == Kind::Range) keys.insert(keys.end(), {"lo", "hi"});
    }
    return keys;
}

void validate_intervention(const std::vector<HookPoint>& hooks, const InterventionSpec& spec, size_t n_prompts) {
    const std::string what = "intervention {hook: " + spec.hook + ", op: " + spec.op + "}";
    const InterventionOp* op = nullptr;
    try {
        op = &intervention_op(spec.op);
    } catch (const InputError& e) {
        throw InputError(what + ": " + e.what());
    }
    std::vector<std::string> names;
    try {
        names = match_hooks(hooks, {spec.hook});
    } catch (const InputError& e) {  // keeps its "did you mean"
        throw InputError(what + ": " + e.what());
    }
    for (const auto& name : names) {
        const HookPoint& h = *std::find_if(hooks.begin(), hooks.end(), [&](const HookPoint& p) { return p.name == name; });
        const int64_t last = h.shape.empty() ? -1 : h.shape.back();
        for (int64_t n : spec.neurons)
            if (n < 0 || (last > 0 && n >= last))
                throw InputError(what + ": neuron index " + std::to_string(n) + " is out of range for " + h.name + " " +
                                 hook_shape_string(h) + " (valid: 0.." +
                                 (last > 0 ? std::to_string(last - 1) : std::string("?")) + ")");
        if (!spec.heads.empty()) {
            const int ax = axis_of(h, {"head", "kv_head"});
            if (ax < 0)
                throw InputError(what + ": " + h.name + " " + hook_shape_string(h) +
                                 " has no head dimension; `heads` applies to attn.hook_q/k/v/z/attn_scores/pattern");
            const int64_t n_heads = h.shape[static_cast<size_t>(ax)];
            for (int64_t hd : spec.heads)
                if (hd < 0 || hd >= n_heads)
                    throw InputError(what + ": head index " + std::to_string(hd) + " is out of range for " + h.name +
                                     " (" + std::to_string(n_heads) + " heads: 0.." + std::to_string(n_heads - 1) + ")");
        }
        if (!spec.positions.empty() && axis_of(h, {"pos", "query_pos"}) < 0)
            throw InputError(what + ": " + h.name + " " + hook_shape_string(h) + " has no position dimension");
        for (const auto& p : op->params) {
            if (p.kind != Kind::Vector || last <= 0) continue;
            const size_t got = (spec.*p.values).size();
            const size_t want = spec.neurons.empty() ? static_cast<size_t>(last) : spec.neurons.size();
            if (got != want)
                throw InputError(what + ": `" + p.key + "` has " + std::to_string(got) + " values but " +
                                 (spec.neurons.empty() ? "the last dimension of " + h.name + " has "
                                                       : std::string("`neurons` selects ")) +
                                 std::to_string(want));
        }
    }
    if (op->check) op->check(spec, what);
    for (const auto& p : op->params) {
        if (p.kind == Kind::Range && spec.lo > spec.hi)
            throw InputError(what + ": lo (" + num(spec.lo) + ") is greater than hi (" + num(spec.hi) + ")");
        if (p.kind == Kind::PromptIndex) {
            if (!spec.source_prompt)
                throw InputError(what + ": needs `" + p.key + "` (" + p.meaning + ")");
            if (*spec.source_prompt < 0 || static_cast<size_t>(*spec.source_prompt) >= n_prompts)
                throw InputError(what + ": " + p.key + " " + std::to_string(*spec.source_prompt) +
                                 " is not a prompt of this run (" + std::to_string(n_prompts) + " prompts: 0.." +
                                 std::to_string(n_prompts - 1) + ")");
        }
    }
    for (int64_t p : spec.prompts)
        if (p < 0 || static_cast<size_t>(p) >= n_prompts)
            throw InputError(what + ": prompt index " + std::to_string(p) + " is not a prompt of this run" +
                             (n_prompts == std::numeric_limits<size_t>::max()
                                  ? std::string()
                                  : " (" + std::to_string(n_prompts) + " prompts: 0.." + std::to_string(n_prompts - 1) + ")"));
}

}  // namespace nscope
