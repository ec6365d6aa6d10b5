// Hook names and layouts as analyzers see them.
//
//   hook_layer("blocks.3.mlp.hook_post") == 3      hook_layer("hook_embed") == -1
//   token_layout(view, batch) -> {rows, positions, neurons}: the last dims flattened ([b,p,h,dh] -> h*dh)
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nscope/sdk.h>

#include "nscope_common/params.h"

namespace nscope::common {

/// The block index of a hook ("blocks.3.mlp.hook_post" -> 3), or -1 for hooks outside the blocks
/// (hook_embed, ln_final.hook_normalized, hook_logits).
inline int hook_layer(std::string_view hook) {
    constexpr std::string_view prefix = "blocks.";
    if (hook.substr(0, prefix.size()) != prefix) return -1;
    size_t i = prefix.size();
    int layer = 0;
    bool digits = false;
    while (i < hook.size() && hook[i] >= '0' && hook[i] <= '9') {
        layer = layer * 10 + (hook[i] - '0');
        digits = true;
        ++i;
    }
    return digits && (i == hook.size() || hook[i] == '.') ? layer : -1;
}

/// Attention maps ([b, h, p, p]): scores and patterns. Token-wise analyzers skip them.
inline bool is_attention_map(std::string_view hook) {
    auto ends_with = [&](std::string_view s) {
        return hook.size() >= s.size() && hook.substr(hook.size() - s.size()) == s;
    };
    return ends_with("hook_pattern") || ends_with("hook_attn_scores");
}

/// Sort key that puts hooks in model order: embeddings (-1) first, then by layer, then by name.
inline bool hook_order(const std::string& a, const std::string& b) {
    const int la = hook_layer(a), lb = hook_layer(b);
    return la != lb ? la < lb : a < b;
}

/// The keys of a map by hook name (per-hook analyzer state), in model order.
template <typename Map>
std::vector<std::string> hooks_in_order(const Map& by_hook) {
    std::vector<std::string> names;
    for (const auto& entry : by_hook) names.push_back(entry.first);
    std::sort(names.begin(), names.end(), hook_order);
    return names;
}

/// A captured hook viewed as a [rows, positions, neurons] float32 tensor.
struct TokenLayout {
    int64_t rows = 0;
    int64_t positions = 0;
    int64_t neurons = 0;
    /// The `neurons` values of (row, pos).
    const float* at(const ActivationView& v, size_t row, size_t pos) const {
        return v.f32() + (static_cast<int64_t>(row) * positions + static_cast<int64_t>(pos)) * neurons;
    }
};

/// The layout of `view` as token rows, or an empty reason why it is not token-wise (`why` is set then).
inline bool token_layout(const std::string& hook, const ActivationView& view, const Batch& batch, TokenLayout& out,
                         std::string& why) {
    if (is_attention_map(hook)) {
        why = "attention map [batch, heads, pos, pos]: not a per-token activation, skipped";
        return false;
    }
    if (view.dtype != DType::Float32) {
        why = "not float32, skipped";
        return false;
    }
    if (view.shape.size() < 2 || view.shape[0] != static_cast<int64_t>(batch.rows) ||
        view.shape[1] != static_cast<int64_t>(batch.positions)) {
        why = "shape is not [batch, pos, ...], skipped";
        return false;
    }
    out.rows = view.shape[0];
    out.positions = view.shape[1];
    out.neurons = 1;
    for (size_t i = 2; i < view.shape.size(); ++i) out.neurons *= view.shape[i];
    return true;
}

/// Which hooks an analyzer looks at: all captured ones, or those matching `hooks: [patterns]`.
/// Remembers the hooks it skipped and why, for the result's summary.
class HookFilter {
public:
    HookFilter() = default;
    explicit HookFilter(std::vector<std::string> patterns) : patterns_(std::move(patterns)) {}

    bool selected(const std::string& hook) const {
        if (patterns_.empty()) return true;
        return std::any_of(patterns_.begin(), patterns_.end(), [&](const auto& p) { return glob_match(p, hook); });
    }

    /// The layout if `hook` is selected and token-wise; records a skip note otherwise.
    bool accept(const std::string& hook, const ActivationView& view, const Batch& batch, TokenLayout& out) {
        if (!selected(hook)) return false;
        std::string why;
        if (token_layout(hook, view, batch, out, why)) return true;
        skipped_.emplace(hook, why);
        return false;
    }

    void note_skip(const std::string& hook, const std::string& why) { skipped_.emplace(hook, why); }
    void merge(const HookFilter& o) { skipped_.insert(o.skipped_.begin(), o.skipped_.end()); }
    /// The skipped hooks (the patterns come from the configuration).
    void save(StateWriter& out) const { out.string_map(skipped_); }
    void load(StateReader& in) { skipped_ = in.string_map(); }

    const std::vector<std::string>& patterns() const { return patterns_; }
    /// [{"hook": ..., "reason": ...}]
    nlohmann::json skipped_json() const {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& [hook, why] : skipped_) out.push_back({{"hook", hook}, {"reason", why}});
        return out;
    }

private:
    std::vector<std::string> patterns_;
    std::map<std::string, std::string> skipped_;
};

/// The per-hook state of `hook` in `by_hook` (a State with an `int64_t width` member): created on first sight
/// with `width` set and then `init(state)` called, else checked to have the same width (RuntimeError naming
/// `plugin` otherwise: a hook never changes width within a run).
template <typename State, typename Init>
State& hook_state(const std::string& plugin, std::map<std::string, State>& by_hook, const std::string& hook,
                  int64_t width, Init&& init) {
    auto it = by_hook.find(hook);
    if (it == by_hook.end()) {
        State fresh;
        fresh.width = width;
        init(fresh);
        it = by_hook.emplace(hook, std::move(fresh)).first;
    } else if (it->second.width != width) {
        throw RuntimeError(plugin + ": hook '" + hook + "' changed width from " + std::to_string(it->second.width) +
                           " to " + std::to_string(width));
    }
    return it->second;
}

/// A saved map of per-hook states (hook_state's): the count, then per hook its name, its width and what
/// `save(state)` writes.
template <typename State, typename Save>
void save_hook_states(StateWriter& out, const std::map<std::string, State>& by_hook, Save&& save) {
    out.u64(by_hook.size());
    for (const auto& [hook, s] : by_hook) {
        out.str(hook);
        out.u64(static_cast<uint64_t>(s.width));
        save(s);
    }
}
/// Read what save_hook_states wrote: `make(hook, width)` returns the fresh state of that hook (as
/// hook_state makes it, with its checks), `load(state)` reads the rest. `least(width)` is the fewest bytes
/// a hook of that width saves (n² doubles for a covariance, say): a width the blob cannot hold is damage,
/// refused before `make` allocates for it.
template <typename Least, typename Make, typename Load>
void load_hook_states(StateReader& in, Least&& least, Make&& make, Load&& load) {
    const uint64_t n = in.count(2 * sizeof(uint64_t), "hooks");
    for (uint64_t i = 0; i < n; ++i) {
        const std::string hook = in.str();
        const uint64_t width = in.u64();
        if (width == 0 || width > in.left() || least(width) > in.left())
            in.fail("hook '" + hook + "' claims " + std::to_string(width) + " neurons");
        load(make(hook, static_cast<int64_t>(width)));
    }
}

/// Runs `fn(state, view, neurons)` for every activation of `batch` that `filter` accepts, on the run's threads
/// (one task per hook); `state(hook, neurons)` returns that hook's analyzer state (State&), called on this
/// thread first, so it may create it.
template <typename State, typename StateFn, typename Fn>
void for_each_hook(const Batch& batch, HookFilter& filter, const ParallelFor& parallel_for, StateFn&& state, Fn&& fn) {
    std::vector<State*> states;
    std::vector<const ActivationView*> views;
    std::vector<int64_t> widths;
    for (const auto& act : batch.activations) {
        TokenLayout lay;
        if (!filter.accept(act.hook, act.view, batch, lay)) continue;
        states.push_back(&state(act.hook, lay.neurons));
        views.push_back(&act.view);
        widths.push_back(lay.neurons);
    }
    run_tasks(parallel_for, states.size(), [&](size_t i) { fn(*states[i], *views[i], widths[i]); });
}

/// A token-wise hook as the run declares it, before any batch: its name and width (0 when unknown).
struct PlannedHook {
    std::string name;
    int64_t width = 0;
};

/// The token-wise hooks of `ctx.hooks` that `filter` selects, in model order. Throws InputError naming
/// `plugin` when a pattern of the filter matches none of the run's hooks (a typo would otherwise yield an
/// empty result). With no declared hooks (a context built by hand) it returns nothing and checks nothing.
inline std::vector<PlannedHook> planned_hooks(const std::string& plugin, const RunContext& ctx,
                                              const HookFilter& filter) {
    std::vector<std::string> names;
    for (const auto& h : ctx.hooks) names.push_back(h.name);
    for (const auto& pattern : filter.patterns()) {
        if (names.empty()) break;
        if (std::none_of(names.begin(), names.end(), [&](const auto& n) { return glob_match(pattern, n); }))
            throw InputError(plugin + ": parameter 'hooks': pattern '" + pattern + "' matches none of the hooks " +
                             "this analysis receives" + did_you_mean(pattern, names) + "; hooks: " + join(names));
    }
    std::vector<PlannedHook> out;
    for (const auto& h : ctx.hooks) {
        if (!filter.selected(h.name) || is_attention_map(h.name) || h.shape.size() < 2) continue;
        int64_t width = 1;
        for (size_t i = 2; i < h.shape.size(); ++i) width = h.shape[i] > 0 ? width * h.shape[i] : 0;
        out.push_back({h.name, width});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return hook_order(a.name, b.name); });
    return out;
}

}  // namespace nscope::common
