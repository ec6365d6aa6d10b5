// The metric of a causal analysis as a recipe entry writes it: `metric: logit_diff, tokens: [" Paris", " London"]`,
// `metric: logprob, tokens: [5]`, `metric: loss`, optional `position`. A token is its text (exactly one token
// under the model's tokenizer), its id, or `{label: KEY}`: the text of the clean prompt's label KEY.
//
//   MetricSpec m;  m.configure(p);                    // in configure()
//   m.begin(ctx.model, "patching");                   // in begin(): texts become ids
//   nscope::Metric metric = m.resolve(clean_labels);  // per pair
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nscope/sdk.h>

#include "nscope_common/params.h"

namespace nscope::common {

class MetricSpec {
public:
    void configure(const ParamReader& p) {
        metric_ = Metric{};
        metric_.kind = p.choice("metric", "logit_diff", {"logprob", "logit_diff", "loss"});
        if (p.has("position")) metric_.position = p.integer("position", -1, -(1 << 20), 1 << 20);
        tokens_.clear();
        if (p.has("tokens")) {
            const auto& t = p.raw("tokens");
            if (!t.is_array()) p.fail("tokens", "must be a list of tokens (text, id or {label: KEY})");
            for (const auto& x : t) {
                Token s;
                if (x.is_number_integer() && x.get<int64_t>() >= 0) s.id = x.get<int64_t>();
                else if (x.is_string() && !x.get<std::string>().empty()) s.text = x.get<std::string>();
                else if (x.is_object() && x.size() == 1 && x.contains("label") && x["label"].is_string())
                    s.label = x["label"].get<std::string>();
                else p.fail("tokens", "entries must be a token's text, its id or {label: KEY}, got " + describe(x));
                tokens_.push_back(std::move(s));
            }
        }
        const size_t need = metric_.kind == "logit_diff" ? 2 : metric_.kind == "logprob" ? 1 : 0;
        if (tokens_.size() != need)
            p.fail("tokens", "metric '" + metric_.kind + "' needs " + std::to_string(need) + " token(s), got " +
                                 std::to_string(tokens_.size()));
    }

    /// Resolve the fixed texts to ids with the model's tokenizer.
    void begin(const ModelAccess* model, const std::string& plugin) {
        model_ = model;
        plugin_ = plugin;
        for (auto& t : tokens_)
            if (!t.text.empty()) t.id = single_token(t.text);
    }

    /// The metric for a pair whose clean prompt has these labels.
    Metric resolve(const nlohmann::json& clean_labels, int64_t clean_index) const {
        Metric m = metric_;
        for (const auto& t : tokens_) {
            if (t.id) {
                m.tokens.push_back(*t.id);
                continue;
            }
            if (!clean_labels.is_object() || !clean_labels.contains(t.label) || !clean_labels[t.label].is_string())
                throw InputError(plugin_ + ": clean prompt " + std::to_string(clean_index) + " has no text label '" +
                                 t.label + "' to take the metric's token from");
            m.tokens.push_back(single_token(clean_labels[t.label].get<std::string>()));
        }
        return m;
    }

    const std::string& kind() const { return metric_.kind; }

private:
    struct Token {
        std::optional<int64_t> id;
        std::string text, label;
    };

    int64_t single_token(const std::string& text) const {
        const auto ids = model_->tokenize(text);
        if (ids.size() != 1)
            throw InputError(plugin_ + ": token '" + text + "' is " + std::to_string(ids.size()) +
                             " tokens under this model's tokenizer; name a single token or give its id");
        return ids[0];
    }

    Metric metric_;
    std::vector<Token> tokens_;
    const ModelAccess* model_ = nullptr;
    std::string plugin_;
};

}  // namespace nscope::common
