// `next_token` analyzer: the model's next-token distribution at the end of each prompt, and how it changes
// between paired prompts — e.g. the same prompt with and without a neuron ablation (an intervention limited
// to one copy with `prompts: [...]`). Reads `hook_logits`.
//
// Per prompt: the top-k next tokens with probabilities. Per pair (a, b): KL(a || b), the total variation
// distance, a's top token and its probability under both, and the tokens whose probability moved most.
// With `loss: true` (or `loss_by: LABEL`): each prompt's mean next-token cross-entropy and top-1 accuracy over
// its real positions, and (loss_by) the same pooled over the prompts of each value of a label — e.g. the loss
// on each concept's prompts before and after an intervention.
// Memory: k entries per prompt, plus one vocabulary-sized distribution per paired prompt.
#include <nscope/sdk.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "nscope_common/pairs.h"
#include "nscope_common/params.h"

namespace {

struct PromptDist {
    std::string text;
    nlohmann::json labels;
    std::vector<std::pair<int64_t, double>> top;  // (token, prob), best first
    std::vector<float> logp;                      // full log-distribution (paired prompts only)
    double loss_sum = 0;                          // Σ −log p(next token) over the predicted positions (loss)
    size_t predicted = 0, correct = 0;            // positions with a next token; those whose top-1 is it
};

/// log Σ exp(x[v]) in double.
double log_sum_exp(const float* x, size_t vocab) {
    double mx = -INFINITY;
    for (size_t v = 0; v < vocab; ++v) mx = std::max(mx, static_cast<double>(x[v]));
    double z = 0;
    for (size_t v = 0; v < vocab; ++v) z += std::exp(x[v] - mx);
    return mx + std::log(z);
}

class NextToken : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("next_token", params, {"k", "pairs", "by_label", "changed_tokens", "loss", "loss_by"});
        k_ = static_cast<size_t>(p.integer("k", 5, 1, 1000));
        changed_ = static_cast<size_t>(p.integer("changed_tokens", 5, 0, 1000));
        paired_ = p.has("pairs") || p.has("by_label");
        if (paired_) pairs_.configure(p);
        if (p.has("loss_by") && (!p.raw("loss_by").is_string() || p.raw("loss_by").get<std::string>().empty()))
            p.fail("loss_by", "must be the name of a prompt label, got " + nscope::common::describe(p.raw("loss_by")));
        loss_by_ = p.has("loss_by") ? p.raw("loss_by").get<std::string>() : "";
        loss_ = p.boolean("loss", !loss_by_.empty());
        if (!loss_ && !loss_by_.empty()) p.fail("loss", "is false but loss_by asks for the loss per label");
    }

    std::vector<std::string> required_hooks() const override { return {"hook_logits"}; }

    void begin(const nscope::RunContext& ctx) override { token_text_ = ctx.token_text; }

    void consume(const nscope::Batch& batch) override {
        const nscope::ActivationView* logits = batch.find("hook_logits");
        if (!logits) throw nscope::RuntimeError("next_token: hook_logits was not captured");
        const auto vocab = static_cast<size_t>(logits->inner());
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const int64_t index = info ? static_cast<int64_t>(info->index) : static_cast<int64_t>(seen_ + r);
            const size_t len = batch.length(r);
            if (len == 0) continue;
            const float* x = logits->f32() + (r * batch.positions + (len - 1)) * vocab;
            const double lse = log_sum_exp(x, vocab);  // log-softmax in double
            PromptDist& d = prompts_[index];
            if (loss_) {
                d.loss_sum = 0, d.predicted = 0, d.correct = 0;
                const int64_t* ids = batch.input_ids + r * batch.positions;
                for (size_t q = 0; q + 1 < len; ++q) {
                    const float* y = logits->f32() + (r * batch.positions + q) * vocab;
                    const auto next = static_cast<size_t>(ids[q + 1]);
                    if (next >= vocab) continue;
                    d.loss_sum += log_sum_exp(y, vocab) - y[next];
                    ++d.predicted;
                    d.correct += static_cast<size_t>(std::max_element(y, y + vocab) - y) == next;
                }
            }
            if (info) d.text = info->text, d.labels = info->labels;
            std::vector<int64_t> order(vocab);
            for (size_t v = 0; v < vocab; ++v) order[v] = static_cast<int64_t>(v);
            const size_t k = std::min(k_, vocab);
            std::partial_sort(order.begin(), order.begin() + static_cast<int64_t>(k), order.end(),
                              [&](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
            d.top.clear();
            for (size_t i = 0; i < k; ++i) d.top.emplace_back(order[i], std::exp(x[order[i]] - lse));
            if (paired_ && pairs_.wanted(index, info)) {
                d.logp.resize(vocab);
                for (size_t v = 0; v < vocab; ++v) d.logp[v] = static_cast<float>(x[v] - lse);
            }
        }
        seen_ += batch.rows;
    }

    nscope::Result finish() override {
        nscope::Result res;
        nscope::Table top;
        top.columns = {"prompt", "text", "rank", "token_id", "token", "prob"};
        for (const auto& [i, d] : prompts_)
            for (size_t r = 0; r < d.top.size(); ++r)
                top.add_row({i, d.text, r + 1, d.top[r].first, text(d.top[r].first), d.top[r].second});
        res.set_table("top_tokens", std::move(top));
        nlohmann::json summary = {{"prompts", prompts_.size()}, {"k", k_}};
        if (loss_) add_loss(res, summary);
        if (paired_) {
            std::map<int64_t, nlohmann::json> labels;
            for (const auto& [i, d] : prompts_) labels[i] = d.labels;
            const auto pairs = pairs_.make(labels);
            nscope::Table effects, moved;
            effects.columns = {"pair", "a", "b", "a_text", "b_text", "kl", "total_variation", "a_top_token",
                               "b_top_token", "p_a_top_in_a", "p_a_top_in_b", "top_changed"};
            moved.columns = {"pair", "token_id", "token", "p_a", "p_b", "delta"};
            nlohmann::json kl_x = nlohmann::json::array(), kl_y = nlohmann::json::array();
            double kl_sum = 0;
            size_t n = 0;
            for (size_t q = 0; q < pairs.size(); ++q) {
                const auto [a, b] = pairs[q];
                const auto ia = prompts_.find(a), ib = prompts_.find(b);
                if (ia == prompts_.end() || ib == prompts_.end() || ia->second.logp.empty() || ib->second.logp.empty())
                    continue;
                const auto& pa = ia->second.logp;
                const auto& pb = ib->second.logp;
                if (pa.size() != pb.size()) continue;
                double kl = 0, tv = 0;
                std::vector<std::pair<double, int64_t>> deltas;
                for (size_t v = 0; v < pa.size(); ++v) {
                    const double p = std::exp(static_cast<double>(pa[v])), o = std::exp(static_cast<double>(pb[v]));
                    kl += p * (static_cast<double>(pa[v]) - pb[v]);
                    tv += std::abs(p - o);
                    deltas.emplace_back(-std::abs(o - p), static_cast<int64_t>(v));
                }
                tv *= 0.5;
                kl = std::max(0.0, kl);  // float rounding can make a zero KL slightly negative
                const int64_t at = ia->second.top.front().first, bt = ib->second.top.front().first;
                effects.add_row({q, a, b, ia->second.text, ib->second.text, kl, tv, text(at), text(bt),
                                 std::exp(static_cast<double>(pa[at])), std::exp(static_cast<double>(pb[at])), at != bt});
                const size_t c = std::min(changed_, deltas.size());
                std::partial_sort(deltas.begin(), deltas.begin() + static_cast<int64_t>(c), deltas.end());
                for (size_t i = 0; i < c; ++i) {
                    const int64_t v = deltas[i].second;
                    const double p = std::exp(static_cast<double>(pa[v])), o = std::exp(static_cast<double>(pb[v]));
                    moved.add_row({q, v, text(v), p, o, o - p});
                }
                kl_x.push_back(std::to_string(a) + " vs " + std::to_string(b));
                kl_y.push_back(kl);
                kl_sum += kl;
                ++n;
            }
            res.set_table("pair_effects", std::move(effects));
            res.set_table("changed_tokens", std::move(moved));
            res.set_figure("kl_by_pair", {{"kind", "bar"}, {"x", kl_x}, {"y", kl_y}, {"title", "KL(a || b) of the next-token distribution"},
                                          {"x_label", "pair"}, {"y_label", "KL (nats)"}});
            summary["pairs"] = n;
            summary["mean_kl"] = n ? kl_sum / static_cast<double>(n) : 0.0;
        }
        res.data["summary"] = summary;
        return res;
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        for (const auto& [i, d] : static_cast<const NextToken&>(other).prompts_) prompts_.emplace(i, d);
    }

private:
    /// Tables `loss` (per prompt) and, with loss_by, `loss_by_label` (token-weighted over each label value's prompts).
    void add_loss(nscope::Result& res, nlohmann::json& summary) const {
        nscope::Table per_prompt;
        per_prompt.columns = {"prompt", "text", "predicted", "loss", "accuracy"};
        struct Sums {
            size_t prompts = 0, predicted = 0, correct = 0;
            double loss = 0;
        };
        Sums all;
        std::map<std::string, Sums> by;
        size_t unlabelled = 0;
        auto ratio = [](double a, size_t n) { return n ? nlohmann::json(a / static_cast<double>(n)) : nlohmann::json(); };
        for (const auto& [i, d] : prompts_) {
            per_prompt.add_row({i, d.text, d.predicted, ratio(d.loss_sum, d.predicted), ratio(static_cast<double>(d.correct), d.predicted)});
            auto add = [&](Sums& s) { ++s.prompts, s.predicted += d.predicted, s.correct += d.correct, s.loss += d.loss_sum; };
            add(all);
            if (loss_by_.empty()) continue;
            if (!d.labels.is_object() || !d.labels.contains(loss_by_)) {
                ++unlabelled;
                continue;
            }
            const auto& v = d.labels[loss_by_];
            add(by[v.is_string() ? v.get<std::string>() : v.dump()]);
        }
        res.set_table("loss", std::move(per_prompt));
        summary["loss"] = {{"predicted", all.predicted}, {"loss", ratio(all.loss, all.predicted)},
                           {"accuracy", ratio(static_cast<double>(all.correct), all.predicted)}};
        if (loss_by_.empty()) return;
        nscope::Table table;
        table.columns = {"value", "prompts", "predicted", "loss", "accuracy"};
        nlohmann::json x = nlohmann::json::array(), y = nlohmann::json::array();
        for (const auto& [value, s] : by) {
            table.add_row({value, s.prompts, s.predicted, ratio(s.loss, s.predicted), ratio(static_cast<double>(s.correct), s.predicted)});
            x.push_back(value), y.push_back(ratio(s.loss, s.predicted));
        }
        res.set_table("loss_by_label", std::move(table));
        res.set_figure("loss_by_label", {{"kind", "bar"}, {"x", x}, {"y", y}, {"title", "next-token loss by " + loss_by_},
                                         {"x_label", loss_by_}, {"y_label", "loss (nats)"}});
        summary["loss"]["by"] = loss_by_;
        summary["loss"]["unlabelled_prompts"] = unlabelled;
    }

    std::string text(int64_t id) const {
        if (token_text_) return token_text_(id);
        std::string s = std::to_string(id);  // (built in place: GCC 12 warns falsely on "#" + string)
        s.insert(s.begin(), '#');
        return s;
    }

    size_t k_ = 5, changed_ = 5, seen_ = 0;
    bool paired_ = false, loss_ = false;
    std::string loss_by_;
    nscope::common::PromptPairs pairs_;
    std::map<int64_t, PromptDist> prompts_;
    std::function<std::string(int64_t)> token_text_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(NextToken, "next_token", "1.1.0",
                       "next-token distribution per prompt; KL and top-token changes between paired prompts; "
                       "next-token loss and accuracy per prompt and per label value")
