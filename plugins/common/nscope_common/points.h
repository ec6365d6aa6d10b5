// Points of the activation space for projections (pca, and later embed): token points (one per real token)
// or per-prompt pooled points (mean over the prompt's real tokens, or its last real token), and a bounded,
// seeded, mergeable sample of them.
//
// The sample is a bottom-k sample: every point gets a pseudo-random key hashed from (seed, prompt index,
// position) and the sample keeps the `cap` points with the smallest keys. That is a uniform sample without
// replacement, and it depends only on the seed and the set of points offered — not on batch sizes, order,
// threads or sharding — so a merge of shards equals one pass exactly. Memory: cap × width floats. Cost per
// offered point O(1), plus O(log cap + width) when it enters the sample.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nscope/sdk.h>

namespace nscope::common {

/// How activations become points: every real token, or one pooled point per prompt.
enum class PointMode { Tokens, Mean, Last };

inline PointMode point_mode(const std::string& s) {
    return s == "mean" ? PointMode::Mean : s == "last" ? PointMode::Last : PointMode::Tokens;
}

/// One point: its origin (prompt index, position; position −1 for a mean-pooled point), the token id at that
/// position (−1 when pooled by mean) and the prompt (valid for the run).
struct PointOrigin {
    int64_t prompt = 0;
    int64_t position = 0;
    int64_t token = -1;
    const PromptInfo* info = nullptr;
};

/// The points of one [rows, positions, width] activation of a batch, appended row-major to `x` (cleared first)
/// with their origins.
inline void batch_points(const Batch& batch, const float* data, int64_t width, PointMode mode, std::vector<float>& x,
                         std::vector<PointOrigin>& origin) {
    x.clear();
    origin.clear();
    const auto w = static_cast<size_t>(width);
    for (size_t r = 0; r < batch.rows; ++r) {
        const PromptInfo* info = r < batch.prompts.size() ? batch.prompts[r] : nullptr;
        const int64_t prompt = info ? static_cast<int64_t>(info->index) : -1;
        const float* row = data + r * batch.positions * w;
        int64_t last = -1, n = 0;
        if (mode == PointMode::Mean) x.resize(x.size() + w, 0.0f);
        std::vector<double> sum(mode == PointMode::Mean ? w : 0, 0.0);
        for (size_t p = 0; p < batch.positions; ++p) {
            if (!batch.valid(r, p)) continue;
            const float* v = row + p * w;
            const int64_t token = batch.input_ids ? batch.input_ids[r * batch.positions + p] : -1;
            if (mode == PointMode::Tokens) {
                x.insert(x.end(), v, v + w);
                origin.push_back({prompt, static_cast<int64_t>(p), token, info});
            } else if (mode == PointMode::Mean) {
                for (size_t j = 0; j < w; ++j) sum[j] += v[j];
            }
            last = static_cast<int64_t>(p), ++n;
        }
        if (mode == PointMode::Tokens || n == 0) {
            if (mode == PointMode::Mean) x.resize(x.size() - w);
            continue;
        }
        if (mode == PointMode::Mean) {
            float* out = x.data() + x.size() - w;
            for (size_t j = 0; j < w; ++j) out[j] = static_cast<float>(sum[j] / static_cast<double>(n));
            origin.push_back({prompt, -1, -1, info});
        } else {
            const float* v = row + static_cast<size_t>(last) * w;
            x.insert(x.end(), v, v + w);
            origin.push_back({prompt, last, batch.input_ids ? batch.input_ids[r * batch.positions + last] : -1, info});
        }
    }
}

/// The readable text of token `id` (the run's token text, else the id in decimal); "" for −1 (a mean-pooled point).
inline std::string token_string(const std::function<std::string(int64_t)>& token_text, int64_t id) {
    return id < 0 ? "" : token_text ? token_text(id) : std::to_string(id);
}

/// Hover text of a point: "prompt 3 pos 5: <token>", or "prompt 3: <the prompt's first 80 bytes>" when pooled by
/// mean.
inline std::string point_hover(const PointOrigin& o, const std::function<std::string(int64_t)>& token_text) {
    std::string t = "prompt " + std::to_string(o.prompt);
    if (o.position >= 0) t += " pos " + std::to_string(o.position) + ": " + token_string(token_text, o.token);
    else if (o.info) t += ": " + o.info->text.substr(0, 80);
    return t;
}

/// The value of label `key` of a prompt as text (strings as they are, other JSON values dumped), or "(none)"
/// when the prompt has no such label.
inline std::string prompt_label(const PromptInfo* info, const std::string& key) {
    if (info && info->labels.is_object() && info->labels.contains(key)) {
        const auto& v = info->labels[key];
        return v.is_string() ? v.get<std::string>() : v.dump();
    }
    return "(none)";
}

/// splitmix64 finaliser: a well-mixed 64-bit hash of a 64-bit value.
inline uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct SampledPoint {
    uint64_t key = 0;
    PointOrigin origin;
    std::vector<float> x;
};

class PointSample {
public:
    void init(size_t cap, uint64_t seed) {
        cap_ = cap;
        seed_ = seed;
        heap_.clear();
        offered = 0;
    }

    uint64_t key(const PointOrigin& o) const {
        return mix64(mix64(seed_) ^ mix64(static_cast<uint64_t>(o.prompt) * 0x100000001B3ull +
                                          static_cast<uint64_t>(o.position + 1)));
    }

    /// Offer one point of `width` floats; kept if its key is among the `cap` smallest seen.
    void offer(const PointOrigin& o, const float* x, int64_t width) {
        ++offered;
        if (cap_ == 0) return;
        const uint64_t k = key(o);
        if (heap_.size() == cap_ && !less(k, o, heap_.front())) return;
        SampledPoint p{k, o, std::vector<float>(x, x + width)};
        push(std::move(p));
    }

    /// Offer the points `batch_points` produced: rows of `width` floats in `x`, one per origin.
    void offer_all(const std::vector<float>& x, const std::vector<PointOrigin>& origin, int64_t width) {
        for (size_t r = 0; r < origin.size(); ++r) offer(origin[r], x.data() + r * static_cast<size_t>(width), width);
    }

    void merge(const PointSample& other) {
        offered += other.offered;
        for (const auto& p : other.heap_)
            if (heap_.size() < cap_ || less(p.key, p.origin, heap_.front())) push(SampledPoint(p));
    }

    /// The sample in (prompt, position) order.
    std::vector<SampledPoint> sorted() const {
        std::vector<SampledPoint> out = heap_;
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
            return std::pair(a.origin.prompt, a.origin.position) < std::pair(b.origin.prompt, b.origin.position);
        });
        return out;
    }

    /// The points offered and the kept ones as they are (their heap order included).
    void save(StateWriter& out) const {
        out.u64(offered);
        out.u64(heap_.size());
        for (const auto& p : heap_) {
            out.u64(p.key);
            out.pod(p.origin.prompt);
            out.pod(p.origin.position);
            out.pod(p.origin.token);
            out.array(p.x);
        }
    }
    /// Read what save() wrote into an instance init()-ed with the same cap and seed; every point has
    /// `width` values, and its prompt's info comes from `prompts` (by index, as the run gives them).
    void load(StateReader& in, int64_t width, const std::vector<const PromptInfo*>& prompts) {
        offered = in.u64();
        const uint64_t n = in.count(4 * sizeof(uint64_t), "sampled points");
        if (n > cap_) in.fail(std::to_string(n) + " sampled points, the cap is " + std::to_string(cap_));
        heap_.clear();
        for (uint64_t i = 0; i < n; ++i) {
            SampledPoint p;
            p.key = in.u64();
            p.origin.prompt = in.pod<int64_t>();
            p.origin.position = in.pod<int64_t>();
            p.origin.token = in.pod<int64_t>();
            p.x = in.array_of<float>(static_cast<size_t>(width), "a sampled point");
            if (p.key != key(p.origin)) in.fail("a sampled point's key does not match its origin (another seed?)");
            if (p.origin.prompt >= 0 && static_cast<uint64_t>(p.origin.prompt) < prompts.size())
                p.origin.info = prompts[static_cast<size_t>(p.origin.prompt)];
            heap_.push_back(std::move(p));
        }
        auto cmp = [](const SampledPoint& a, const SampledPoint& b) { return less(a.key, a.origin, b); };
        if (!std::is_heap(heap_.begin(), heap_.end(), cmp)) in.fail("the sampled points are out of order");
    }

    uint64_t offered = 0;

private:
    // Ties of the hash (practically never) are broken by origin, so the sample stays a function of the set.
    static bool less(uint64_t k, const PointOrigin& o, const SampledPoint& p) {
        if (k != p.key) return k < p.key;
        return std::pair(o.prompt, o.position) < std::pair(p.origin.prompt, p.origin.position);
    }
    void push(SampledPoint p) {
        auto cmp = [](const SampledPoint& a, const SampledPoint& b) { return less(a.key, a.origin, b); };
        if (heap_.size() == cap_) {
            std::pop_heap(heap_.begin(), heap_.end(), cmp);
            heap_.pop_back();
        }
        heap_.push_back(std::move(p));
        std::push_heap(heap_.begin(), heap_.end(), cmp);
    }

    size_t cap_ = 0;
    uint64_t seed_ = 0;
    std::vector<SampledPoint> heap_;  // max-heap on key: front is the largest kept key
};

}  // namespace nscope::common
