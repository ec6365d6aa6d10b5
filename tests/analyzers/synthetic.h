// Synthetic corpora for analyzer / exporter tests: prompts of random lengths over a small vocabulary,
// activations with a fixed seed (dead, constant, ReLU-like, always-positive and Gaussian neurons), cut
// into batches with different position counts and right padding, zeros at padded positions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/plugin/registry.h"
#include "core/util/files.h"
#include "nscope/sdk.h"

namespace nscope::test {

struct SynthHook {
    std::string name;
    std::vector<int64_t> inner;  ///< dims after [batch, pos], e.g. {6} or {2, 3}
    int64_t width() const {
        int64_t n = 1;
        for (auto d : inner) n *= d;
        return n;
    }
};

struct SynthBatch {
    size_t rows = 0, positions = 0;
    std::vector<int64_t> ids, mask;
    std::vector<const PromptInfo*> prompts;
    std::map<std::string, std::vector<float>> acts;  ///< hook -> [rows, positions, inner...]
    std::map<std::string, std::vector<int64_t>> shapes;

    Batch view() const {
        Batch b;
        b.rows = rows;
        b.positions = positions;
        b.input_ids = ids.data();
        b.attention_mask = mask.data();
        b.prompts = prompts;
        for (const auto& [hook, data] : acts) b.activations.push_back({hook, {data.data(), DType::Float32, shapes.at(hook)}});
        return b;
    }
};

class SynthCorpus {
public:
    /// `n_prompts` prompts of 1..max_len tokens over a vocabulary of `vocab` ids.
    SynthCorpus(std::vector<SynthHook> hooks, size_t n_prompts, size_t max_len, int64_t vocab, uint32_t seed)
        : hooks(std::move(hooks)) {
        std::mt19937 rng(seed);
        std::uniform_int_distribution<size_t> len_d(1, max_len);
        std::uniform_int_distribution<int64_t> tok_d(0, vocab - 1);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        prompts.resize(n_prompts);
        for (size_t i = 0; i < n_prompts; ++i) {
            const size_t len = len_d(rng);
            prompts[i] = std::make_unique<PromptInfo>();
            prompts[i]->index = i;
            std::vector<int64_t> toks;
            for (size_t t = 0; t < len; ++t) {
                toks.push_back(tok_d(rng));
                prompts[i]->tokens.push_back(token_text(toks.back()));
                prompts[i]->text += prompts[i]->tokens.back();
            }
            ids.push_back(toks);
        }
        for (const auto& h : this->hooks) {
            const int64_t w = h.width();
            auto& per = values[h.name];
            per.resize(n_prompts);
            for (size_t i = 0; i < n_prompts; ++i) {
                const size_t len = ids[i].size();
                per[i].resize(len * w);
                for (size_t t = 0; t < len; ++t)
                    for (int64_t j = 0; j < w; ++j) {
                        float x = normal(rng);
                        switch (j % 5) {
                            case 0: x = 0.0f; break;                               // dead
                            case 1: x = std::max(0.0f, x - 0.3f) * 2.0f; break;    // ReLU-like, sparse
                            case 2: x = 3.0f + 0.5f * x + 0.1f * static_cast<float>(ids[i][t]); break;  // always on
                            case 3: x = x * x * x + 0.2f * static_cast<float>(ids[i][t] % 3); break;    // skewed
                            default: x = (j == 4) ? 1.5f : x; break;               // neuron 4 constant
                        }
                        per[i][t * w + j] = x;
                    }
            }
        }
    }

    static std::string token_text(int64_t id) {
        std::string s = std::to_string(id);
        s.insert(s.begin(), 'w');
        s.push_back(' ');
        return s;
    }

    std::vector<const PromptInfo*> prompt_ptrs() const {
        std::vector<const PromptInfo*> out;
        for (const auto& p : prompts) out.push_back(p.get());
        return out;
    }

    RunContext run_context(const std::string& run_dir = "") const {
        RunContext ctx;
        ctx.run_dir = run_dir;
        ctx.model_name = "synthetic";
        ctx.prompts = prompt_ptrs();
        ctx.token_text = [](int64_t id) { return token_text(id); };
        ctx.host = &host_services();
        for (const auto& h : hooks) {
            HookPoint info{h.name, {"batch", "pos"}, {-1, -1}};
            for (auto d : h.inner) info.shape.push_back(d);
            ctx.hooks.push_back(info);
        }
        return ctx;
    }

    /// Batches over prompts [first, last) of `batch_size` rows each, padded to the batch's longest prompt
    /// plus 0..2 extra positions (so position counts differ between batches).
    std::vector<SynthBatch> batches(size_t batch_size, size_t first = 0, size_t last = SIZE_MAX,
                                    uint32_t seed = 99) const {
        last = std::min(last, prompts.size());
        std::mt19937 rng(seed);
        std::vector<SynthBatch> out;
        for (size_t start = first; start < last; start += batch_size) {
            SynthBatch b;
            b.rows = std::min(batch_size, last - start);
            size_t longest = 0;
            for (size_t r = 0; r < b.rows; ++r) longest = std::max(longest, ids[start + r].size());
            b.positions = longest + rng() % 3;
            b.ids.assign(b.rows * b.positions, 0);
            b.mask.assign(b.rows * b.positions, 0);
            for (size_t r = 0; r < b.rows; ++r) {
                b.prompts.push_back(prompts[start + r].get());
                for (size_t t = 0; t < ids[start + r].size(); ++t) {
                    b.ids[r * b.positions + t] = ids[start + r][t];
                    b.mask[r * b.positions + t] = 1;
                }
            }
            for (const auto& h : hooks) {
                const int64_t w = h.width();
                auto& data = b.acts[h.name];
                data.assign(b.rows * b.positions * w, 0.0f);
                for (size_t r = 0; r < b.rows; ++r) {
                    const auto& src = values.at(h.name)[start + r];
                    std::copy(src.begin(), src.end(), data.begin() + static_cast<int64_t>(r * b.positions * w));
                }
                std::vector<int64_t> shape{static_cast<int64_t>(b.rows), static_cast<int64_t>(b.positions)};
                for (auto d : h.inner) shape.push_back(d);
                b.shapes[h.name] = shape;
            }
            out.push_back(std::move(b));
        }
        return out;
    }

    /// Activation of (prompt, position, neuron) of `hook`.
    float at(const std::string& hook, size_t prompt, size_t pos, int64_t neuron) const {
        const int64_t w = width(hook);
        return values.at(hook)[prompt][pos * w + neuron];
    }
    int64_t width(const std::string& hook) const {
        for (const auto& h : hooks)
            if (h.name == hook) return h.width();
        return 0;
    }

    std::vector<SynthHook> hooks;
    std::vector<std::unique_ptr<PromptInfo>> prompts;
    std::vector<std::vector<int64_t>> ids;
    std::map<std::string, std::vector<std::vector<float>>> values;  ///< hook -> prompt -> [len, width]
};

/// Batches that carry given per-token values: `tokens[hook]` is [N, width] row-major (token t of the corpus
/// is row t), cut into prompts of the given lengths (cycled until N tokens are used), `batch_size` prompts
/// per batch, right-padded by 1 position with `pad` written at padded positions (real runs write zeros; a
/// loud value shows whether an analyzer lets padding in). `prompts` receives the PromptInfos the batches
/// point to.
inline std::vector<SynthBatch> token_batches(const std::map<std::string, std::vector<float>>& tokens,
                                             const std::map<std::string, int64_t>& widths,
                                             const std::vector<size_t>& lengths, size_t batch_size,
                                             std::vector<std::unique_ptr<PromptInfo>>& prompts, float pad = 0.0f,
                                             size_t first_prompt = 0) {
    const size_t n = tokens.begin()->second.size() / static_cast<size_t>(widths.at(tokens.begin()->first));
    std::vector<std::pair<size_t, size_t>> spans;  // [start, length) in tokens
    for (size_t t = 0, i = 0; t < n; t += spans.back().second, ++i)
        spans.emplace_back(t, std::min(lengths[i % lengths.size()], n - t));
    std::vector<SynthBatch> out;
    for (size_t s0 = 0; s0 < spans.size(); s0 += batch_size) {
        SynthBatch b;
        b.rows = std::min(batch_size, spans.size() - s0);
        size_t longest = 0;
        for (size_t r = 0; r < b.rows; ++r) longest = std::max(longest, spans[s0 + r].second);
        b.positions = longest + 1;
        b.ids.assign(b.rows * b.positions, 0);
        b.mask.assign(b.rows * b.positions, 0);
        for (size_t r = 0; r < b.rows; ++r) {
            prompts.push_back(std::make_unique<PromptInfo>());
            prompts.back()->index = first_prompt + s0 + r;
            b.prompts.push_back(prompts.back().get());
            for (size_t p = 0; p < spans[s0 + r].second; ++p) {
                b.mask[r * b.positions + p] = 1;
                b.ids[r * b.positions + p] = static_cast<int64_t>((spans[s0 + r].first + p) % 50);
            }
        }
        for (const auto& [hook, values] : tokens) {
            const auto w = static_cast<size_t>(widths.at(hook));
            auto& data = b.acts[hook];
            data.assign(b.rows * b.positions * w, pad);
            for (size_t r = 0; r < b.rows; ++r)
                std::copy_n(values.begin() + static_cast<int64_t>(spans[s0 + r].first * w), spans[s0 + r].second * w,
                            data.begin() + static_cast<int64_t>(r * b.positions * w));
            b.shapes[hook] = {static_cast<int64_t>(b.rows), static_cast<int64_t>(b.positions), widths.at(hook)};
        }
        out.push_back(std::move(b));
    }
    return out;
}

/// The message of the InputError that `f` throws, or a note saying it threw nothing / something else
/// (for CHECK_THAT(input_error([&] { ... }), Catch::Contains("...")).
template <class F>
std::string input_error(F&& f) {
    try {
        f();
    } catch (const InputError& e) {
        return e.what();
    } catch (const std::exception& e) {
        return std::string("<not an InputError: ") + e.what() + ">";
    }
    return "<no exception>";
}

/// JSON equality with floating-point numbers compared to a relative / absolute tolerance.
inline bool json_close(const nlohmann::json& a, const nlohmann::json& b, double tol = 1e-9) {
    if (a.is_number() && b.is_number()) {
        const double x = a.get<double>(), y = b.get<double>();
        return std::abs(x - y) <= tol * std::max({1.0, std::abs(x), std::abs(y)});
    }
    if (a.type() != b.type() || a.size() != b.size()) return false;
    if (a.is_object()) {
        for (auto it = a.begin(); it != a.end(); ++it)
            if (!b.contains(it.key()) || !json_close(it.value(), b[it.key()], tol)) return false;
        return true;
    }
    if (a.is_array()) {
        for (size_t i = 0; i < a.size(); ++i)
            if (!json_close(a[i], b[i], tol)) return false;
        return true;
    }
    return a == b;
}

/// The host registry over the build tree's plugins (loaded once per test process).
inline const PluginRegistry& registry() {
    static std::unique_ptr<PluginRegistry> reg = [] {
        auto r = std::make_unique<PluginRegistry>();
        r->scan(PluginRegistry::search_path({}));
        return r;
    }();
    return *reg;
}

/// configure + begin + consume every batch.
inline std::unique_ptr<Analyzer> run_analyzer(const std::string& id, const Params& params, const SynthCorpus& c,
                                              const std::vector<SynthBatch>& batches) {
    auto a = registry().create_analyzer(id);
    a->configure(params);
    const RunContext ctx = c.run_context();
    a->begin(ctx);
    for (const auto& b : batches) a->consume(b.view());
    return a;
}

}  // namespace nscope::test
