// `logit_lens` analyzer: every layer's residual stream read through the model's final norm and unembedding
// (the "logit lens"), compared with the model's own output distribution. Layers are the embedding
// (`blocks.0.hook_resid_pre`) and each block's `hook_resid_post`; the final norm's statistics are computed on
// each layer's vectors (RunContext::model->unembed), so the last layer reproduces `hook_logits`.
//
// Per layer, over every real position of every prompt (streamed; the unembedding is done one prompt at a time):
//   kl_to_final   KL(final || layer) of the next-token distributions (nats)
//   agreement     fraction of positions whose top-1 token equals the final top-1
//   final_rank    mean rank of the final top-1 token in the layer's distribution (0 = on top)
//   final_prob    mean probability the layer gives the final top-1 token
//   target_*      with `target`: probability and rank of that token at each prompt's last position
// Arrays `<hook>.kl_to_final` and `<hook>.final_prob` float32 [prompts, positions] (NaN beyond a prompt's end).
// The report shows the classic grid for the first `grid_prompts` prompts: layer x position, the top token of
// each cell written in it, coloured by its probability; a table lists the top `k` tokens of every cell.
// Mergeable: sums and per-prompt rows.
#include <nscope/sdk.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "nscope_common/hooks.h"
#include "nscope_common/params.h"

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct LayerSums {
    double kl = 0, agree = 0, rank = 0, prob = 0, target_prob = 0, target_rank = 0;
    uint64_t positions = 0, prompts = 0;
};

/// One prompt's per-layer rows (positions of that prompt).
struct PromptRows {
    std::vector<std::vector<float>> kl, prob;  // [layer][position]
};

/// One cell of the grid: the layer's top tokens at a position.
struct Cell {
    std::vector<std::pair<int64_t, float>> top;  // (token, probability), best first
};

class LogitLens : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("logit_lens", params, {"k", "target", "grid_prompts"});
        k_ = static_cast<size_t>(p.integer("k", 5, 1, 50));
        grid_prompts_ = static_cast<size_t>(p.integer("grid_prompts", 4, 0, 64));
        if (p.has("target")) {
            const auto& t = p.raw("target");
            if (t.is_string() && !t.get<std::string>().empty()) target_text_ = t.get<std::string>();
            else if (t.is_number_integer() && t.get<int64_t>() >= 0) target_ = t.get<int64_t>();
            else
                throw nscope::InputError("logit_lens: parameter 'target' must be a token's text or its id, got " +
                                         nscope::common::describe(t));
        }
    }

    std::vector<std::string> required_hooks() const override {
        return {"blocks.0.hook_resid_pre", "blocks.*.hook_resid_post"};
    }

    void begin(const nscope::RunContext& ctx) override {
        if (ctx.model == nullptr || !ctx.model->unembed)
            throw nscope::InputError("logit_lens needs the run's model to unembed the residual stream; run it from a "
                                     "recipe, or from Lua on a cache that names its model");
        model_ = ctx.model;
        token_text_ = ctx.token_text;
        vocab_ = ctx.model_info.value("vocab_size", int64_t{0});
        if (target_text_) {
            const auto ids = model_->tokenize(*target_text_);
            if (ids.size() != 1)
                throw nscope::InputError("logit_lens: target '" + *target_text_ + "' is " + std::to_string(ids.size()) +
                                         " tokens under this model's tokenizer; name a single token or give its id");
            target_ = ids[0];
        }
        if (target_ && vocab_ > 0 && *target_ >= vocab_)
            throw nscope::InputError("logit_lens: target token id " + std::to_string(*target_) +
                                     " is outside the vocabulary (size " + std::to_string(vocab_) + ")");
        // Layers in model order: the embedding (resid_pre of block 0), then every block's output.
        for (const auto& h : ctx.hooks) {
            if (h.name == "blocks.0.hook_resid_pre") layers_.insert(layers_.begin(), h.name);
            else if (h.name.ends_with(".hook_resid_post")) layers_.push_back(h.name);
        }
        std::stable_sort(layers_.begin() + (layers_.empty() || layers_[0] != "blocks.0.hook_resid_pre" ? 0 : 1),
                         layers_.end(), nscope::common::hook_order);
        if (layers_.size() < 2 || !layers_.back().ends_with(".hook_resid_post"))
            throw nscope::InputError("logit_lens: the model exposes no blocks.*.hook_resid_post to read");
        sums_.assign(layers_.size(), {});
    }

    void consume(const nscope::Batch& batch) override {
        std::vector<const nscope::ActivationView*> views;
        for (const auto& name : layers_) {
            const nscope::ActivationView* v = batch.find(name);
            if (v == nullptr) throw nscope::RuntimeError("logit_lens: hook " + name + " missing from the batch");
            views.push_back(v);
        }
        const int64_t d = views[0]->inner();
        for (size_t r = 0; r < batch.rows; ++r) {
            const size_t len = batch.length(r);
            if (len == 0) continue;
            const nscope::PromptInfo* info = batch.prompts[r];
            auto row_view = [&](const nscope::ActivationView* v) {
                return nscope::ActivationView{v->f32() + r * batch.positions * static_cast<size_t>(d),
                                              nscope::DType::Float32, {1, static_cast<int64_t>(len), d}};
            };
            // The final distribution: the last layer through the head (equals hook_logits).
            const nscope::OwnedTensor final_logits = model_->unembed(row_view(views.back()));
            const auto V = static_cast<size_t>(final_logits.shape.back());
            std::vector<double> final_logp(len * V);
            std::vector<int64_t> final_top(len);
            for (size_t q = 0; q < len; ++q) {
                log_softmax(final_logits.data.data() + q * V, V, final_logp.data() + q * V);
                final_top[q] = static_cast<int64_t>(std::max_element(final_logits.data.begin() + static_cast<ptrdiff_t>(q * V),
                                                                     final_logits.data.begin() + static_cast<ptrdiff_t>((q + 1) * V)) -
                                                    (final_logits.data.begin() + static_cast<ptrdiff_t>(q * V)));
            }
            PromptRows rows;
            const bool grid = info != nullptr && grid_.size() < grid_prompts_;
            std::vector<std::vector<Cell>> cells;
            std::vector<double> logp(len * V);
            for (size_t l = 0; l < layers_.size(); ++l) {
                const bool last = l + 1 == layers_.size();
                const nscope::OwnedTensor logits = last ? nscope::OwnedTensor{} : model_->unembed(row_view(views[l]));
                const float* z = last ? final_logits.data.data() : logits.data.data();
                std::vector<float> kl_row(len), prob_row(len);
                std::vector<Cell> cell_row;
                LayerSums& s = sums_[l];
                for (size_t q = 0; q < len; ++q) {
                    const float* zq = z + q * V;
                    double* lp = logp.data() + q * V;
                    if (last) std::copy(final_logp.begin() + static_cast<ptrdiff_t>(q * V),
                                        final_logp.begin() + static_cast<ptrdiff_t>((q + 1) * V), lp);
                    else log_softmax(zq, V, lp);
                    const double* lf = final_logp.data() + q * V;
                    double kl = 0;
                    for (size_t v = 0; v < V; ++v) kl += std::exp(lf[v]) * (lf[v] - lp[v]);
                    const int64_t ft = final_top[q];
                    size_t rank = 0;
                    for (size_t v = 0; v < V; ++v) rank += zq[v] > zq[ft];
                    const size_t top = static_cast<size_t>(std::max_element(zq, zq + V) - zq);
                    const double p_final = std::exp(lp[ft]);
                    kl_row[q] = static_cast<float>(std::max(0.0, kl));
                    prob_row[q] = static_cast<float>(p_final);
                    s.kl += std::max(0.0, kl), s.agree += static_cast<int64_t>(top) == ft, s.rank += static_cast<double>(rank);
                    s.prob += p_final, ++s.positions;
                    if (grid) cell_row.push_back(top_cell(zq, lp, V));
                }
                if (target_) {
                    const float* zl = z + (len - 1) * V;
                    size_t rank = 0;
                    for (size_t v = 0; v < V; ++v) rank += zl[v] > zl[*target_];
                    s.target_prob += std::exp(logp[(len - 1) * V + static_cast<size_t>(*target_)]);
                    s.target_rank += static_cast<double>(rank);
                }
                ++s.prompts;
                rows.kl.push_back(std::move(kl_row));
                rows.prob.push_back(std::move(prob_row));
                if (grid) cells.push_back(std::move(cell_row));
            }
            const size_t index = info != nullptr ? info->index : next_index_;
            next_index_ = index + 1;
            max_len_ = std::max(max_len_, len);
            prompt_rows_[index] = std::move(rows);
            if (grid) {
                GridPrompt g;
                g.cells = std::move(cells);
                g.tokens = info->tokens;
                grid_[index] = std::move(g);
            }
        }
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const LogitLens&>(other);
        if (sums_.size() < o.sums_.size()) sums_.resize(o.sums_.size());
        if (layers_.empty()) layers_ = o.layers_;
        for (size_t l = 0; l < o.sums_.size(); ++l) {
            LayerSums& a = sums_[l];
            const LayerSums& b = o.sums_[l];
            a.kl += b.kl, a.agree += b.agree, a.rank += b.rank, a.prob += b.prob;
            a.target_prob += b.target_prob, a.target_rank += b.target_rank;
            a.positions += b.positions, a.prompts += b.prompts;
        }
        for (const auto& [i, rows] : o.prompt_rows_) prompt_rows_[i] = rows;
        for (const auto& [i, g] : o.grid_) grid_[i] = g;
        while (grid_.size() > grid_prompts_) grid_.erase(std::prev(grid_.end()));
        max_len_ = std::max(max_len_, o.max_len_);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const size_t L = layers_.size();
        nlohmann::json names = nlohmann::json::array();
        for (size_t l = 0; l < L; ++l) names.push_back(layer_label(l));
        nscope::Table table;
        table.columns = {"layer", "hook", "kl_to_final", "agreement", "final_rank", "final_prob"};
        if (target_) table.columns.insert(table.columns.end(), {"target_prob", "target_rank"});
        nlohmann::json kl = nlohmann::json::array(), agree = nlohmann::json::array(), tprob = nlohmann::json::array();
        auto mean = [](double sum, uint64_t n) { return n ? nlohmann::json(sum / static_cast<double>(n)) : nlohmann::json(nullptr); };
        for (size_t l = 0; l < L; ++l) {
            const LayerSums& s = sums_[l];
            nlohmann::json row = {names[l], layers_[l], mean(s.kl, s.positions), mean(s.agree, s.positions),
                                  mean(s.rank, s.positions), mean(s.prob, s.positions)};
            if (target_) row.insert(row.end(), {mean(s.target_prob, s.prompts), mean(s.target_rank, s.prompts)});
            kl.push_back(row[2]);
            agree.push_back(row[3]);
            if (target_) tprob.push_back(row[6]);
            table.add_row(std::move(row));
        }
        res.set_table("layers", std::move(table));
        res.set_figure("kl_by_layer", {{"kind", "line"}, {"title", "KL(final || layer) by layer"}, {"x", names},
                                       {"y", kl}, {"x_label", "layer"}, {"y_label", "mean KL (nats)"}});
        res.set_figure("agreement_by_layer",
                       {{"kind", "line"}, {"title", "top-1 agreement with the final prediction"}, {"x", names},
                        {"y", agree}, {"x_label", "layer"}, {"y_label", "fraction of positions"}});
        if (target_)
            res.set_figure("target_by_layer",
                           {{"kind", "line"}, {"title", "probability of '" + token(*target_) + "' at the last position"},
                            {"x", names}, {"y", tprob}, {"x_label", "layer"}, {"y_label", "mean probability"}});

        // Per-prompt arrays [prompts, positions], NaN beyond each prompt's end (prompts in index order).
        const size_t N = prompt_rows_.empty() ? 0 : prompt_rows_.rbegin()->first + 1, P = max_len_;
        for (size_t l = 0; l < L; ++l) {
            std::vector<float> klv(N * P, kNaN), pv(N * P, kNaN);
            for (const auto& [i, rows] : prompt_rows_) {
                std::copy(rows.kl[l].begin(), rows.kl[l].end(), klv.begin() + static_cast<ptrdiff_t>(i * P));
                std::copy(rows.prob[l].begin(), rows.prob[l].end(), pv.begin() + static_cast<ptrdiff_t>(i * P));
            }
            const auto shape = std::vector<int64_t>{static_cast<int64_t>(N), static_cast<int64_t>(P)};
            res.set_array(layers_[l] + ".kl_to_final", nscope::NdArray::floats(shape, std::move(klv)));
            res.set_array(layers_[l] + ".final_prob", nscope::NdArray::floats(shape, std::move(pv)));
        }

        // The grid of the first prompts, and the top tokens of each of its cells.
        nscope::Table cells;
        cells.columns = {"prompt", "position", "input", "layer", "top_tokens", "top_probs"};
        for (const auto& [i, g] : grid_) {
            nlohmann::json z = nlohmann::json::array(), text = nlohmann::json::array(), x = nlohmann::json::array();
            const size_t len = g.cells.empty() ? 0 : g.cells[0].size();
            for (size_t q = 0; q < len; ++q) x.push_back(std::to_string(q) + ":" + (q < g.tokens.size() ? g.tokens[q] : ""));
            for (size_t l = 0; l < g.cells.size(); ++l) {
                nlohmann::json zr = nlohmann::json::array(), tr = nlohmann::json::array();
                for (size_t q = 0; q < g.cells[l].size(); ++q) {
                    const Cell& c = g.cells[l][q];
                    zr.push_back(c.top[0].second);
                    tr.push_back(token(c.top[0].first));
                    nlohmann::json toks = nlohmann::json::array(), probs = nlohmann::json::array();
                    for (const auto& [t, p] : c.top) toks.push_back(token(t)), probs.push_back(p);
                    cells.add_row({i, q, q < g.tokens.size() ? g.tokens[q] : "", names[l], toks, probs});
                }
                z.push_back(std::move(zr));
                text.push_back(std::move(tr));
            }
            res.set_figure("grid_prompt_" + std::to_string(i),
                           {{"kind", "heatmap"}, {"title", "logit lens, prompt " + std::to_string(i) + ": top token per layer and position"},
                            {"x", x}, {"y", names}, {"z", z}, {"text", text}, {"x_label", "position: input token"},
                            {"y_label", "layer"}, {"z_label", "probability"}});
        }
        res.set_table("grid_cells", std::move(cells));
        uint64_t positions = sums_.empty() ? 0 : sums_.back().positions;
        res.data["layers"] = names;
        res.data["hooks"] = layers_;
        res.data["summary"] = {{"layers", L}, {"prompts", prompt_rows_.size()}, {"positions", positions}, {"k", k_}};
        if (target_) res.data["summary"]["target"] = {{"id", *target_}, {"text", token(*target_)}};
        // The first layer whose top-1 agrees with the final prediction at half the positions or more.
        nlohmann::json first = nullptr;
        for (size_t l = 0; l < L && first.is_null(); ++l)
            if (sums_[l].positions && sums_[l].agree / static_cast<double>(sums_[l].positions) >= 0.5) first = names[l];
        res.data["summary"]["first_layer_agreeing"] = first;
        return res;
    }

private:
    struct GridPrompt {
        std::vector<std::vector<Cell>> cells;  // [layer][position]
        std::vector<std::string> tokens;
    };

    static void log_softmax(const float* z, size_t n, double* out) {
        const double m = *std::max_element(z, z + n);
        double sum = 0;
        for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(z[i]) - m);
        const double lse = m + std::log(sum);
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<double>(z[i]) - lse;
    }

    Cell top_cell(const float* z, const double* logp, size_t V) const {
        std::vector<int64_t> idx(V);
        std::iota(idx.begin(), idx.end(), 0);
        const size_t k = std::min(k_, V);
        std::partial_sort(idx.begin(), idx.begin() + static_cast<ptrdiff_t>(k), idx.end(),
                          [&](int64_t a, int64_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
        Cell c;
        for (size_t i = 0; i < k; ++i) c.top.emplace_back(idx[i], static_cast<float>(std::exp(logp[idx[i]])));
        return c;
    }

    std::string layer_label(size_t l) const {
        if (layers_[l] == "blocks.0.hook_resid_pre") return "embed";
        std::string s = "L";
        s += std::to_string(nscope::common::hook_layer(layers_[l]));
        return s;
    }
    std::string token(int64_t id) const { return token_text_ ? token_text_(id) : std::to_string(id); }

    size_t k_ = 5, grid_prompts_ = 4;
    std::optional<std::string> target_text_;
    std::optional<int64_t> target_;
    const nscope::ModelAccess* model_ = nullptr;
    std::function<std::string(int64_t)> token_text_;
    int64_t vocab_ = 0;
    std::vector<std::string> layers_;
    std::vector<LayerSums> sums_;
    std::map<size_t, PromptRows> prompt_rows_;
    std::map<size_t, GridPrompt> grid_;
    size_t max_len_ = 0, next_index_ = 0;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(LogitLens, "logit_lens", "1.0.0",
                       "every layer's residual stream through the final norm and unembedding: top tokens, KL to the "
                       "final distribution, rank of the final prediction")
