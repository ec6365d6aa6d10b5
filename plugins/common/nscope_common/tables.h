// Reading result tables ({"columns": [...], "rows": [[...], ...]}, sdk/include/nscope/result.h) by column name,
// for exporters and analyzers that consume other analyzers' results (report, sqlite; polysemantic and cluster
// read a `topk` input's top examples).
//
//   TableView t(result.data, "layers");          // empty view when the table is absent
//   for (size_t r = 0; r < t.size(); ++r) double m = t.number(r, "mean");
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include <nscope/sdk.h>

namespace nscope::common {

class TableView {
public:
    TableView() = default;
    /// The table `name` of a result's `data`, or an empty view.
    TableView(const nlohmann::json& data, const std::string& name) {
        if (!data.is_object() || !data.contains("tables") || !data["tables"].is_object()) return;
        const auto& tables = data["tables"];
        if (!tables.contains(name)) return;
        const auto& t = tables[name];
        if (!t.is_object() || !t.contains("columns") || !t.contains("rows") || !t["rows"].is_array()) return;
        for (size_t i = 0; i < t["columns"].size(); ++i)
            if (t["columns"][i].is_string()) cols_[t["columns"][i].get<std::string>()] = i;
        rows_ = &t["rows"];
    }

    bool present() const { return rows_ != nullptr; }
    size_t size() const { return rows_ ? rows_->size() : 0; }
    bool has(const std::string& col) const { return cols_.count(col) != 0; }

    /// The cell, or null when the column or the cell is missing.
    const nlohmann::json& cell(size_t row, const std::string& col) const {
        static const nlohmann::json null_value;
        const auto it = cols_.find(col);
        if (!rows_ || it == cols_.end() || row >= rows_->size()) return null_value;
        const auto& r = (*rows_)[row];
        return r.is_array() && it->second < r.size() ? r[it->second] : null_value;
    }
    /// A number; NaN for null / non-numbers.
    double number(size_t row, const std::string& col) const {
        const auto& v = cell(row, col);
        return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
    }
    int64_t integer(size_t row, const std::string& col, int64_t def = -1) const {
        const auto& v = cell(row, col);
        if (v.is_number_integer()) return v.get<int64_t>();
        if (v.is_number_float() && std::isfinite(v.get<double>())) return static_cast<int64_t>(v.get<double>());
        return def;
    }
    std::string text(size_t row, const std::string& col) const {
        const auto& v = cell(row, col);
        if (v.is_string()) return v.get<std::string>();
        if (v.is_null()) return "";
        return v.dump();
    }

private:
    std::map<std::string, size_t> cols_;
    const nlohmann::json* rows_ = nullptr;
};

/// A token's text without the spaces around it, so that " bank" and "bank" count as one word.
inline std::string trim_spaces(const std::string& token) {
    const auto b = token.find_first_not_of(' '), e = token.find_last_not_of(' ');
    return b == std::string::npos ? token : token.substr(b, e - b + 1);
}

/// The first of an analysis' `input:` results that is a topk result (has a `top_activations` table), or null.
inline const Result* topk_input(const RunContext& ctx) {
    for (const auto& [id, r] : ctx.inputs)
        if (r && TableView(r->data, "top_activations").present()) return r;
    return nullptr;
}

/// hook -> neuron -> token (spaces trimmed) -> how often it is the triggering token of the neuron's top examples,
/// from a topk result (single neurons only; group rows are left out).
using TopTokens = std::map<std::string, std::map<int64_t, std::map<std::string, double>>>;
inline TopTokens top_example_tokens(const Result& topk) {
    const TableView t(topk.data, "top_activations");
    TopTokens out;
    for (size_t i = 0; i < t.size(); ++i) {
        const std::string hook = t.text(i, "source");
        const int64_t neuron = t.integer(i, "neuron");
        if (neuron < 0 || hook.rfind("group:", 0) == 0) continue;
        out[hook][neuron][trim_spaces(t.text(i, "token"))] += 1;
    }
    return out;
}

}  // namespace nscope::common
