// `patching` analyzer: activation patching between (clean, corrupted) prompt pairs. For each component the
// corrupted prompt is run with that one activation taken from the clean prompt's run (the `patch` intervention),
// and the metric is read: effect = (M_patched − M_corrupted) / (M_clean − M_corrupted), so 0 = no effect and
// 1 = restores the clean metric. Components (`components:`, default resid, layers, heads):
//   resid    blocks.L.hook_resid_pre at one position                  [layers, positions]
//   layers   blocks.L.hook_attn_out / hook_mlp_out at every position  [layers, 2] (attn, mlp)
//   heads    blocks.L.attn.hook_z of one head at every position       [layers, heads]
//   neurons  the `neurons` MLP neurons (mlp.hook_post) whose clean and corrupted activations differ most
//            (summed |difference| over positions), each patched at every position    [neurons]
// Pairs and the metric are given like `attribution`'s (method: patching), so the two compare directly. Each
// patched run is one row of a batched forward (`batch_size` rows); exhaustive patching costs one row per
// component and pair, which the summary reports (forwards, seconds) beside attribution's 2 forwards + 1 backward.
#include <nscope/sdk.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "nscope_common/metric_spec.h"
#include "nscope_common/pairs.h"
#include "nscope_common/params.h"

namespace {

/// One patched run: the interventions (without `prompts`) and where its effect goes.
struct Patch {
    nlohmann::json intervention;
    std::vector<double>* into;
    size_t slot;
};

class Patching : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("patching", params,
                                      {"pairs", "by_label", "metric", "tokens", "position", "components", "neurons",
                                       "batch_size"});
        pairs_.configure(p);
        metric_.configure(p);
        const std::vector<std::string> known = {"resid", "layers", "heads", "neurons"};
        components_ = p.has("components") ? p.strings("components") : std::vector<std::string>{"resid", "layers", "heads"};
        for (const auto& c : components_)
            if (std::find(known.begin(), known.end(), c) == known.end())
                p.fail("components", "has unknown component '" + c + "'" + nscope::common::did_you_mean(c, known) +
                                          " (components: resid, layers, heads, neurons)");
        top_neurons_ = static_cast<size_t>(p.integer("neurons", 20, 1, 100000));
        batch_size_ = static_cast<size_t>(p.integer("batch_size", 16, 1, 4096));
    }

    // Bad pairs (unknown prompts, different lengths) fail at plan time (--dry-run, no run directory), and again
    // in begin() for callers without a plan (Lua).
    void check(const nscope::RunContext& ctx) override {
        nscope::common::PairedPromptIds::check_up_front(pairs_, ctx.prompts, "patching", true);
    }

    void begin(const nscope::RunContext& ctx) override {
        if (ctx.model == nullptr || !ctx.model->run)
            throw nscope::InputError("patching needs the run's model to re-run the corrupted prompts");
        model_ = ctx.model;
        n_layers_ = static_cast<size_t>(ctx.model_info.value("n_layers", int64_t{0}));
        n_heads_ = static_cast<size_t>(ctx.model_info.value("n_heads", int64_t{0}));
        if (n_layers_ == 0 || n_heads_ == 0) throw nscope::InputError("patching: the model info has no n_layers / n_heads");
        metric_.begin(model_, "patching");
        check(ctx);
    }

    void consume(const nscope::Batch& batch) override { prompts_.collect(pairs_, batch); }

    nscope::Result finish() override {
        const auto started = std::chrono::steady_clock::now();
        const auto pairs = prompts_.make(pairs_, "patching");
        const size_t L = n_layers_, H = n_heads_;
        auto wants = [&](const char* c) { return std::find(components_.begin(), components_.end(), c) != components_.end(); };
        std::vector<std::vector<double>> resid(L), layers(L, std::vector<double>(2, 0.0)), heads(L, std::vector<double>(H, 0.0));
        std::vector<std::vector<double>> resid_counts(L);
        std::map<std::pair<size_t, size_t>, std::pair<double, size_t>> neurons;  // (layer, neuron) -> (sum, pairs)
        nscope::Table per_pair;
        per_pair.columns = {"clean", "corrupted", "metric_clean", "metric_corrupted"};
        size_t rows_run = 0, forwards = 0, max_len = 0;
        for (const auto& [clean, corrupt] : pairs) {
            const auto [clean_ids, corrupt_ids] = prompts_.equal_length(clean, corrupt, "patching");
            const nscope::Metric metric = metric_.resolve(prompts_.labels(clean), clean);
            // Clean and corrupted metrics (and, for `neurons`, their MLP activations) in one forward.
            nscope::ModelCall base;
            base.rows = {*clean_ids, *corrupt_ids};
            base.prompt_indices = {static_cast<size_t>(clean), static_cast<size_t>(corrupt)};
            base.metric = metric;
            if (wants("neurons"))
                for (size_t l = 0; l < L; ++l) base.capture.push_back("blocks." + std::to_string(l) + ".mlp.hook_post");
            const nscope::ModelOutput b = model_->run(base);
            ++forwards, rows_run += 2;
            const double m_clean = b.metric[0], m_corrupt = b.metric[1], denom = m_clean - m_corrupt;
            prompts_.require_metric_gap(clean, corrupt, m_clean, m_corrupt, "patching");
            per_pair.add_row({clean, corrupt, m_clean, m_corrupt});
            const size_t P = clean_ids->size();
            max_len = std::max(max_len, P);

            std::vector<Patch> patches;
            std::vector<double> effects;  // filled per patch, then folded into the arrays
            auto add = [&](nlohmann::json iv) { patches.push_back({std::move(iv), nullptr, 0}); };
            const nlohmann::json src = clean;
            for (size_t l = 0; l < L; ++l) {
                const std::string blk = "blocks." + std::to_string(l) + ".";
                if (wants("resid"))
                    for (size_t q = 0; q < P; ++q)
                        add({{"hook", blk + "hook_resid_pre"}, {"op", "patch"}, {"source_prompt", src}, {"positions", {q}}});
                if (wants("layers")) {
                    add({{"hook", blk + "hook_attn_out"}, {"op", "patch"}, {"source_prompt", src}});
                    add({{"hook", blk + "hook_mlp_out"}, {"op", "patch"}, {"source_prompt", src}});
                }
                if (wants("heads"))
                    for (size_t h = 0; h < H; ++h)
                        add({{"hook", blk + "attn.hook_z"}, {"op", "patch"}, {"source_prompt", src}, {"heads", {h}}});
            }
            std::vector<std::pair<size_t, size_t>> chosen;
            if (wants("neurons")) {
                std::vector<std::pair<double, std::pair<size_t, size_t>>> diff;
                for (size_t l = 0; l < L; ++l) {
                    const auto& a = b.captures.at("blocks." + std::to_string(l) + ".mlp.hook_post");
                    const auto M = static_cast<size_t>(a.shape[2]), Pp = static_cast<size_t>(a.shape[1]);
                    for (size_t n = 0; n < M; ++n) {
                        double d = 0;
                        for (size_t q = 0; q < P; ++q) d += std::abs(a.data[q * M + n] - a.data[(Pp + q) * M + n]);
                        diff.push_back({d, {l, n}});
                    }
                }
                const size_t k = std::min(top_neurons_, diff.size());
                std::partial_sort(diff.begin(), diff.begin() + static_cast<ptrdiff_t>(k), diff.end(),
                                  [](const auto& x, const auto& y) { return x.first > y.first; });
                for (size_t i = 0; i < k; ++i) {
                    chosen.push_back(diff[i].second);
                    add({{"hook", "blocks." + std::to_string(diff[i].second.first) + ".mlp.hook_post"}, {"op", "patch"},
                         {"source_prompt", src}, {"neurons", {diff[i].second.second}}});
                }
            }
            effects.assign(patches.size(), 0.0);
            // Batched: row 0 is the clean prompt (the patch source), then one corrupted copy per patch, each with
            // its own row index so that the patch's `prompts` selects it alone.
            for (size_t start = 0; start < patches.size(); start += batch_size_) {
                const size_t end = std::min(patches.size(), start + batch_size_);
                nscope::ModelCall call;
                call.metric = metric;
                call.rows = {*clean_ids};
                call.prompt_indices = {static_cast<size_t>(clean)};
                for (size_t i = start; i < end; ++i) {
                    const size_t row_id = kFirstCopy + (i - start);
                    call.rows.push_back(*corrupt_ids);
                    call.prompt_indices.push_back(row_id);
                    nlohmann::json iv = patches[i].intervention;
                    iv["prompts"] = {row_id};
                    call.interventions.push_back(std::move(iv));
                }
                const nscope::ModelOutput out = model_->run(call);
                ++forwards, rows_run += call.rows.size();
                for (size_t i = start; i < end; ++i) effects[i] = (out.metric[1 + i - start] - m_corrupt) / denom;
            }
            // Fold the effects in the order they were added.
            size_t i = 0;
            for (size_t l = 0; l < L; ++l) {
                if (wants("resid")) {
                    if (resid[l].size() < P) resid[l].resize(P, 0.0), resid_counts[l].resize(P, 0.0);
                    for (size_t q = 0; q < P; ++q) resid[l][q] += effects[i++], resid_counts[l][q] += 1;
                }
                if (wants("layers")) layers[l][0] += effects[i++], layers[l][1] += effects[i++];
                if (wants("heads"))
                    for (size_t h = 0; h < H; ++h) heads[l][h] += effects[i++];
            }
            for (const auto& key : chosen) {
                auto& [sum, n] = neurons[key];
                sum += effects[i++], ++n;
            }
        }

        nscope::Result res;
        const double n = static_cast<double>(pairs.size());
        nlohmann::json layer_names = nlohmann::json::array(), head_names = nlohmann::json::array();
        for (size_t l = 0; l < L; ++l) layer_names.push_back("L" + std::to_string(l));
        for (size_t h = 0; h < H; ++h) head_names.push_back("H" + std::to_string(h));
        const auto Li = static_cast<int64_t>(L);
        auto emit = [&](const std::string& name, const std::vector<std::vector<double>>& m, size_t cols,
                        const std::vector<std::vector<double>>* counts, nlohmann::json x, const std::string& title,
                        const std::string& x_label) {
            std::vector<float> flat;
            nlohmann::json z = nlohmann::json::array();
            for (size_t l = 0; l < m.size(); ++l) {
                nlohmann::json zr = nlohmann::json::array();
                for (size_t j = 0; j < cols; ++j) {
                    const double c = counts ? (j < (*counts)[l].size() ? (*counts)[l][j] : 0.0) : n;
                    const double v = j < m[l].size() && c > 0 ? m[l][j] / c : std::nan("");
                    flat.push_back(static_cast<float>(v));
                    zr.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr));
                }
                z.push_back(std::move(zr));
            }
            res.set_array(name + ".effect", nscope::NdArray::floats({Li, static_cast<int64_t>(cols)}, std::move(flat)));
            res.set_figure(name, {{"kind", "heatmap"}, {"title", title}, {"x", std::move(x)}, {"y", layer_names},
                                  {"z", z}, {"zmid", 0}, {"x_label", x_label}, {"y_label", "layer"},
                                  {"z_label", "normalised effect"}});
        };
        nlohmann::json dims = nlohmann::json::object();
        if (wants("resid")) {
            nlohmann::json pos = nlohmann::json::array();
            for (size_t q = 0; q < max_len; ++q) pos.push_back(q);
            emit("resid", resid, max_len, &resid_counts, pos, "patching the residual stream (resid_pre) by position",
                 "position");
            dims["resid.effect"] = nlohmann::json::array({"layer", "position"});
        }
        if (wants("layers")) {
            emit("layers", layers, 2, nullptr, nlohmann::json::array({"attn_out", "mlp_out"}),
                 "patching each layer's attention and MLP output", "sub-layer");
            dims["layers.effect"] = nlohmann::json::array({"layer", "sublayer"});
        }
        if (wants("heads")) {
            emit("heads", heads, H, nullptr, head_names, "patching each head's output (hook_z)", "head");
            dims["heads.effect"] = nlohmann::json::array({"layer", "head"});
        }
        if (wants("neurons")) {
            nscope::Table t;
            t.columns = {"layer", "neuron", "effect", "pairs"};
            std::vector<float> eff;
            std::vector<int64_t> idx;
            for (const auto& [key, v] : neurons) {
                const double e = v.first / static_cast<double>(v.second);
                t.add_row({key.first, key.second, e, v.second});
                eff.push_back(static_cast<float>(e));
                idx.push_back(static_cast<int64_t>(key.first)), idx.push_back(static_cast<int64_t>(key.second));
            }
            const auto k = static_cast<int64_t>(eff.size());
            res.set_array("neurons.effect", nscope::NdArray::floats({k}, std::move(eff)));
            res.set_array("neurons.index", nscope::NdArray::ints({k, 2}, std::move(idx)));
            res.set_table("neurons", std::move(t));
            dims["neurons.effect"] = nlohmann::json::array({"neuron (see neurons.index: layer, neuron)"});
        }
        res.set_table("pairs", std::move(per_pair));
        res.data["dims"] = dims;
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        res.data["summary"] = {{"pairs", pairs.size()}, {"metric", metric_.kind()}, {"components", components_},
                               {"forwards", forwards}, {"rows", rows_run}, {"seconds", seconds}};
        return res;
    }

private:
    /// Row indices given to the patched copies of a corrupted prompt: far above any run's prompt count.
    static constexpr size_t kFirstCopy = size_t{1} << 40;

    nscope::common::PromptPairs pairs_;
    nscope::common::PairedPromptIds prompts_;
    nscope::common::MetricSpec metric_;
    std::vector<std::string> components_;
    size_t top_neurons_ = 20, batch_size_ = 16, n_layers_ = 0, n_heads_ = 0;
    const nscope::ModelAccess* model_ = nullptr;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Patching, "patching", "1.0.0",
                       "activation patching between clean and corrupted prompt pairs: residual stream by position, "
                       "attention / MLP outputs, heads, top MLP neurons; 0 = corrupted, 1 = clean")
