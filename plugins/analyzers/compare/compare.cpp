// `compare` analyzer: prompt against prompt, per hook: cosine similarity and MSE of activations pooled over
// tokens (`mean`), at the `last` token, position-wise over the common length (`aligned`), at one position
// (`{position: -2}`), or at a word (`{word: man}`, or `{label: who}`: the word each prompt's label names;
// a word of several tokens is their mean), and the neurons that differ most. Pairs come from labels
// (`by_label`) or are listed (`pairs`). Keeps only the pooled vectors of prompts that take part in a pair.
// Schema: docs/analyses.md#compare.
#include <nscope/sdk.h>

#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "nscope_common/hooks.h"
#include "nscope_common/pairs.h"
#include "nscope_common/params.h"

namespace {

struct PromptRec {
    std::string text;
    nlohmann::json labels;
    std::map<std::string, std::vector<double>> vec;  ///< hook -> [neurons] (mean / last) or [len, neurons] (aligned)
    std::map<std::string, size_t> width;
    size_t length = 0;
};

class Compare : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("compare", params, {"hooks", "pool", "pairs", "by_label", "top_neurons"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        if (p.has("pool") && p.raw("pool").is_object()) {
            const auto& o = p.raw("pool");
            const char* forms = "{position: N}, {word: W} or {label: KEY}";
            if (o.size() != 1) p.fail("pool", std::string("as a mapping must be one of ") + forms + ", got " + o.dump());
            const std::string key = o.begin().key();
            const auto& v = o.begin().value();
            if (key == "position" && v.is_number_integer()) {
                position_ = v.get<int64_t>();
                pool_ = "position " + std::to_string(*position_);
            } else if ((key == "word" || key == "label") && v.is_string() && !v.get<std::string>().empty()) {
                (key == "word" ? word_ : label_) = v.get<std::string>();
                pool_ = key == "word" ? "word '" + word_ + "'" : "the word of label '" + label_ + "'";
            } else {
                p.fail("pool", std::string("must be one of ") + forms + " (position an integer, negative from the end), got " + o.dump());
            }
        } else {
            pool_ = p.choice("pool", "mean", {"mean", "last", "aligned"});
        }
        top_ = static_cast<size_t>(p.integer("top_neurons", 10, 0, 100000));
        pairs_.configure(p);
    }

    void begin(const nscope::RunContext&) override {}

    void consume(const nscope::Batch& batch) override {
        for (size_t r = 0; r < batch.rows; ++r) {
            const nscope::PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
            const int64_t index = info ? static_cast<int64_t>(info->index) : static_cast<int64_t>(rows_seen_ + r);
            if (!wanted(index, info)) continue;
            PromptRec& rec = prompts_[index];
            if (info) rec.text = info->text, rec.labels = info->labels;
            std::vector<size_t> valid;
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p)) valid.push_back(p);
            rec.length = valid.size();
            const std::vector<size_t> at = pooled_positions(index, info, valid);  // empty: mean / last / aligned
            for (const auto& act : batch.activations) {
                nscope::common::TokenLayout lay;
                if (!filter_.accept(act.hook, act.view, batch, lay) || valid.empty()) continue;
                const auto n = static_cast<size_t>(lay.neurons);
                auto& v = rec.vec[act.hook];
                rec.width[act.hook] = n;
                if (pool_ == "aligned") {
                    v.assign(valid.size() * n, 0.0);
                    for (size_t t = 0; t < valid.size(); ++t) {
                        const float* x = lay.at(act.view, r, valid[t]);
                        std::copy(x, x + n, v.begin() + static_cast<int64_t>(t * n));
                    }
                } else if (pool_ == "last") {
                    const float* x = lay.at(act.view, r, valid.back());
                    v.assign(x, x + n);
                } else if (!at.empty()) {
                    v.assign(n, 0.0);
                    for (size_t p : at) {
                        const float* x = lay.at(act.view, r, p);
                        for (size_t j = 0; j < n; ++j) v[j] += x[j] / static_cast<double>(at.size());
                    }
                } else {
                    v.assign(n, 0.0);
                    for (size_t p : valid) {
                        const float* x = lay.at(act.view, r, p);
                        for (size_t j = 0; j < n; ++j) v[j] += x[j];
                    }
                    for (auto& e : v) e /= static_cast<double>(valid.size());
                }
            }
        }
        rows_seen_ += batch.rows;
    }

    bool mergeable() const override { return true; }
    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const Compare&>(other);
        for (const auto& [i, rec] : o.prompts_) prompts_.emplace(i, rec);
        filter_.merge(o.filter_);
    }

    nscope::Result finish() override {
        nscope::Result res;
        const auto pairs = make_pairs();
        std::set<std::string, decltype(&nscope::common::hook_order)> hook_set(&nscope::common::hook_order);
        for (const auto& [i, rec] : prompts_)
            for (const auto& [hook, v] : rec.vec) hook_set.insert(hook);
        const std::vector<std::string> hooks(hook_set.begin(), hook_set.end());

        nscope::Table ptab, ntab;
        ptab.columns = {"pair", "a", "b", "a_text", "b_text", "hook", "layer", "cosine", "mse"};
        ntab.columns = {"pair", "a", "b", "hook", "layer", "rank", "neuron", "a_value", "b_value", "diff"};
        const double nan = std::numeric_limits<double>::quiet_NaN();
        std::vector<float> cos_arr(pairs.size() * hooks.size(), static_cast<float>(nan)), mse_arr = cos_arr;
        nlohmann::json pair_list = nlohmann::json::array(), series = nlohmann::json::array(),
                       missing = nlohmann::json::array();
        for (size_t q = 0; q < pairs.size(); ++q) {
            const auto [a, b] = pairs[q];
            const auto ia = prompts_.find(a), ib = prompts_.find(b);
            if (ia == prompts_.end() || ib == prompts_.end()) {
                missing.push_back({a, b});
                continue;
            }
            const PromptRec &A = ia->second, &B = ib->second;
            nlohmann::json shared = nlohmann::json::object();
            if (A.labels.is_object())
                for (const auto& [k, v] : A.labels.items())
                    if (B.labels.is_object() && B.labels.contains(k) && B.labels[k] == v) shared[k] = v;
            pair_list.push_back({{"pair", q}, {"a", a}, {"b", b}, {"a_text", A.text}, {"b_text", B.text},
                                 {"shared_labels", shared}, {"name", A.text + " | " + B.text}});
            nlohmann::json ys = nlohmann::json::array();
            for (size_t h = 0; h < hooks.size(); ++h) {
                const auto& hook = hooks[h];
                const int layer = nscope::common::hook_layer(hook);
                auto va = A.vec.find(hook), vb = B.vec.find(hook);
                if (va == A.vec.end() || vb == B.vec.end() || A.width.at(hook) != B.width.at(hook)) {
                    ys.push_back(nullptr);
                    continue;
                }
                const size_t n = A.width.at(hook);
                const size_t len = pool_ == "aligned" ? std::min(A.length, B.length) : 1;
                double dot = 0, na = 0, nb = 0, se = 0;
                std::vector<double> ma(n, 0.0), mb(n, 0.0);
                for (size_t t = 0; t < len; ++t)
                    for (size_t j = 0; j < n; ++j) {
                        const double x = va->second[t * n + j], y = vb->second[t * n + j];
                        dot += x * y, na += x * x, nb += y * y, se += (x - y) * (x - y);
                        ma[j] += x / static_cast<double>(len), mb[j] += y / static_cast<double>(len);
                    }
                const double cosine = na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : nan;
                const double mse = len * n > 0 ? se / static_cast<double>(len * n) : nan;
                cos_arr[q * hooks.size() + h] = static_cast<float>(cosine);
                mse_arr[q * hooks.size() + h] = static_cast<float>(mse);
                ptab.add_row({q, a, b, A.text, B.text, hook, layer, cosine, mse});
                ys.push_back(cosine);
                std::vector<size_t> order(n);
                for (size_t j = 0; j < n; ++j) order[j] = j;
                const size_t take = std::min(top_, n);
                std::partial_sort(order.begin(), order.begin() + static_cast<int64_t>(take), order.end(),
                                  [&](size_t x, size_t y) {
                                      const double dx = std::abs(mb[x] - ma[x]), dy = std::abs(mb[y] - ma[y]);
                                      return dx != dy ? dx > dy : x < y;
                                  });
                for (size_t i = 0; i < take; ++i) {
                    const size_t j = order[i];
                    ntab.add_row({q, a, b, hook, layer, i + 1, j, ma[j], mb[j], mb[j] - ma[j]});
                }
            }
            series.push_back({{"name", A.text + " | " + B.text}, {"y", ys}});
        }
        res.set_table("pairs", std::move(ptab));
        res.set_table("top_neurons", std::move(ntab));
        res.set_figure("cosine_by_hook", {{"kind", "line"}, {"title", "cosine similarity per hook (" + pool_ + ")"},
                                          {"x", hooks}, {"series", series}, {"x_label", "hook"},
                                          {"y_label", "cosine"}});
        const std::vector<int64_t> shape{static_cast<int64_t>(pairs.size()), static_cast<int64_t>(hooks.size())};
        res.set_array("cosine", nscope::NdArray::floats(shape, std::move(cos_arr)));
        res.set_array("mse", nscope::NdArray::floats(shape, std::move(mse_arr)));
        res.data["pairs"] = pair_list;
        res.data["hooks"] = hooks;
        res.data["summary"] = {{"pool", pool_}, {"pairs", pairs.size()}, {"hooks", hooks.size()},
                               {"missing_pairs", missing}, {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    bool wanted(int64_t index, const nscope::PromptInfo* info) const { return pairs_.wanted(index, info); }

    /// Batch positions to pool at for `{position}`, `{word}` and `{label}`; empty for the other pools.
    std::vector<size_t> pooled_positions(int64_t index, const nscope::PromptInfo* info, const std::vector<size_t>& valid) const {
        const std::string where = "compare: prompt " + std::to_string(index);
        if (position_) {
            const auto n = static_cast<int64_t>(valid.size());
            const int64_t q = *position_ < 0 ? n + *position_ : *position_;
            if (q < 0 || q >= n)
                throw nscope::InputError(where + " has " + std::to_string(n) + " tokens: pool position " +
                                         std::to_string(*position_) + " is outside it");
            return {valid[static_cast<size_t>(q)]};
        }
        if (word_.empty() && label_.empty()) return {};
        std::string word = word_;
        if (!label_.empty()) {
            if (!info || !info->labels.is_object() || !info->labels.contains(label_) || !info->labels[label_].is_string())
                throw nscope::InputError(where + " has no string label '" + label_ + "' to pool at (pool: {label: " +
                                         label_ + "})");
            word = info->labels[label_].get<std::string>();
        }
        if (!info || info->tokens.size() != valid.size())
            throw nscope::InputError(where + ": pooling at a word needs the prompt's tokens");
        // The last run of tokens that spells the word (ignoring surrounding spaces).
        const auto trim = [](std::string s) {
            const auto b = s.find_first_not_of(" \t\n"), e = s.find_last_not_of(" \t\n");
            return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
        };
        for (size_t end = info->tokens.size(); end-- > 0;) {
            std::string text;
            for (size_t begin = end + 1; begin-- > 0;) {
                text = info->tokens[begin] + text;
                const std::string t = trim(text);
                if (t.size() > word.size() + 8) break;
                if (t == word) {
                    std::vector<size_t> out;
                    for (size_t i = begin; i <= end; ++i) out.push_back(valid[i]);
                    return out;
                }
            }
        }
        throw nscope::InputError(where + " ('" + info->text + "') has no token run that spells '" + word + "' (pool: " +
                                 pool_ + ")");
    }

    std::vector<std::pair<int64_t, int64_t>> make_pairs() const {
        std::map<int64_t, nlohmann::json> labels;
        for (const auto& [i, rec] : prompts_) labels[i] = rec.labels;
        return pairs_.make(labels);
    }

    nscope::common::HookFilter filter_;
    std::string pool_ = "mean";  ///< mean | last | aligned, or a description of the position / word pool
    std::optional<int64_t> position_;
    std::string word_, label_;
    size_t top_ = 10;
    nscope::common::PromptPairs pairs_;
    std::map<int64_t, PromptRec> prompts_;
    size_t rows_seen_ = 0;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(Compare, "compare", "1.0.0",
                       "prompt vs prompt: cosine, MSE and most different neurons per hook (mean/last/aligned/position/word)")
