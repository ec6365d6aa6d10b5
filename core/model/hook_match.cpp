#include "core/model/hook_match.h"

#include <set>

#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {

std::vector<std::string> expand_braces(const std::string& pattern) {
    const auto open = pattern.find('{');
    if (open == std::string::npos) {
        if (pattern.find('}') != std::string::npos)
            throw InputError("hook pattern '" + pattern + "': '}' without '{'");
        return {pattern};
    }
    const auto close = pattern.find('}', open);
    if (close == std::string::npos) throw InputError("hook pattern '" + pattern + "': '{' without '}'");
    const std::string body = pattern.substr(open + 1, close - open - 1);
    const std::string head = pattern.substr(0, open), tail = pattern.substr(close + 1);
    std::vector<std::string> alts;
    if (const auto dots = body.find(".."); dots != std::string::npos) {
        long a = 0, b = 0;
        try {
            size_t n1 = 0, n2 = 0;
            a = std::stol(body.substr(0, dots), &n1);
            b = std::stol(body.substr(dots + 2), &n2);
            if (n1 != dots || n2 != body.size() - dots - 2) throw std::invalid_argument("x");
        } catch (const std::exception&) {
            throw InputError("hook pattern '" + pattern + "': range {" + body + "} must be {FIRST..LAST} with integers");
        }
        if (b < a) throw InputError("hook pattern '" + pattern + "': empty range {" + body + "}");
        for (long i = a; i <= b; ++i) alts.push_back(std::to_string(i));
    } else {
        size_t start = 0;
        while (true) {
            const auto comma = body.find(',', start);
            alts.push_back(body.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
            if (comma == std::string::npos) break;
            start = comma + 1;
        }
    }
    std::vector<std::string> out;
    for (const auto& a : alts)
        for (auto& rest : expand_braces(tail)) out.push_back(head + a + rest);
    return out;
}

std::vector<int> match_hook_ids(const std::vector<HookPoint>& hooks, const std::string& pattern) {
    std::vector<int> ids;
    std::set<int> seen;
    for (const auto& p : expand_braces(pattern)) {
        const bool glob = p.find_first_of("*?") != std::string::npos;
        for (size_t i = 0; i < hooks.size(); ++i)
            if ((glob ? glob_match(p, hooks[i].name) : p == hooks[i].name) && seen.insert(static_cast<int>(i)).second)
                ids.push_back(static_cast<int>(i));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
}

std::vector<std::string> match_hooks(const std::vector<HookPoint>& hooks, const std::vector<std::string>& patterns) {
    std::set<int> ids;
    for (const auto& pat : patterns) {
        const auto m = match_hook_ids(hooks, pat);
        if (m.empty()) {
            std::vector<std::string> names;
            for (const auto& h : hooks) names.push_back(h.name);
            std::string hint = did_you_mean(pat, names);
            if (hint.empty()) {
                // Suggest by the last component ("hook_post") when the whole name is far off.
                const auto dot = pat.rfind('.');
                const std::string leaf = dot == std::string::npos ? pat : pat.substr(dot + 1);
                std::set<std::string> leaves;
                for (const auto& n : names) {
                    const auto d = n.rfind('.');
                    leaves.insert(d == std::string::npos ? n : n.substr(d + 1));
                }
                hint = did_you_mean(leaf, std::vector<std::string>(leaves.begin(), leaves.end()));
            }
            throw InputError("hook pattern '" + pat + "' matches no hook point of this model" + hint +
                             ". List them with `nscope hooks MODEL`.");
        }
        ids.insert(m.begin(), m.end());
    }
    std::vector<std::string> out;
    for (int i : ids) out.push_back(hooks[static_cast<size_t>(i)].name);
    return out;
}

std::string hook_shape_string(const HookPoint& h) {
    std::string s = "[";
    for (size_t i = 0; i < h.shape.size(); ++i) {
        if (i) s += ", ";
        s += h.shape[i] < 0 ? (i < h.dims.size() ? h.dims[i] : std::string("?")) : std::to_string(h.shape[i]);
    }
    return s + "]";
}

}  // namespace nscope
