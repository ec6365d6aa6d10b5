// Prompt pairs for analyzers that compare prompts (compare, next_token): listed explicitly
// (`pairs: [[0, 1], [2, 3]]`) and/or chosen by a label (`by_label: {key: who, values: [man, woman]}`: within
// prompts that agree on every other label, each prompt with values[i] pairs with each prompt with values[j],
// i < j).
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nscope/activation.h"
#include "nscope_common/params.h"

namespace nscope::common {

class PromptPairs {
public:
    /// Read `pairs` and `by_label`; at least one must be given.
    void configure(const ParamReader& p) {
        explicit_.clear();
        wanted_.clear();
        label_key_.clear();
        label_values_.clear();
        if (p.has("pairs")) {
            const auto& v = p.raw("pairs");
            if (!v.is_array()) p.fail("pairs", "must be a list of [a, b] prompt index pairs, got " + describe(v));
            for (const auto& pr : v) {
                auto ab = p.as_integers("pairs", pr);
                if (ab.size() != 2) p.fail("pairs", "must be a list of [a, b] prompt index pairs, but has " + pr.dump());
                explicit_.emplace_back(ab[0], ab[1]);
                wanted_.insert(ab[0]), wanted_.insert(ab[1]);
            }
        }
        if (p.has("by_label")) {
            const auto& v = p.raw("by_label");
            const std::string form = "must be {key: <label>, values: [<value>, <value>, ...]}";
            if (!v.is_object() || !v.contains("key") || !v["key"].is_string() || !v.contains("values") ||
                !v["values"].is_array() || v["values"].size() < 2)
                p.fail("by_label", form + ", got " + describe(v));
            for (const auto& [k, _] : v.items())
                if (k != "key" && k != "values")
                    p.fail("by_label", "has unknown key '" + k + "'" + did_you_mean(k, {"key", "values"}) +
                                           " (accepted: key, values)");
            label_key_ = v["key"].get<std::string>();
            label_values_ = v["values"].get<std::vector<nlohmann::json>>();
        }
        if (explicit_.empty() && label_key_.empty())
            throw InputError(p.plugin() + ": give the prompt pairs to compare: 'pairs: [[0, 1], ...]' or "
                                          "'by_label: {key: gender, values: [man, woman]}'");
    }

    /// Does prompt `index` (with these labels) take part in any pair?
    bool wanted(int64_t index, const PromptInfo* info) const {
        if (wanted_.count(index)) return true;
        if (label_key_.empty() || !info || !info->labels.is_object() || !info->labels.contains(label_key_)) return false;
        const auto& v = info->labels[label_key_];
        return std::find(label_values_.begin(), label_values_.end(), v) != label_values_.end();
    }

    /// Explicit pairs first, then label pairs (sorted), from the labels of the prompts that were seen.
    std::vector<std::pair<int64_t, int64_t>> make(const std::map<int64_t, nlohmann::json>& labels) const {
        std::vector<std::pair<int64_t, int64_t>> out = explicit_;
        if (label_key_.empty()) return out;
        std::map<std::string, std::vector<std::vector<int64_t>>> groups;  // other labels -> per value: prompts
        for (const auto& [i, lab] : labels) {
            if (!lab.is_object() || !lab.contains(label_key_)) continue;
            const auto it = std::find(label_values_.begin(), label_values_.end(), lab[label_key_]);
            if (it == label_values_.end()) continue;
            nlohmann::json rest = lab;
            rest.erase(label_key_);
            auto& g = groups[rest.dump()];
            g.resize(label_values_.size());
            g[static_cast<size_t>(it - label_values_.begin())].push_back(i);
        }
        std::vector<std::pair<int64_t, int64_t>> by_label;
        for (const auto& [rest, g] : groups)
            for (size_t x = 0; x < g.size(); ++x)
                for (size_t y = x + 1; y < g.size(); ++y)
                    for (int64_t a : g[x])
                        for (int64_t b : g[y]) by_label.emplace_back(a, b);
        std::sort(by_label.begin(), by_label.end());
        out.insert(out.end(), by_label.begin(), by_label.end());
        return out;
    }

private:
    std::vector<std::pair<int64_t, int64_t>> explicit_;
    std::set<int64_t> wanted_;
    std::string label_key_;
    std::vector<nlohmann::json> label_values_;
};

/// The token ids and labels of the prompts that take part in pairs, kept as batches stream by, for analyzers
/// that run the pairs through the model again (attribution, patching).
class PairedPromptIds {
public:
    void collect(const PromptPairs& pairs, const Batch& batch) {
        for (size_t r = 0; r < batch.rows; ++r) {
            const PromptInfo* info = batch.prompts[r];
            const auto index = static_cast<int64_t>(info ? info->index : r);
            if (!pairs.wanted(index, info)) continue;
            const int64_t* row = batch.input_ids + r * batch.positions;
            ids_[index].assign(row, row + batch.length(r));
            labels_[index] = info ? info->labels : nlohmann::json();
        }
    }

    /// Up-front check from the run's prompt list (RunContext::prompts, known before the forward pass): every pair
    /// names prompts of the run and, when `equal_lengths`, of the same token length. Does nothing when the list is
    /// empty (Lua caches, unit tests); the checks in make() / equal_length() still apply then.
    static void check_up_front(const PromptPairs& pairs, const std::vector<const PromptInfo*>& prompts,
                               const std::string& plugin, bool equal_lengths) {
        if (prompts.empty()) return;
        PairedPromptIds known;
        for (const PromptInfo* info : prompts) {
            if (info == nullptr || !pairs.wanted(static_cast<int64_t>(info->index), info)) continue;
            known.ids_[static_cast<int64_t>(info->index)].resize(info->tokens.size());
            known.labels_[static_cast<int64_t>(info->index)] = info->labels;
        }
        for (const auto& [a, b] : known.make(pairs, plugin))
            if (equal_lengths) known.equal_length(a, b, plugin);
    }

    /// The (clean, corrupted) pairs among the prompts seen; InputError naming `plugin` when there is none.
    std::vector<std::pair<int64_t, int64_t>> make(const PromptPairs& pairs, const std::string& plugin) const {
        auto out = pairs.make(labels_);
        if (out.empty()) throw InputError(plugin + ": no (clean, corrupted) prompt pair among the run's prompts");
        for (const auto& [a, b] : out)
            for (int64_t i : {a, b})
                if (!ids_.count(i))
                    throw InputError(plugin + ": pair [" + std::to_string(a) + ", " + std::to_string(b) +
                                     "] names prompt " + std::to_string(i) + ", which the run does not have");
        return out;
    }

    /// The pair's token ids; InputError when their lengths differ (positions are compared one to one).
    std::pair<const std::vector<int64_t>*, const std::vector<int64_t>*> equal_length(int64_t clean, int64_t corrupt,
                                                                                    const std::string& plugin) const {
        const auto& a = ids_.at(clean);
        const auto& b = ids_.at(corrupt);
        if (a.size() != b.size())
            throw InputError(plugin + ": prompts " + std::to_string(clean) + " and " + std::to_string(corrupt) + " have " +
                             std::to_string(a.size()) + " and " + std::to_string(b.size()) +
                             " tokens; patching compares positions one to one, so a pair needs equal lengths");
        return {&a, &b};
    }

    const nlohmann::json& labels(int64_t index) const { return labels_.at(index); }

    /// Refuses a pair with nothing to restore: the normalised effect (patched - corrupted) / (clean - corrupted)
    /// needs the clean and corrupted metrics to differ. Identical token ids are refused as such. Otherwise "the
    /// same" means within float32 rounding (1e-5 of the metric's size): two identical rows can differ in their last
    /// bits when the BLAS kernel handles them in different tiles, by an amount that depends on the CPU, so a test
    /// for exact equality would pass or fail with the machine.
    void require_metric_gap(int64_t clean, int64_t corrupt, double clean_metric, double corrupt_metric,
                            const std::string& plugin) const {
        // The message is built only when a pair is refused: this runs once per pair inside the analysis loop.
        const auto nothing = [&](const char* before, const char* after) {
            throw InputError(plugin + ": " + before + "clean prompt " + std::to_string(clean) + " and corrupted prompt " +
                             std::to_string(corrupt) + after + " (nothing to restore); pick pairs or tokens that differ");
        };
        const auto a = ids_.find(clean), b = ids_.find(corrupt);
        if (a != ids_.end() && b != ids_.end() && a->second == b->second)
            nothing("", " are the same tokens, so the metric is the same on both");
        const double size = std::max({1.0, std::abs(clean_metric), std::abs(corrupt_metric)});
        if (std::abs(clean_metric - corrupt_metric) <= 1e-5 * size) nothing("the metric is the same on ", "");
    }

private:
    std::map<int64_t, std::vector<int64_t>> ids_;
    std::map<int64_t, nlohmann::json> labels_;
};

}  // namespace nscope::common
