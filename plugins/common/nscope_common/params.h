// Parameter checking for plugins: unknown keys and bad types become nscope::InputError naming the key,
// the accepted keys and the nearest one ("did you mean").
//
//   ParamReader p("stats", params, {"hooks", "threshold"});   // throws on an unknown key
//   double t = p.number("threshold", 0.0);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nscope/sdk.h>

namespace nscope::common {

/// Levenshtein distance (insert / delete / substitute, each cost 1).
inline size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    std::iota(row.begin(), row.end(), size_t{0});
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0u : 1u)});
            diag = up;
        }
    }
    return row[b.size()];
}

inline std::string join(const std::vector<std::string>& items, std::string_view sep = ", ") {
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += sep;
        out += items[i];
    }
    return out;
}

/// " (did you mean 'x'?)" for the closest candidate within max(2, |word|/3) edits, else "".
inline std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates) {
    const size_t limit = std::max<size_t>(2, word.size() / 3);
    const std::string* best = nullptr;
    size_t best_d = limit + 1;
    for (const auto& c : candidates) {
        const size_t d = edit_distance(word, c);
        if (d < best_d) best_d = d, best = &c;
    }
    return best ? " (did you mean '" + *best + "'?)" : "";
}

/// Glob match: `*` matches any run of characters (including dots), `?` one character.
inline bool glob_match(std::string_view pattern, std::string_view text) {
    size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
            ++p, ++t;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

/// A short description of a JSON value's type for error messages: "string \"abc\"", "number 3", ...
inline std::string describe(const nlohmann::json& v) {
    std::string text = v.dump();
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return std::string(v.type_name()) + " " + text;
}

/// Reads a plugin's parameter object. The constructor rejects unknown keys; the getters reject bad types
/// and out-of-range values. Every error message starts with "<plugin>: parameter '<key>'".
class ParamReader {
public:
    ParamReader(std::string plugin, const Params& params, std::vector<std::string> accepted)
        : plugin_(std::move(plugin)), accepted_(std::move(accepted)) {
        if (params.is_null()) return;
        if (!params.is_object())
            throw InputError(plugin_ + ": parameters must be a mapping of key: value, got " + describe(params));
        params_ = params;
        for (const auto& [key, value] : params_.items()) {
            if (std::find(accepted_.begin(), accepted_.end(), key) == accepted_.end())
                throw InputError(plugin_ + ": unknown parameter '" + key + "'" + did_you_mean(key, accepted_) +
                                 "; accepted parameters: " + (accepted_.empty() ? "(none)" : join(accepted_)));
        }
    }

    const std::string& plugin() const { return plugin_; }
    bool has(const std::string& key) const { return params_.contains(key) && !params_[key].is_null(); }
    const nlohmann::json& raw(const std::string& key) const { return params_.at(key); }

    [[noreturn]] void fail(const std::string& key, const std::string& what) const {
        throw InputError(plugin_ + ": parameter '" + key + "' " + what);
    }

    double number(const std::string& key, double def, double lo = -std::numeric_limits<double>::infinity(),
                  double hi = std::numeric_limits<double>::infinity()) const {
        if (!has(key)) return def;
        const auto& v = params_[key];
        if (!v.is_number()) fail(key, "must be a number, got " + describe(v));
        const double x = v.get<double>();
        if (!(x >= lo && x <= hi)) fail(key, "must be in [" + fmt(lo) + ", " + fmt(hi) + "], got " + v.dump());
        return x;
    }

    int64_t integer(const std::string& key, int64_t def, int64_t lo = std::numeric_limits<int64_t>::min(),
                    int64_t hi = std::numeric_limits<int64_t>::max()) const {
        if (!has(key)) return def;
        return as_integer(key, params_[key], lo, hi);
    }

    bool boolean(const std::string& key, bool def) const {
        if (!has(key)) return def;
        const auto& v = params_[key];
        if (!v.is_boolean()) fail(key, "must be true or false, got " + describe(v));
        return v.get<bool>();
    }

    std::string choice(const std::string& key, const std::string& def, const std::vector<std::string>& options) const {
        if (!has(key)) return def;
        const auto& v = params_[key];
        if (!v.is_string()) fail(key, "must be one of " + join(options) + ", got " + describe(v));
        const std::string s = v.get<std::string>();
        if (std::find(options.begin(), options.end(), s) == options.end())
            fail(key, "must be one of " + join(options) + ", got '" + s + "'" + did_you_mean(s, options));
        return s;
    }

    /// A list of strings; a single string is accepted as a one-element list.
    std::vector<std::string> strings(const std::string& key, std::vector<std::string> def = {}) const {
        if (!has(key)) return def;
        return as_strings(key, params_[key]);
    }

    std::vector<std::string> as_strings(const std::string& key, const nlohmann::json& v) const {
        if (v.is_string()) return {v.get<std::string>()};
        if (!v.is_array()) fail(key, "must be a list of strings, got " + describe(v));
        std::vector<std::string> out;
        for (const auto& e : v) {
            if (!e.is_string()) fail(key, "must be a list of strings, but has " + describe(e));
            out.push_back(e.get<std::string>());
        }
        return out;
    }

    std::vector<int64_t> integers(const std::string& key, std::vector<int64_t> def = {}, int64_t lo = 0,
                                  int64_t hi = std::numeric_limits<int64_t>::max()) const {
        if (!has(key)) return def;
        return as_integers(key, params_[key], lo, hi);
    }

    std::vector<int64_t> as_integers(const std::string& key, const nlohmann::json& v, int64_t lo = 0,
                                     int64_t hi = std::numeric_limits<int64_t>::max()) const {
        if (!v.is_array()) fail(key, "must be a list of integers, got " + describe(v));
        std::vector<int64_t> out;
        for (const auto& e : v) out.push_back(as_integer(key, e, lo, hi));
        return out;
    }

    int64_t as_integer(const std::string& key, const nlohmann::json& v, int64_t lo, int64_t hi) const {
        if (!v.is_number_integer() && !(v.is_number_float() && v.get<double>() == static_cast<double>(
                                                                       static_cast<int64_t>(v.get<double>()))))
            fail(key, "must be an integer, got " + describe(v));
        const int64_t x = v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
        if (x < lo || x > hi) fail(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                            std::to_string(x));
        return x;
    }

private:
    static std::string fmt(double x) {
        if (std::isinf(x)) return x < 0 ? "-inf" : "inf";
        nlohmann::json j = x;
        return j.dump();
    }
    std::string plugin_;
    std::vector<std::string> accepted_;
    nlohmann::json params_ = nlohmann::json::object();
};

}  // namespace nscope::common
