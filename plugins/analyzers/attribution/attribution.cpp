// `attribution` analyzer: which activations a metric of the model's output depends on, from gradients.
//
// method: grad_x_act (default). With a recipe `gradient:`, every captured hook delivers d(metric)/d(activation);
//   per hook and neuron (the last dims flattened, [b,p,h,dh] -> h*dh) this averages gradient × activation over
//   the real tokens, signed and absolute. g·a is the first-order estimate of how much the metric would drop if
//   that activation were zeroed. Mergeable (sums).
// method: patching — attribution patching (a first-order estimate of activation patching) over (clean,
//   corrupted) prompt pairs, given like `compare`'s (`pairs: [[clean, corrupted]]` or `by_label`, first value =
//   clean). Per pair, one clean forward (activations, metric), one corrupted forward and one backward (activations,
//   metric, gradients): the effect of patching an activation from clean into corrupted is estimated as
//   (a_clean − a_corrupted) · dM/da at the corrupted run, normalised by M(clean) − M(corrupted), so that 1 =
//   restores the clean metric. Components (averaged over pairs):
//     heads     blocks.L.attn.hook_z, summed over positions and d_head          [layers, heads]
//     resid     blocks.L.hook_resid_pre per position, summed over d_model      [layers, positions]
//     neurons   blocks.L.mlp.hook_post, summed over positions                 [layers, d_mlp]
//   Pairs must have equal token lengths (positions are compared one to one). `batch_size` pairs (default 16) share
//   the two forwards.
// method: integrated_gradients — integrated gradients over MLP neurons and knowledge neurons
//   (integrated_gradients.h).
#include <nscope/sdk.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "nscope_common/hooks.h"
#include "nscope_common/metric_spec.h"
#include "nscope_common/pairs.h"
#include "nscope_common/params.h"
#include "integrated_gradients.h"

namespace {

using nscope::common::ParamReader;

struct NeuronSums {
    std::vector<double> signed_sum, abs_sum;
    uint64_t tokens = 0;
};

class Attribution : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        std::vector<std::string> keys{"method", "hooks", "top", "pairs", "by_label", "metric", "tokens", "position"};
        const auto ig_keys = nscope::attribution::IntegratedGradients::keys();
        keys.insert(keys.end(), ig_keys.begin(), ig_keys.end());
        ParamReader p("attribution", params, keys);
        method_ = p.choice("method", "grad_x_act", {"grad_x_act", "patching", "integrated_gradients"});
        top_ = static_cast<size_t>(p.integer("top", 50, 1, 100000));
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        if (method_ != "integrated_gradients")
            for (const auto& k : ig_keys)
                if (k != "batch_size" && p.has(k)) p.fail(k, "belongs to method: integrated_gradients");
        if (method_ == "grad_x_act" && p.has("batch_size"))
            p.fail("batch_size", "belongs to methods patching and integrated_gradients");
        batch_size_ = static_cast<size_t>(p.integer("batch_size", method_ == "patching" ? 16 : 32, 1, 4096));
        if (method_ == "integrated_gradients") {
            if (p.has("pairs") || p.has("by_label"))
                p.fail(p.has("pairs") ? "pairs" : "by_label",
                       "belongs to method: patching; integrated_gradients attributes each prompt on its own");
            ig_.configure(p, filter_.patterns());
            return;
        }
        if (method_ == "grad_x_act") {
            for (const char* k : {"pairs", "by_label", "metric", "tokens", "position"})
                if (p.has(k))
                    p.fail(k, "belongs to method: patching; grad_x_act reads the recipe's `gradient:` (its metric and "
                              "target)");
            return;
        }
        pairs_.configure(p);
        metric_.configure(p);
    }

    // Bad pairs (unknown prompts, different lengths) fail at plan time (--dry-run, no run directory), and again
    // in begin() for callers without a plan (Lua).
    void check(const nscope::RunContext& ctx) override {
        if (method_ == "patching") nscope::common::PairedPromptIds::check_up_front(pairs_, ctx.prompts, "attribution", true);
    }

    void begin(const nscope::RunContext& ctx) override {
        token_text_ = ctx.token_text;
        if (method_ == "grad_x_act") return;
        if (method_ == "integrated_gradients") return ig_.begin(ctx);
        if (ctx.model == nullptr || !ctx.model->run)
            throw nscope::InputError("attribution (method: patching) needs the run's model for its forwards");
        model_ = ctx.model;
        n_layers_ = ctx.model_info.value("n_layers", int64_t{0});
        if (n_layers_ <= 0) throw nscope::InputError("attribution: the model info has no n_layers");
        metric_.begin(model_, "attribution");
        check(ctx);
    }

    void consume(const nscope::Batch& batch) override {
        if (method_ == "patching") {
            prompts_.collect(pairs_, batch);
            return;
        }
        if (method_ == "integrated_gradients") return ig_.collect(batch);
        if (batch.gradients.empty())
            throw nscope::InputError("attribution (grad_x_act) needs gradients: give the recipe a `gradient:` "
                                     "(for example {metric: logprob, target: \" Lord\"}) and `hooks:` to attribute");
        for (const auto& a : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(a.hook, a.view, batch, lay)) continue;
            const nscope::ActivationView* g = batch.find_gradient(a.hook);
            if (g == nullptr) continue;
            NeuronSums& s = sums_[a.hook];
            const auto N = static_cast<size_t>(lay.neurons);
            if (s.signed_sum.empty()) s.signed_sum.assign(N, 0.0), s.abs_sum.assign(N, 0.0);
            for (size_t r = 0; r < batch.rows; ++r)
                for (size_t q = 0; q < batch.positions; ++q) {
                    if (!batch.valid(r, q)) continue;
                    const float* av = lay.at(a.view, r, q);
                    const float* gv = lay.at(*g, r, q);
                    for (size_t n = 0; n < N; ++n) {
                        const double x = static_cast<double>(av[n]) * gv[n];
                        s.signed_sum[n] += x;
                        s.abs_sum[n] += std::abs(x);
                    }
                    ++s.tokens;
                }
        }
    }

    bool mergeable() const override { return method_ == "grad_x_act"; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Attribution&>(other);
        for (const auto& [hook, s] : o.sums_) {
            NeuronSums& m = sums_[hook];
            if (m.signed_sum.empty()) m.signed_sum.assign(s.signed_sum.size(), 0.0), m.abs_sum.assign(s.abs_sum.size(), 0.0);
            for (size_t n = 0; n < s.signed_sum.size(); ++n) m.signed_sum[n] += s.signed_sum[n], m.abs_sum[n] += s.abs_sum[n];
            m.tokens += s.tokens;
        }
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        if (method_ == "integrated_gradients") return ig_.finish(top_);
        return method_ == "grad_x_act" ? finish_grad_x_act() : finish_patching();
    }

private:
    nscope::Result finish_grad_x_act() {
        nscope::Result res;
        struct Entry {
            std::string hook;
            size_t neuron;
            double mean, mean_abs;
        };
        std::vector<Entry> all;
        nlohmann::json by_hook = nlohmann::json::object();
        for (const auto& hook : nscope::common::hooks_in_order(sums_)) {
            const NeuronSums& s = sums_.at(hook);
            const double n = static_cast<double>(std::max<uint64_t>(1, s.tokens));
            std::vector<float> mean(s.signed_sum.size()), mean_abs(s.abs_sum.size());
            double total = 0;
            for (size_t i = 0; i < mean.size(); ++i) {
                mean[i] = static_cast<float>(s.signed_sum[i] / n);
                mean_abs[i] = static_cast<float>(s.abs_sum[i] / n);
                total += s.abs_sum[i] / n;
                all.push_back({hook, i, s.signed_sum[i] / n, s.abs_sum[i] / n});
            }
            by_hook[hook] = {{"tokens", s.tokens}, {"neurons", mean.size()}, {"total_abs", total}};
            const auto N = static_cast<int64_t>(mean.size());
            res.set_array(hook + ".attribution", nscope::NdArray::floats({N}, std::move(mean)));
            res.set_array(hook + ".abs_attribution", nscope::NdArray::floats({N}, std::move(mean_abs)));
        }
        const size_t k = std::min(top_, all.size());
        std::partial_sort(all.begin(), all.begin() + static_cast<ptrdiff_t>(k), all.end(), [](const Entry& a, const Entry& b) {
            return a.mean_abs > b.mean_abs || (a.mean_abs == b.mean_abs && (a.hook < b.hook || (a.hook == b.hook && a.neuron < b.neuron)));
        });
        nscope::Table table;
        table.columns = {"hook", "neuron", "mean_grad_x_act", "mean_abs_grad_x_act"};
        nlohmann::json x = nlohmann::json::array(), y = nlohmann::json::array();
        for (size_t i = 0; i < k; ++i) {
            table.add_row({all[i].hook, all[i].neuron, all[i].mean, all[i].mean_abs});
            if (i < 30) {
                x.push_back(short_hook(all[i].hook) + " #" + std::to_string(all[i].neuron));
                y.push_back(all[i].mean);
            }
        }
        res.set_table("top_neurons", std::move(table));
        res.set_figure("top_neurons", {{"kind", "bar"}, {"title", "mean gradient × activation, strongest neurons"},
                                       {"x", x}, {"y", y}, {"x_label", "neuron"}, {"y_label", "mean g·a"}});
        res.data["summary"] = {{"method", "grad_x_act"}, {"hooks", sums_.size()}, {"by_hook", by_hook},
                               {"skipped", filter_.skipped_json()}};
        return res;
    }

    nscope::Result finish_patching() {
        const auto pairs = prompts_.make(pairs_, "attribution");
        const auto L = static_cast<size_t>(n_layers_);
        std::vector<std::string> z_hooks, resid_hooks, mlp_hooks, all;
        for (size_t l = 0; l < L; ++l) {
            const std::string b = "blocks." + std::to_string(l) + ".";
            z_hooks.push_back(b + "attn.hook_z"), resid_hooks.push_back(b + "hook_resid_pre"), mlp_hooks.push_back(b + "mlp.hook_post");
        }
        all = z_hooks;
        all.insert(all.end(), resid_hooks.begin(), resid_hooks.end());
        all.insert(all.end(), mlp_hooks.begin(), mlp_hooks.end());

        std::vector<std::vector<double>> heads(L), neurons(L), resid(L);
        size_t max_len = 0, used = 0;
        nscope::Table per_pair;
        per_pair.columns = {"clean", "corrupted", "metric_clean", "metric_corrupted", "estimated_total"};
        // The pairs in chunks of `batch_size`: one forward of the clean prompts (activations, metric) and one of the
        // corrupted prompts (activations, metric, one backward); each row's gradient is its own.
        for (size_t start = 0; start < pairs.size(); start += batch_size_) {
            const size_t end = std::min(pairs.size(), start + batch_size_);
            nscope::ModelCall clean_call, corrupt_call;
            std::vector<nscope::Metric> metrics;
            for (size_t j = start; j < end; ++j) {
                const auto [clean, corrupt] = pairs[j];
                const auto [clean_ids, corrupt_ids] = prompts_.equal_length(clean, corrupt, "attribution");
                metrics.push_back(metric_.resolve(prompts_.labels(clean), clean));
                clean_call.rows.push_back(*clean_ids), corrupt_call.rows.push_back(*corrupt_ids);
                clean_call.prompt_indices.push_back(static_cast<size_t>(clean));
                corrupt_call.prompt_indices.push_back(static_cast<size_t>(corrupt));
            }
            nscope::Metric metric = metrics[0];
            metric.tokens.clear();
            if (!metrics[0].tokens.empty())
                for (const auto& m : metrics) metric.row_tokens.push_back(m.tokens);
            clean_call.metric = corrupt_call.metric = metric;
            clean_call.capture = corrupt_call.capture = all;
            corrupt_call.gradients = all;
            const nscope::ModelOutput c = model_->run(clean_call);
            const nscope::ModelOutput k = model_->run(corrupt_call);
            for (size_t j = start; j < end; ++j) {
                const size_t row = j - start;
                const auto [clean, corrupt] = pairs[j];
                const double denom = c.metric[row] - k.metric[row];
                prompts_.require_metric_gap(clean, corrupt, c.metric[row], k.metric[row], "attribution");
                const auto P = static_cast<size_t>(c.lengths[row]);
                max_len = std::max(max_len, P);
                double total = 0;
                for (size_t l = 0; l < L; ++l) {
                    // (clean − corrupted) · grad over this row's real positions, per element; reduced per component
                    // with the element's index within the row.
                    auto delta = [&](const std::string& hook, auto&& add) {
                        const auto& a = c.captures.at(hook);
                        const auto& b = k.captures.at(hook);
                        const auto& g = k.gradients.at(hook);
                        const size_t per_row = a.data.size() / static_cast<size_t>(a.shape[0]);
                        const size_t per_pos = per_row / static_cast<size_t>(a.shape[1]);
                        const size_t off = row * per_row;
                        for (size_t i = 0; i < P * per_pos; ++i)
                            add(i, (static_cast<double>(a.data[off + i]) - b.data[off + i]) * g.data[off + i] / denom);
                    };
                    const auto& zs = c.captures.at(z_hooks[l]).shape;  // [rows, p, h, dh]
                    const auto H = static_cast<size_t>(zs[2]), dh = static_cast<size_t>(zs[3]);
                    heads[l].resize(H, 0.0);
                    delta(z_hooks[l], [&](size_t i, double x) { heads[l][(i / dh) % H] += x; });
                    const auto M = static_cast<size_t>(c.captures.at(mlp_hooks[l]).shape[2]);  // [rows, p, m]
                    neurons[l].resize(M, 0.0);
                    delta(mlp_hooks[l], [&](size_t i, double x) { neurons[l][i % M] += x; });
                    const auto D = static_cast<size_t>(c.captures.at(resid_hooks[l]).shape[2]);
                    if (resid[l].size() < P) resid[l].resize(P, 0.0);
                    double layer_total = 0;
                    delta(resid_hooks[l], [&](size_t i, double x) { resid[l][i / D] += x, layer_total += x; });
                    if (l == 0) total = layer_total;  // the whole residual stream at the embedding: everything
                }
                per_pair.add_row({clean, corrupt, c.metric[row], k.metric[row], total});
                ++used;
            }
        }
        const double n = static_cast<double>(used);
        nscope::Result res;
        nlohmann::json layer_names = nlohmann::json::array();
        for (size_t l = 0; l < L; ++l) layer_names.push_back("L" + std::to_string(l));
        auto heat = [&](const std::vector<std::vector<double>>& m, size_t cols) {
            nlohmann::json z = nlohmann::json::array();
            std::vector<float> flat;
            for (const auto& row : m) {
                nlohmann::json zr = nlohmann::json::array();
                for (size_t j = 0; j < cols; ++j) {
                    const double v = j < row.size() ? row[j] / n : 0.0;
                    zr.push_back(v);
                    flat.push_back(static_cast<float>(v));
                }
                z.push_back(std::move(zr));
            }
            return std::make_pair(z, flat);
        };
        size_t H = 0, M = 0;
        for (size_t l = 0; l < L; ++l) H = std::max(H, heads[l].size()), M = std::max(M, neurons[l].size());
        auto [hz, hflat] = heat(heads, H);
        auto [rz, rflat] = heat(resid, max_len);
        auto [nz, nflat] = heat(neurons, M);
        const auto Li = static_cast<int64_t>(L);
        res.set_array("heads.effect", nscope::NdArray::floats({Li, static_cast<int64_t>(H)}, std::move(hflat)));
        res.set_array("resid.effect", nscope::NdArray::floats({Li, static_cast<int64_t>(max_len)}, std::move(rflat)));
        res.set_array("neurons.effect", nscope::NdArray::floats({Li, static_cast<int64_t>(M)}, std::move(nflat)));
        nlohmann::json head_names = nlohmann::json::array(), pos_names = nlohmann::json::array();
        for (size_t h = 0; h < H; ++h) head_names.push_back("H" + std::to_string(h));
        for (size_t q = 0; q < max_len; ++q) pos_names.push_back(q);
        res.set_figure("heads", {{"kind", "heatmap"}, {"title", "attribution patching: heads (1 = restores clean)"},
                                 {"x", head_names}, {"y", layer_names}, {"z", hz}, {"zmid", 0}, {"x_label", "head"},
                                 {"y_label", "layer"}, {"z_label", "normalised effect"}});
        res.set_figure("resid", {{"kind", "heatmap"}, {"title", "attribution patching: residual stream by position"},
                                 {"x", pos_names}, {"y", layer_names}, {"z", rz}, {"zmid", 0}, {"x_label", "position"},
                                 {"y_label", "layer (resid_pre)"}, {"z_label", "normalised effect"}});
        // The strongest MLP neurons.
        struct Top {
            size_t layer, neuron;
            double v;
        };
        std::vector<Top> tops;
        for (size_t l = 0; l < L; ++l)
            for (size_t i = 0; i < neurons[l].size(); ++i) tops.push_back({l, i, neurons[l][i] / n});
        const size_t k = std::min(top_, tops.size());
        std::partial_sort(tops.begin(), tops.begin() + static_cast<ptrdiff_t>(k), tops.end(),
                          [](const Top& a, const Top& b) { return std::abs(a.v) > std::abs(b.v); });
        nscope::Table top_table;
        top_table.columns = {"layer", "neuron", "effect"};
        for (size_t i = 0; i < k; ++i) top_table.add_row({tops[i].layer, tops[i].neuron, tops[i].v});
        res.set_table("top_neurons", std::move(top_table));
        res.set_table("pairs", std::move(per_pair));
        res.data["dims"] = {{"heads.effect", nlohmann::json::array({"layer", "head"})},
                            {"resid.effect", nlohmann::json::array({"layer", "position"})},
                            {"neurons.effect", nlohmann::json::array({"layer", "neuron"})}};
        res.data["summary"] = {{"method", "patching"}, {"pairs", used}, {"metric", metric_.kind()}};
        return res;
    }

    static std::string short_hook(const std::string& hook) {
        const int l = nscope::common::hook_layer(hook);
        const size_t dot = hook.rfind(".hook_");
        std::string s = l >= 0 ? "L" + std::to_string(l) + " " : "";
        return s + (dot == std::string::npos ? hook : hook.substr(hook.find('.', hook.find('.') + 1) + 1));
    }

    std::string method_;
    size_t top_ = 50;
    nscope::common::HookFilter filter_;
    std::map<std::string, NeuronSums> sums_;
    // patching
    nscope::common::PromptPairs pairs_;
    nscope::common::MetricSpec metric_;
    nscope::common::PairedPromptIds prompts_;
    const nscope::ModelAccess* model_ = nullptr;
    int64_t n_layers_ = 0;
    nscope::attribution::IntegratedGradients ig_;
    size_t batch_size_ = 16;  ///< patching: pairs per forward
    std::function<std::string(int64_t)> token_text_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Attribution, "attribution", "1.1.0",
                       "gradient x activation per neuron, attribution patching over clean/corrupted prompt pairs "
                       "(heads, residual positions, MLP neurons), integrated gradients over MLP neurons and knowledge "
                       "neurons")
