#include "core/run/recipe.h"

#include <fstream>
#include <set>
#include <sstream>

#include "core/util/npy.h"
#include "core/util/text.h"
#include "nscope/error.h"
#include "nscope/model_access.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

// Knows the source name so every error can say file:line:column (or the key path for generated nodes).
class Ctx {
public:
    Ctx(std::string source, fs::path base) : source_(std::move(source)), base_(std::move(base)) {}

    SourceLoc loc(const YAML::Node& n, const std::string& path) const {
        for (const auto& o : overridden_)
            if (path == o || path.rfind(o + ".", 0) == 0 || path.rfind(o + "[", 0) == 0) return {"--set " + o};
        const YAML::Mark m = n.IsDefined() ? n.Mark() : YAML::Mark::null_mark();
        if (!m.is_null() && m.line >= 0 && !synthetic_)
            return {source_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1)};
        return {source_ + ": " + (path.empty() ? "(top level)" : path)};
    }
    [[noreturn]] void fail(const YAML::Node& n, const std::string& path, const std::string& msg) const {
        throw InputError(loc(n, path).text + ": " + msg);
    }
    fs::path resolve(const std::string& p) const {
        const fs::path path(p);
        return path.is_absolute() ? path : base_ / path;
    }
    void set_synthetic(bool s) { synthetic_ = s; }
    /// Values that came from --set are located as "--set KEY", not by their (meaningless) YAML mark.
    void add_override(const std::string& key) {
        std::string path;  // "analyses.0.k" -> "analyses[0].k", the form errors use
        std::stringstream ss(key);
        for (std::string part; std::getline(ss, part, '.');) {
            const bool index = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
            path += index ? "[" + part + "]" : (path.empty() ? part : "." + part);
        }
        overridden_.push_back(path);
    }
    const std::string& source() const { return source_; }

private:
    std::string source_;
    fs::path base_;
    bool synthetic_ = false;
    std::vector<std::string> overridden_;
};

std::string kind_name(const YAML::Node& n) {
    switch (n.Type()) {
        case YAML::NodeType::Map: return "a mapping";
        case YAML::NodeType::Sequence: return "a list";
        case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
        case YAML::NodeType::Null: return "nothing";
        default: return "undefined";
    }
}

// Reject keys not in `allowed`, with a suggestion.
void check_keys(const Ctx& c, const YAML::Node& map, const std::string& path, const std::vector<std::string>& allowed,
                const std::string& what) {
    for (auto it = map.begin(); it != map.end(); ++it) {
        const std::string key = it->first.as<std::string>();
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
            c.fail(it->first, path.empty() ? key : path + "." + key,
                   "unknown key '" + key + "' in " + what + did_you_mean(key, allowed) +
                       ". Accepted keys: " + join(allowed, ", ") + ".");
    }
}

// YAML allows a list or a mapping as a key ("? [a, b]: 1"); recipes name things by key, so every key must be a
// plain value. Checked once for the whole tree, so the as<std::string>() on keys below cannot throw a
// yaml-cpp conversion error (an "internal error", found by tests/fuzz/fuzz_recipe.cpp).
void check_plain_keys(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (n.IsMap()) {
        for (auto it = n.begin(); it != n.end(); ++it) {
            if (!it->first.IsScalar())
                c.fail(it->first, path, "a mapping key must be a plain name, not " + kind_name(it->first));
            check_plain_keys(c, it->second, path.empty() ? it->first.Scalar() : path + "." + it->first.Scalar());
        }
    } else if (n.IsSequence()) {
        for (size_t i = 0; i < n.size(); ++i) check_plain_keys(c, n[i], path + "[" + std::to_string(i) + "]");
    }
}

void require_map(const Ctx& c, const YAML::Node& n, const std::string& path, const std::string& what) {
    if (!n.IsMap()) c.fail(n, path, what + " must be a mapping, not " + kind_name(n));
}
void require_seq(const Ctx& c, const YAML::Node& n, const std::string& path, const std::string& what) {
    if (!n.IsSequence()) c.fail(n, path, what + " must be a list, not " + kind_name(n));
}

std::string get_string(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) c.fail(n, path, "'" + path + "' must be a string, not " + kind_name(n));
    return n.Scalar();
}

int64_t get_int(const Ctx& c, const YAML::Node& n, const std::string& path, int64_t min, int64_t max) {
    if (!n.IsScalar()) c.fail(n, path, "'" + path + "' must be an integer, not " + kind_name(n));
    int64_t v = 0;
    try {
        size_t used = 0;
        v = std::stoll(n.Scalar(), &used, 10);
        if (used != n.Scalar().size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
        c.fail(n, path, "'" + path + "' must be an integer, not '" + n.Scalar() + "'");
    }
    if (v < min || v > max)
        c.fail(n, path, "'" + path + "' must be between " + std::to_string(min) + " and " + std::to_string(max) +
                            ", not " + std::to_string(v));
    return v;
}

double get_double(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (!n.IsScalar()) c.fail(n, path, "'" + path + "' must be a number, not " + kind_name(n));
    try {
        size_t used = 0;
        const double v = std::stod(n.Scalar(), &used);
        if (used != n.Scalar().size()) throw std::invalid_argument("trailing");
        return v;
    } catch (const std::exception&) {
        c.fail(n, path, "'" + path + "' must be a number, not '" + n.Scalar() + "'");
    }
}

bool get_bool(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (n.IsScalar()) {
        const std::string s = n.Scalar();
        if (s == "true" || s == "yes" || s == "on") return true;
        if (s == "false" || s == "no" || s == "off") return false;
    }
    c.fail(n, path, "'" + path + "' must be true or false, not " + kind_name(n));
}

std::vector<int64_t> get_int_list(const Ctx& c, const YAML::Node& n, const std::string& path) {
    std::vector<int64_t> out;
    if (n.IsScalar()) return {get_int(c, n, path, INT64_MIN / 2, INT64_MAX / 2)};
    require_seq(c, n, path, "'" + path + "'");
    for (size_t i = 0; i < n.size(); ++i)
        out.push_back(get_int(c, n[i], path + "[" + std::to_string(i) + "]", INT64_MIN / 2, INT64_MAX / 2));
    return out;
}

std::vector<std::string> get_string_list(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (n.IsScalar()) return {n.Scalar()};
    require_seq(c, n, path, "'" + path + "'");
    std::vector<std::string> out;
    for (size_t i = 0; i < n.size(); ++i) out.push_back(get_string(c, n[i], path + "[" + std::to_string(i) + "]"));
    return out;
}

}  // namespace

// ---- YAML <-> JSON ---------------------------------------------------------------------------------------

static nlohmann::json yaml_to_json(const YAML::Node& n) {
    switch (n.Type()) {
        case YAML::NodeType::Map: {
            nlohmann::json j = nlohmann::json::object();
            for (auto it = n.begin(); it != n.end(); ++it) j[it->first.as<std::string>()] = yaml_to_json(it->second);
            return j;
        }
        case YAML::NodeType::Sequence: {
            nlohmann::json j = nlohmann::json::array();
            for (const auto& e : n) j.push_back(yaml_to_json(e));
            return j;
        }
        case YAML::NodeType::Scalar: {
            const std::string& s = n.Scalar();
            if (n.Tag() == "!") return s;  // quoted: always a string
            if (s == "true" || s == "True") return true;
            if (s == "false" || s == "False") return false;
            if (s == "null" || s == "~") return nullptr;
            try {
                size_t used = 0;
                const long long v = std::stoll(s, &used, 10);
                if (used == s.size()) return v;
            } catch (const std::exception&) {
            }
            try {
                size_t used = 0;
                const double v = std::stod(s, &used);
                if (used == s.size()) return v;
            } catch (const std::exception&) {
            }
            return s;
        }
        default: return nullptr;
    }
}

YAML::Node json_to_yaml(const nlohmann::json& j) {
    YAML::Node n;
    if (j.is_object()) {
        n = YAML::Node(YAML::NodeType::Map);
        for (const auto& [k, v] : j.items()) n[k] = json_to_yaml(v);
    } else if (j.is_array()) {
        n = YAML::Node(YAML::NodeType::Sequence);
        for (const auto& v : j) n.push_back(json_to_yaml(v));
    } else if (j.is_string()) {
        n = j.get<std::string>();
    } else if (j.is_null()) {
        n = YAML::Node(YAML::NodeType::Null);
    } else {
        n = YAML::Load(j.dump());
    }
    return n;
}

// ---- prompts ------------------------------------------------------------------------------------------------

namespace {

nlohmann::json parse_labels(const Ctx& c, const YAML::Node& n, const std::string& path) {
    if (!n.IsDefined() || n.IsNull()) return nullptr;
    require_map(c, n, path, "'labels'");
    return yaml_to_json(n);
}

void read_text_file_prompts(const Ctx& c, const YAML::Node& where, const std::string& path, const fs::path& file,
                            const nlohmann::json& labels, std::vector<PromptSpec>& out) {
    std::ifstream in(file);
    if (!in) c.fail(where, path, "prompt file '" + file.string() + "' does not exist or cannot be read");
    const bool jsonl = file.extension() == ".jsonl" || file.extension() == ".ndjson";
    for (auto& p : parse_prompt_lines(in, file.string(), jsonl, labels)) out.push_back(std::move(p));
}

void expand_template(const Ctx& c, const YAML::Node& item, const std::string& path, const nlohmann::json& labels,
                     std::vector<PromptSpec>& out) {
    const std::string tmpl = get_string(c, item["template"], path + ".template");
    const YAML::Node vars = item["vars"];
    std::vector<std::pair<std::string, std::vector<std::string>>> axes;
    if (vars.IsDefined()) {
        require_map(c, vars, path + ".vars", "'vars'");
        for (auto it = vars.begin(); it != vars.end(); ++it) {
            const std::string key = it->first.as<std::string>();
            const auto values = get_string_list(c, it->second, path + ".vars." + key);
            if (values.empty()) c.fail(it->second, path + ".vars." + key, "'vars." + key + "' has no values");
            if (tmpl.find("{" + key + "}") == std::string::npos)
                c.fail(it->first, path + ".vars." + key, "template has no placeholder {" + key + "}");
            axes.emplace_back(key, values);
        }
    }
    // Every {placeholder} in the template must have values.
    for (size_t pos = tmpl.find('{'); pos != std::string::npos; pos = tmpl.find('{', pos + 1)) {
        const size_t end = tmpl.find('}', pos);
        if (end == std::string::npos) break;
        const std::string key = tmpl.substr(pos + 1, end - pos - 1);
        const bool known = std::any_of(axes.begin(), axes.end(), [&](const auto& a) { return a.first == key; });
        if (!known) c.fail(item["template"], path + ".template", "placeholder {" + key + "} has no entry in 'vars'");
    }
    // Cartesian product, first variable outermost.
    std::vector<size_t> idx(axes.size(), 0);
    while (true) {
        PromptSpec p;
        p.text = tmpl;
        p.labels = labels.is_null() ? nlohmann::json::object() : labels;
        for (size_t a = 0; a < axes.size(); ++a) {
            const std::string& value = axes[a].second[idx[a]];
            const std::string ph = "{" + axes[a].first + "}";
            for (size_t pos = p.text.find(ph); pos != std::string::npos; pos = p.text.find(ph, pos + value.size()))
                p.text.replace(pos, ph.size(), value);
            p.labels[axes[a].first] = value;
        }
        p.loc = c.loc(item, path);
        out.push_back(std::move(p));
        size_t a = axes.size();
        while (a > 0) {
            --a;
            if (++idx[a] < axes[a].second.size()) break;
            idx[a] = 0;
            if (a == 0) return;
        }
        if (axes.empty()) return;
    }
}

std::vector<std::vector<int64_t>> npy_rows(const Ctx& c, const YAML::Node& n, const std::string& path,
                                          const fs::path& file) {
    if (!fs::exists(file)) c.fail(n, path, "file '" + file.string() + "' does not exist");
    NpyArray a;
    try {
        a = read_npy(file);
    } catch (const InputError& e) {
        c.fail(n, path, e.what());
    }
    if (a.shape.size() != 2)
        c.fail(n, path, "'" + file.string() + "' must be a 2-D int64 array [prompts, positions], got " +
                            std::to_string(a.shape.size()) + " dimensions");
    const auto v = a.to_i64();
    std::vector<std::vector<int64_t>> rows(a.shape[0]);
    for (int64_t r = 0; r < a.shape[0]; ++r) rows[r].assign(v.begin() + r * a.shape[1], v.begin() + (r + 1) * a.shape[1]);
    return rows;
}

void parse_ids_prompts(const Ctx& c, const YAML::Node& item, const std::string& path, const nlohmann::json& labels,
                       std::vector<PromptSpec>& out) {
    std::vector<std::vector<int64_t>> rows, masks, types;
    if (item["ids"].IsDefined()) {
        const YAML::Node ids = item["ids"];
        require_seq(c, ids, path + ".ids", "'ids'");
        // Accept one prompt ([1, 2, 3]) or several ([[1, 2], [3]]).
        if (ids.size() > 0 && ids[0].IsScalar()) {
            rows.push_back(get_int_list(c, ids, path + ".ids"));
        } else {
            for (size_t i = 0; i < ids.size(); ++i)
                rows.push_back(get_int_list(c, ids[i], path + ".ids[" + std::to_string(i) + "]"));
        }
    } else {
        rows = npy_rows(c, item["ids_file"], path + ".ids_file", c.resolve(get_string(c, item["ids_file"], path + ".ids_file")));
    }
    if (item["mask_file"].IsDefined()) {
        masks = npy_rows(c, item["mask_file"], path + ".mask_file",
                         c.resolve(get_string(c, item["mask_file"], path + ".mask_file")));
        if (masks.size() != rows.size() || (!rows.empty() && masks[0].size() != rows[0].size()))
            c.fail(item["mask_file"], path + ".mask_file", "mask shape does not match the ids shape");
    }
    if (item["token_type_ids_file"].IsDefined()) {
        types = npy_rows(c, item["token_type_ids_file"], path + ".token_type_ids_file",
                         c.resolve(get_string(c, item["token_type_ids_file"], path + ".token_type_ids_file")));
        if (types.size() != rows.size() || (!rows.empty() && types[0].size() != rows[0].size()))
            c.fail(item["token_type_ids_file"], path + ".token_type_ids_file",
                   "token type shape does not match the ids shape");
    }
    for (size_t r = 0; r < rows.size(); ++r) {
        PromptSpec p;
        p.has_ids = true;
        p.labels = labels;
        p.loc = c.loc(item, path + ".ids[" + std::to_string(r) + "]");
        size_t len = rows[r].size();
        if (!masks.empty()) {
            len = 0;
            while (len < masks[r].size() && masks[r][len] != 0) ++len;
            for (size_t k = len; k < masks[r].size(); ++k)
                if (masks[r][k] != 0)
                    c.fail(item["mask_file"], path + ".mask_file",
                           "row " + std::to_string(r) + " of the mask is not right-padded (a 1 follows a 0)");
        }
        if (len == 0) c.fail(item, path, "prompt " + std::to_string(r) + " has no tokens");
        p.ids.assign(rows[r].begin(), rows[r].begin() + static_cast<std::ptrdiff_t>(len));
        for (int64_t id : p.ids)
            if (id < 0) c.fail(item, path, "token ids must be non-negative (row " + std::to_string(r) + ")");
        if (!types.empty()) p.type_ids.assign(types[r].begin(), types[r].begin() + static_cast<std::ptrdiff_t>(len));
        out.push_back(std::move(p));
    }
}

void parse_random_prompts(const Ctx& c, const YAML::Node& item, const std::string& path, const nlohmann::json& labels,
                          uint64_t recipe_seed, std::vector<PromptSpec>& out) {
    const YAML::Node r = item["random"];
    const std::string rp = path + ".random";
    require_map(c, r, rp, "'random'");
    check_keys(c, r, rp, {"count", "length", "repeat", "seed", "range"}, "random prompts");
    if (!r["count"].IsDefined() || !r["length"].IsDefined())
        c.fail(r, rp, "random prompts need 'count' (how many) and 'length' (tokens before repeating)");
    RandomTokens spec;
    const int64_t count = get_int(c, r["count"], rp + ".count", 1, 1000000);
    spec.length = get_int(c, r["length"], rp + ".length", 1, 100000);
    spec.repeat = r["repeat"].IsDefined() ? get_int(c, r["repeat"], rp + ".repeat", 1, 64) : 2;
    spec.seed = r["seed"].IsDefined() ? static_cast<uint64_t>(get_int(c, r["seed"], rp + ".seed", 0, INT64_MAX)) : recipe_seed;
    if (r["range"].IsDefined()) {
        const auto range = get_int_list(c, r["range"], rp + ".range");
        if (range.size() != 2 || range[0] < 0 || range[1] - range[0] < 2)
            c.fail(r["range"], rp + ".range", "'range' must be [lo, hi] with 0 <= lo and at least 2 ids (hi exclusive)");
        spec.lo = range[0], spec.hi = range[1];
    }
    for (int64_t i = 0; i < count; ++i) {
        PromptSpec p;
        p.labels = labels;
        p.loc = c.loc(item, path);
        spec.index = static_cast<uint64_t>(i);
        p.random = spec;
        out.push_back(std::move(p));
    }
}

std::vector<PromptSpec> parse_prompts(const Ctx& c, const YAML::Node& list, uint64_t recipe_seed) {
    require_seq(c, list, "prompts", "'prompts'");
    std::vector<PromptSpec> out;
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node item = list[i];
        const std::string path = "prompts[" + std::to_string(i) + "]";
        if (item.IsScalar()) {
            out.push_back({item.Scalar(), nullptr, {}, {}, false, c.loc(item, path), std::nullopt});
            continue;
        }
        require_map(c, item, path, "each prompt");
        check_keys(c, item, path,
                   {"text", "labels", "file", "template", "vars", "ids", "ids_file", "mask_file", "token_type_ids_file",
                    "random"},
                   "a prompt");
        const nlohmann::json labels = parse_labels(c, item["labels"], path + ".labels");
        const int sources = item["text"].IsDefined() + item["file"].IsDefined() + item["template"].IsDefined() +
                            (item["ids"].IsDefined() || item["ids_file"].IsDefined()) + item["random"].IsDefined();
        if (sources != 1)
            c.fail(item, path, "a prompt needs exactly one of 'text', 'file', 'template', 'ids', 'ids_file' or 'random'");
        if (item["vars"].IsDefined() && !item["template"].IsDefined())
            c.fail(item["vars"], path + ".vars", "'vars' only goes with 'template'");
        if ((item["mask_file"].IsDefined() || item["token_type_ids_file"].IsDefined()) && !item["ids_file"].IsDefined() &&
            !item["ids"].IsDefined())
            c.fail(item, path, "'mask_file' and 'token_type_ids_file' go with 'ids_file'");
        if (item["text"].IsDefined()) {
            out.push_back({get_string(c, item["text"], path + ".text"), labels, {}, {}, false, c.loc(item, path), std::nullopt});
        } else if (item["file"].IsDefined()) {
            read_text_file_prompts(c, item["file"], path + ".file", c.resolve(get_string(c, item["file"], path + ".file")),
                                   labels, out);
        } else if (item["template"].IsDefined()) {
            expand_template(c, item, path, labels, out);
        } else if (item["random"].IsDefined()) {
            parse_random_prompts(c, item, path, labels, recipe_seed, out);
        } else {
            parse_ids_prompts(c, item, path, labels, out);
        }
    }
    if (out.empty()) c.fail(list, "prompts", "the recipe has no prompts");
    return out;
}

// ---- interventions ---------------------------------------------------------------------------------------------
// Keys and requirements come from the op table (core/model/interventions.h).

std::vector<float> float_list_or_file(const Ctx& c, const YAML::Node& item, const std::string& key,
                                      const std::string& path) {
    std::vector<float> out;
    if (item[key].IsDefined()) {
        require_seq(c, item[key], path + "." + key, "'" + key + "'");
        for (size_t i = 0; i < item[key].size(); ++i)
            out.push_back(static_cast<float>(get_double(c, item[key][i], path + "." + key + "[" + std::to_string(i) + "]")));
    } else if (item[key + "_file"].IsDefined()) {
        const fs::path f = c.resolve(get_string(c, item[key + "_file"], path + "." + key + "_file"));
        try {
            out = read_npy(f).to_f32();
        } catch (const InputError& e) {
            c.fail(item[key + "_file"], path + "." + key + "_file", e.what());
        }
    }
    return out;
}

/// Read one op parameter into the spec; false when it was not given.
bool parse_intervention_param(const Ctx& c, const YAML::Node& item, const std::string& path, const InterventionParam& p,
                              InterventionSpec& s) {
    const std::string key = p.key;
    switch (p.kind) {
        case InterventionParamKind::Number:
            if (!item[key].IsDefined()) return false;
            s.*p.number = get_double(c, item[key], path + "." + key);
            return true;
        case InterventionParamKind::Range: {
            if (item[key].IsDefined() && (item["lo"].IsDefined() || item["hi"].IsDefined()))
                c.fail(item[key], path + "." + key, "give either '" + key + ": [lo, hi]' or 'lo' and 'hi', not both");
            if (item[key].IsDefined()) {
                const YAML::Node r = item[key];
                if (!r.IsSequence() || r.size() != 2) c.fail(r, path + "." + key, "'" + key + "' must be [lo, hi]");
                s.lo = get_double(c, r[0], path + "." + key + "[0]");
                s.hi = get_double(c, r[1], path + "." + key + "[1]");
            } else if (item["lo"].IsDefined() && item["hi"].IsDefined()) {
                s.lo = get_double(c, item["lo"], path + ".lo");
                s.hi = get_double(c, item["hi"], path + ".hi");
            } else if (item["lo"].IsDefined() || item["hi"].IsDefined()) {
                c.fail(item, path, "give both 'lo' and 'hi' (or '" + key + ": [lo, hi]')");
            } else {
                return false;
            }
            if (s.lo > s.hi) c.fail(item, path, "range lower bound " + std::to_string(s.lo) + " exceeds upper bound " + std::to_string(s.hi));
            return true;
        }
        case InterventionParamKind::Vector:
            if (item[key].IsDefined() && item[key + "_file"].IsDefined())
                c.fail(item[key], path + "." + key, "give either '" + key + "' or '" + key + "_file', not both");
            if (!item[key].IsDefined() && !item[key + "_file"].IsDefined()) return false;
            s.*p.values = float_list_or_file(c, item, key, path);
            if ((s.*p.values).empty()) c.fail(item, path, "'" + key + "' is empty");
            return true;
        case InterventionParamKind::PromptIndex:
            if (!item[key].IsDefined()) return false;
            s.source_prompt = get_int(c, item[key], path + "." + key, 0, INT32_MAX);
            return true;
    }
    return false;
}

/// `{from: RUN/results/<id>.json, concept: X, mode: ranges | neurons, tau: T}`: the salient neurons of concept X
/// in a `ranges` result, as one mask_ranges (their [lo, hi], from mu +- tau sigma when `tau` is given) or zero
/// (`mode: neurons`, the whole neurons) intervention per hook. `prompts` / `positions` select as usual.
void parse_ranges_import(const Ctx& c, const YAML::Node& item, const std::string& path, std::vector<InterventionEntry>& out) {
    check_keys(c, item, path, {"from", "concept", "mode", "tau", "prompts", "positions"}, "an intervention imported with 'from'");
    const fs::path file = c.resolve(get_string(c, item["from"], path + ".from"));
    if (!item["concept"].IsDefined()) c.fail(item, path, "'from' needs 'concept': which concept's ranges to mask");
    const std::string concept_name = get_string(c, item["concept"], path + ".concept");
    const std::string mode = item["mode"].IsDefined() ? get_string(c, item["mode"], path + ".mode") : "ranges";
    if (mode != "ranges" && mode != "neurons")
        c.fail(item["mode"], path + ".mode", "'mode' must be 'ranges' (mask each neuron's range) or 'neurons' (zero them)");
    nlohmann::json doc;
    {
        std::ifstream in(file);
        if (!in) c.fail(item["from"], path + ".from", "cannot read " + file.string());
        try {
            doc = nlohmann::json::parse(in);
        } catch (const nlohmann::json::exception& e) {
            c.fail(item["from"], path + ".from", file.string() + " is not JSON (" + std::string(e.what()) + ")");
        }
    }
    const nlohmann::json* concepts = nullptr;
    if (doc.is_object() && doc.contains("data") && doc["data"].is_object() && doc["data"].contains("concepts"))
        concepts = &doc["data"]["concepts"];
    if (!concepts || !concepts->is_object())
        c.fail(item["from"], path + ".from", file.string() + " is not a `ranges` result (no data.concepts)");
    if (!concepts->contains(concept_name)) {
        std::vector<std::string> names;
        for (auto it = concepts->begin(); it != concepts->end(); ++it) names.push_back(it.key());
        c.fail(item["concept"], path + ".concept", "concept '" + concept_name + "' is not in " + file.string() +
                                                       did_you_mean(concept_name, names) + ". Concepts: " + join(names, ", ") + ".");
    }
    std::optional<double> tau;
    if (item["tau"].IsDefined()) tau = get_double(c, item["tau"], path + ".tau");
    if (tau && *tau < 0) c.fail(item["tau"], path + ".tau", "'tau' must be >= 0");
    std::vector<int64_t> prompts, positions;
    if (item["prompts"].IsDefined()) prompts = get_int_list(c, item["prompts"], path + ".prompts");
    if (item["positions"].IsDefined()) positions = get_int_list(c, item["positions"], path + ".positions");
    const auto& hooks = (*concepts)[concept_name].value("hooks", nlohmann::json::object());
    try {
        for (auto it = hooks.begin(); it != hooks.end(); ++it) {
            const auto& h = it.value();
            InterventionEntry e;
            e.loc = c.loc(item, path);
            InterventionSpec& s = e.spec;
            s.hook = it.key();
            s.op = mode == "ranges" ? "mask_ranges" : "zero";
            s.neurons = h.at("neurons").get<std::vector<int64_t>>();
            s.prompts = prompts;
            s.positions = positions;
            if (mode == "ranges") {
                if (tau) {
                    const auto mu = h.at("mu").get<std::vector<double>>(), sigma = h.at("sigma").get<std::vector<double>>();
                    for (size_t i = 0; i < mu.size() && i < sigma.size(); ++i) {
                        s.lo_values.push_back(static_cast<float>(mu[i] - *tau * sigma[i]));
                        s.hi_values.push_back(static_cast<float>(mu[i] + *tau * sigma[i]));
                    }
                } else {
                    s.lo_values = h.at("lo").get<std::vector<float>>();
                    s.hi_values = h.at("hi").get<std::vector<float>>();
                }
            }
            s.raw = {{"from", file.string()}, {"concept", concept_name}, {"mode", mode}, {"hook", s.hook}, {"op", s.op},
                     {"neurons", s.neurons}};
            if (tau) s.raw["tau"] = *tau;
            if (!prompts.empty()) s.raw["prompts"] = prompts;
            if (!positions.empty()) s.raw["positions"] = positions;
            if (mode == "ranges") s.raw["lo"] = s.lo_values, s.raw["hi"] = s.hi_values;
            out.push_back(std::move(e));
        }
    } catch (const nlohmann::json::exception& e) {
        c.fail(item["from"], path + ".from", file.string() + ": concept '" + concept_name + "' is malformed (" + e.what() + ")");
    }
    if (hooks.empty()) c.fail(item["concept"], path + ".concept", "concept '" + concept_name + "' has no hooks in " + file.string());
}

void parse_intervention(const Ctx& c, const YAML::Node& item, const std::string& path, std::vector<InterventionEntry>& out) {
    require_map(c, item, path, "each intervention");
    if (item["from"].IsDefined()) {
        parse_ranges_import(c, item, path, out);
        return;
    }
    std::vector<std::string> ops;
    for (const auto& op : intervention_table()) ops.push_back(op.name);
    InterventionEntry e;
    e.loc = c.loc(item, path);
    InterventionSpec& s = e.spec;
    if (!item["hook"].IsDefined()) c.fail(item, path, "intervention needs 'hook'");
    if (!item["op"].IsDefined()) c.fail(item, path, "intervention needs 'op' (one of " + join(ops, ", ") + ")");
    s.hook = get_string(c, item["hook"], path + ".hook");
    s.op = get_string(c, item["op"], path + ".op");
    const InterventionOp* op = nullptr;
    try {
        op = &intervention_op(s.op);
    } catch (const InputError& err) {
        c.fail(item["op"], path + ".op", err.what());
    }
    // Keys: the common ones and this op's; a key that belongs to another op says so.
    std::vector<std::string> allowed = intervention_common_keys(), own = intervention_param_keys(*op);
    allowed.insert(allowed.end(), own.begin(), own.end());
    for (auto it = item.begin(); it != item.end(); ++it) {
        const std::string key = it->first.as<std::string>();
        if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
        std::vector<std::string> users;
        for (const auto& other : intervention_table()) {
            const auto keys = intervention_param_keys(other);
            if (std::find(keys.begin(), keys.end(), key) != keys.end()) users.push_back(other.name);
        }
        if (!users.empty())
            c.fail(it->first, path + "." + key, "'" + key + "' does not apply to op '" + s.op + "' (it goes with " +
                                                    join(users, ", ") + "). Op '" + s.op + "' accepts: " + join(allowed, ", ") + ".");
        check_keys(c, item, path, allowed, "an intervention with op '" + s.op + "'");
    }
    if (item["neurons"].IsDefined()) s.neurons = get_int_list(c, item["neurons"], path + ".neurons");
    if (item["heads"].IsDefined()) s.heads = get_int_list(c, item["heads"], path + ".heads");
    if (item["positions"].IsDefined()) s.positions = get_int_list(c, item["positions"], path + ".positions");
    if (item["prompts"].IsDefined()) s.prompts = get_int_list(c, item["prompts"], path + ".prompts");
    for (const auto& p : op->params)
        if (!parse_intervention_param(c, item, path, p, s) && p.required)
            c.fail(item, path, "op '" + s.op + "' needs '" + p.key + "' (" + p.meaning + ")" +
                                   (p.kind == InterventionParamKind::Vector ? " or '" + std::string(p.key) + "_file' (.npy)" : ""));
    s.raw = yaml_to_json(item);
    out.push_back(std::move(e));
}

// ---- analyses / exports -------------------------------------------------------------------------------------------

bool valid_analysis_id(const std::string& id) {
    if (id.empty() || id.size() > 64) return false;
    return std::all_of(id.begin(), id.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_';
    });
}

// A token: its text, its id (an integer), or {label: KEY} (the prompt label holding its text).
TokenRef parse_token_ref(const Ctx& c, const YAML::Node& n, const std::string& path) {
    TokenRef t;
    t.loc = c.loc(n, path);
    if (n.IsMap()) {
        check_keys(c, n, path, {"label"}, "a token reference");
        if (!n["label"].IsDefined()) c.fail(n, path, "a token given as a mapping needs 'label' (the prompt label key)");
        t.label = get_string(c, n["label"], path + ".label");
        return t;
    }
    if (!n.IsScalar()) c.fail(n, path, "'" + path + "' must be a token's text, its id, or {label: KEY}");
    const std::string& v = n.Scalar();
    // Quoted in YAML (" 12") stays text; a bare integer is an id.
    const bool integer = n.Tag() != "!" && !v.empty() &&
                         std::all_of(v.begin(), v.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
    if (integer) t.id = get_int(c, n, path, 0, INT64_MAX);
    else t.text = v;
    if (!t.id && t.text.empty()) c.fail(n, path, "'" + path + "' is empty: name a token");
    return t;
}

GradientSpec parse_gradient(const Ctx& c, const YAML::Node& n) {
    require_map(c, n, "gradient", "'gradient'");
    check_keys(c, n, "gradient", {"metric", "target", "tokens", "position"}, "'gradient'");
    GradientSpec g;
    g.loc = c.loc(n, "gradient");
    if (!n["metric"].IsDefined())
        c.fail(n, "gradient.metric", "'gradient' needs a 'metric' (" + join(metric_kinds(), ", ") + ")");
    g.metric = get_string(c, n["metric"], "gradient.metric");
    const auto& kinds = metric_kinds();
    if (std::find(kinds.begin(), kinds.end(), g.metric) == kinds.end())
        c.fail(n["metric"], "gradient.metric",
               "unknown metric '" + g.metric + "'" + did_you_mean(g.metric, kinds) + " (metrics: " + join(kinds, ", ") + ")");
    if (n["target"].IsDefined()) g.tokens.push_back(parse_token_ref(c, n["target"], "gradient.target"));
    if (n["tokens"].IsDefined()) {
        require_seq(c, n["tokens"], "gradient.tokens", "'gradient.tokens'");
        for (size_t i = 0; i < n["tokens"].size(); ++i)
            g.tokens.push_back(parse_token_ref(c, n["tokens"][i], "gradient.tokens[" + std::to_string(i) + "]"));
    }
    if (g.metric == "logprob" && (g.tokens.size() != 1 || !n["target"].IsDefined()))
        c.fail(n, "gradient", "metric 'logprob' needs exactly one 'target' token (and no 'tokens')");
    if (g.metric == "logit_diff" && (g.tokens.size() != 2 || n["target"].IsDefined()))
        c.fail(n, "gradient", "metric 'logit_diff' needs 'tokens: [A, B]' (the difference is A − B)");
    if ((g.metric == "loss" || g.metric == "kl") && !g.tokens.empty())
        c.fail(n, "gradient", "metric '" + g.metric + "' takes no target tokens");
    if (n["position"].IsDefined()) g.position = get_int(c, n["position"], "gradient.position", -(1 << 20), (1 << 20));
    return g;
}

std::vector<AnalysisSpec> parse_analyses(const Ctx& c, const YAML::Node& list) {
    require_seq(c, list, "analyses", "'analyses'");
    std::vector<AnalysisSpec> out;
    std::set<std::string> ids;
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node item = list[i];
        const std::string path = "analyses[" + std::to_string(i) + "]";
        require_map(c, item, path, "each analysis");
        AnalysisSpec a;
        a.loc = c.loc(item, path);
        if (!item["use"].IsDefined()) c.fail(item, path, "analysis needs 'use' (the analyzer plugin id)");
        a.use = get_string(c, item["use"], path + ".use");
        a.id = item["id"].IsDefined() ? get_string(c, item["id"], path + ".id") : a.use;
        if (!valid_analysis_id(a.id))
            c.fail(item["id"].IsDefined() ? item["id"] : item, path + ".id",
                   "analysis id '" + a.id + "' must be 1-64 letters, digits, '-' or '_' (it names result files)");
        if (!ids.insert(a.id).second)
            c.fail(item, path, "duplicate analysis id '" + a.id + "': give each analysis its own 'id'");
        if (item["input"].IsDefined()) a.inputs = get_string_list(c, item["input"], path + ".input");
        for (auto it = item.begin(); it != item.end(); ++it) {
            const std::string key = it->first.as<std::string>();
            if (key != "id" && key != "use" && key != "input") a.params[key] = yaml_to_json(it->second);
        }
        out.push_back(std::move(a));
    }
    return out;
}

std::vector<ExportSpec> parse_exports(const Ctx& c, const YAML::Node& list) {
    require_seq(c, list, "exports", "'exports'");
    std::vector<ExportSpec> out;
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node item = list[i];
        const std::string path = "exports[" + std::to_string(i) + "]";
        ExportSpec e;
        e.loc = c.loc(item, path);
        if (item.IsScalar()) {
            e.use = item.Scalar();
        } else {
            require_map(c, item, path, "each export");
            if (!item["use"].IsDefined()) c.fail(item, path, "export needs 'use' (the exporter plugin id)");
            e.use = get_string(c, item["use"], path + ".use");
            for (auto it = item.begin(); it != item.end(); ++it) {
                const std::string key = it->first.as<std::string>();
                if (key != "use") e.params[key] = yaml_to_json(it->second);
            }
        }
        out.push_back(std::move(e));
    }
    return out;
}

/// A model dtype: float32, bfloat16, or int8 (int8 linear weights, float32 compute; docs/models.md).
void check_dtype(const Ctx& c, const YAML::Node& n, const std::string& path, const std::string& d) {
    const std::vector<std::string> ok{"float32", "bfloat16", "int8"};
    if (std::find(ok.begin(), ok.end(), d) == ok.end())
        c.fail(n, path, "dtype must be float32, bfloat16 or int8 (int8 linear weights, float32 compute), not '" + d +
                            "'" + did_you_mean(d, ok));
}

// `saes: [{hook: H, path: DIR}]`; the hook and the SAE's width are checked at plan time (run_plan.cpp).
std::vector<SaeEntry> parse_saes(const Ctx& c, const YAML::Node& list) {
    require_seq(c, list, "saes", "'saes'");
    std::vector<SaeEntry> out;
    for (size_t i = 0; i < list.size(); ++i) {
        const std::string path = "saes[" + std::to_string(i) + "]";
        const YAML::Node& n = list[i];
        require_map(c, n, path, "'" + path + "'");
        check_keys(c, n, path, {"hook", "path"}, "an SAE");
        if (!n["hook"].IsDefined() || !n["path"].IsDefined())
            c.fail(n, path, "an SAE needs 'hook' (the model hook it reads) and 'path' (the folder nscope train-sae wrote)");
        SaeEntry e;
        e.sae.hook = get_string(c, n["hook"], path + ".hook");
        e.sae.path = c.resolve(get_string(c, n["path"], path + ".path")).lexically_normal();
        if (!std::filesystem::is_regular_file(sae_config_path(e.sae.path)))
            c.fail(n["path"], path + ".path", "no SAE at '" + e.sae.path.string() + "' (no sae.json): train one with `nscope train-sae`");
        e.loc = c.loc(n, path);
        out.push_back(std::move(e));
    }
    return out;
}

ModelSpec parse_model(const Ctx& c, const YAML::Node& n, const std::string& path) {
    ModelSpec m;
    m.loc = c.loc(n, path);
    if (n.IsScalar()) {
        m.ref = n.Scalar();
    } else {
        require_map(c, n, path, "'" + path + "'");
        check_keys(c, n, path, {"path", "id", "dtype", "label"}, "a model");
        if (n["path"].IsDefined() == n["id"].IsDefined())
            c.fail(n, path, "a model needs exactly one of 'path' (a local folder) or 'id' (a hub id in the HF cache)");
        if (n["path"].IsDefined()) {
            const std::string p = get_string(c, n["path"], path + ".path");
            m.ref = c.resolve(p).lexically_normal().string();
        } else {
            m.ref = get_string(c, n["id"], path + ".id");
        }
        if (n["dtype"].IsDefined()) m.dtype = get_string(c, n["dtype"], path + ".dtype");
        if (n["label"].IsDefined()) m.label = get_string(c, n["label"], path + ".label");
    }
    check_dtype(c, n.IsMap() && n["dtype"].IsDefined() ? n["dtype"] : n, path + ".dtype", m.dtype);
    if (m.label.empty()) m.label = fs::path(m.ref).filename().string();
    return m;
}

// --set a.b.0.c=value
void apply_override(YAML::Node root, const std::string& text) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0)
        throw InputError("--set '" + text + "': expected key=value, e.g. --set batch_size=4");
    const std::string key = text.substr(0, eq);
    YAML::Node value;
    try {
        value = YAML::Load(text.substr(eq + 1));
    } catch (const YAML::Exception& e) {
        throw InputError("--set '" + text + "': the value is not valid YAML (" + e.msg + ")");
    }
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    YAML::Node cur = root;
    for (size_t i = 0; i < parts.size(); ++i) {
        const bool last = i + 1 == parts.size();
        const std::string& p = parts[i];
        if (cur.IsSequence()) {
            size_t idx = 0;
            try {
                idx = std::stoul(p);
            } catch (const std::exception&) {
                throw InputError("--set '" + text + "': '" + p + "' must be a list index");
            }
            if (idx >= cur.size())
                throw InputError("--set '" + text + "': index " + p + " is out of range (the list has " +
                                 std::to_string(cur.size()) + " entries)");
            if (last) {
                cur[idx] = value;
                return;
            }
            cur.reset(cur[idx]);
        } else {
            if (!cur.IsMap() && !cur.IsNull()) throw InputError("--set '" + text + "': '" + p + "' is not inside a mapping");
            if (last) {
                cur[p] = value;
                return;
            }
            if (!cur[p].IsDefined()) cur[p] = YAML::Node(YAML::NodeType::Map);
            YAML::Node next = cur[p];
            cur.reset(next);
        }
    }
}

}  // namespace

std::vector<PromptSpec> parse_prompt_lines(std::istream& in, const std::string& file, bool jsonl,
                                           const nlohmann::json& labels) {
    std::vector<PromptSpec> out;
    std::string line;
    size_t lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        PromptSpec p;
        p.loc = {file + ":" + std::to_string(lineno)};
        if (jsonl) {
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const std::exception& e) {
                throw InputError(p.loc.text + ": not valid JSON (" + e.what() + ")");
            }
            if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
                throw InputError(p.loc.text + ": each line must be an object with a string \"text\" (and optional \"labels\")");
            for (const auto& [k, v] : j.items())
                if (k != "text" && k != "labels")
                    throw InputError(p.loc.text + ": unknown key '" + k + "' (accepted: text, labels)");
            p.text = j["text"];
            p.labels = labels;
            if (j.contains("labels")) {
                if (!j["labels"].is_object()) throw InputError(p.loc.text + ": \"labels\" must be an object");
                if (p.labels.is_null()) p.labels = nlohmann::json::object();
                p.labels.update(j["labels"]);
            }
        } else {
            p.text = line;
            p.labels = labels;
        }
        out.push_back(std::move(p));
    }
    return out;
}

Recipe parse_recipe(const YAML::Node& input, const std::string& source, const fs::path& base_dir,
                    const std::vector<std::string>& overrides) {
    YAML::Node root = input;  // shares the caller's node: overrides edit it in place (YAML::Clone drops marks)
    Ctx c(source, base_dir);
    for (const auto& o : overrides) {
        apply_override(root, o);
        c.add_override(o.substr(0, o.find('=')));
    }
    if (!root.IsMap()) c.fail(root, "", "a recipe must be a mapping of keys (name, model, prompts, ...), not " + kind_name(root));
    check_plain_keys(c, root, "");
    check_keys(c, root, "",
               {"name", "description", "seed", "model", "models", "prompts", "batch_size", "max_tokens", "dtype",
                "threads", "add_special_tokens", "hooks", "interventions", "gradient", "analyses", "exports", "saes"},
               "the recipe");
    Recipe r;
    r.base_dir = base_dir;
    r.name = root["name"].IsDefined() ? get_string(c, root["name"], "name") : "";
    if (r.name.empty()) c.fail(root, "name", "the recipe needs a 'name' (it names the run folder)");
    for (char ch : r.name)
        if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.'))
            c.fail(root["name"], "name", "'name' may only contain letters, digits, '-', '_' and '.' (it names a folder)");
    if (root["seed"].IsDefined()) r.seed = static_cast<uint64_t>(get_int(c, root["seed"], "seed", 0, INT64_MAX));
    if (root["batch_size"].IsDefined()) r.batch_size = get_int(c, root["batch_size"], "batch_size", 1, 4096);
    if (root["max_tokens"].IsDefined()) r.max_tokens = get_int(c, root["max_tokens"], "max_tokens", 1, 1 << 20);
    if (root["threads"].IsDefined()) r.threads = static_cast<int>(get_int(c, root["threads"], "threads", 0, 1024));
    if (root["add_special_tokens"].IsDefined())
        r.add_special_tokens = get_bool(c, root["add_special_tokens"], "add_special_tokens");

    if (root["model"].IsDefined() && root["models"].IsDefined())
        c.fail(root["models"], "models", "use either 'model' or 'models', not both");
    if (root["model"].IsDefined()) {
        r.models.push_back(parse_model(c, root["model"], "model"));
    } else if (root["models"].IsDefined()) {
        require_seq(c, root["models"], "models", "'models'");
        for (size_t i = 0; i < root["models"].size(); ++i)
            r.models.push_back(parse_model(c, root["models"][i], "models[" + std::to_string(i) + "]"));
        std::set<std::string> labels;
        for (size_t i = 0; i < r.models.size(); ++i)
            if (!labels.insert(r.models[i].label).second)
                c.fail(root["models"][i], "models[" + std::to_string(i) + "]",
                       "two models share the label '" + r.models[i].label + "': give each a distinct 'label'");
    }
    if (r.models.empty()) c.fail(root, "model", "the recipe needs a 'model' (path: FOLDER or id: HUB_ID)");
    if (root["dtype"].IsDefined()) {
        const std::string d = get_string(c, root["dtype"], "dtype");
        check_dtype(c, root["dtype"], "dtype", d);
        for (auto& m : r.models) m.dtype = d;
    }
    if (!root["prompts"].IsDefined()) c.fail(root, "prompts", "the recipe needs 'prompts'");
    r.prompts = parse_prompts(c, root["prompts"], r.seed);
    if (root["hooks"].IsDefined()) {
        r.hooks = get_string_list(c, root["hooks"], "hooks");
        for (size_t i = 0; i < r.hooks.size(); ++i)
            r.hook_locs.push_back(root["hooks"].IsSequence() ? c.loc(root["hooks"][i], "hooks[" + std::to_string(i) + "]")
                                                             : c.loc(root["hooks"], "hooks"));
    }
    if (root["saes"].IsDefined()) r.saes = parse_saes(c, root["saes"]);
    if (root["interventions"].IsDefined()) {
        require_seq(c, root["interventions"], "interventions", "'interventions'");
        for (size_t i = 0; i < root["interventions"].size(); ++i)
            parse_intervention(c, root["interventions"][i], "interventions[" + std::to_string(i) + "]", r.interventions);
    }
    if (root["gradient"].IsDefined()) r.gradient = parse_gradient(c, root["gradient"]);
    if (root["analyses"].IsDefined()) r.analyses = parse_analyses(c, root["analyses"]);
    if (root["exports"].IsDefined()) r.exports = parse_exports(c, root["exports"]);
    r.resolved = yaml_to_json(root);
    return r;
}

std::vector<InterventionEntry> parse_interventions(const YAML::Node& list, const std::string& source,
                                                  const fs::path& base_dir, int index_base) {
    Ctx c(source, base_dir);
    require_seq(c, list, "interventions", "'interventions'");
    check_plain_keys(c, list, "interventions");
    std::vector<InterventionEntry> out;
    for (size_t i = 0; i < list.size(); ++i)
        parse_intervention(c, list[i], "interventions[" + std::to_string(i + index_base) + "]", out);
    return out;
}

Recipe parse_recipe_text(const std::string& yaml, const std::string& source, const fs::path& base_dir,
                         const std::vector<std::string>& overrides) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml);
    } catch (const YAML::ParserException& e) {
        throw InputError(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                         ": YAML syntax error: " + e.msg);
    } catch (const YAML::Exception& e) {
        throw InputError(source + ": cannot read the recipe: " + e.msg);
    }
    return parse_recipe(root, source, base_dir, overrides);
}

Recipe load_recipe(const fs::path& file, const std::vector<std::string>& overrides) {
    if (!fs::exists(file)) throw InputError("recipe '" + file.string() + "' does not exist");
    if (fs::is_directory(file)) throw InputError("recipe '" + file.string() + "' is a directory, not a YAML file");
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError(file.string() + ": cannot read the recipe");
    std::stringstream text;
    text << in.rdbuf();
    Recipe r = parse_recipe_text(text.str(), file.string(), fs::absolute(file).parent_path(), overrides);
    r.file = fs::absolute(file);
    return r;
}

std::vector<int64_t> random_prompt_ids(const RandomTokens& spec, int64_t vocab_size, const std::function<bool(int64_t)>& skip) {
    const int64_t hi = spec.hi < 0 ? vocab_size : spec.hi;
    if (hi > vocab_size || hi - spec.lo < 2)
        throw InputError("random prompts: range [" + std::to_string(spec.lo) + ", " + std::to_string(hi) +
                         ") does not fit the vocabulary of " + std::to_string(vocab_size) + " ids");
    uint64_t state = spec.seed * 0x9E3779B97F4A7C15ull + spec.index + 1;
    auto next = [&] {  // splitmix64
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    };
    const auto span = static_cast<uint64_t>(hi - spec.lo);
    std::vector<int64_t> once;
    for (int64_t tries = 0; static_cast<int64_t>(once.size()) < spec.length; ++tries) {
        if (tries > spec.length * 1000)
            throw InputError("random prompts: almost every id in [" + std::to_string(spec.lo) + ", " + std::to_string(hi) +
                             ") is a special token; give a 'range' of ordinary ids");
        const int64_t id = spec.lo + static_cast<int64_t>(next() % span);
        if (!skip || !skip(id)) once.push_back(id);
    }
    std::vector<int64_t> ids;
    for (int64_t r = 0; r < spec.repeat; ++r) ids.insert(ids.end(), once.begin(), once.end());
    return ids;
}

}  // namespace nscope
