// `topk` analyzer (reverse activation queries): for every neuron (and every neuron group) the k token
// occurrences with the highest activation, with their context window; and the tokens / n-grams with the
// highest max and mean activation. Memory: neurons x k (x n-gram lengths) for the top lists, plus one
// n-gram table capped at `max_ngrams` entries. Schema and eviction policy: docs/analyses.md#topk.
#include <nscope/sdk.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#include "nscope_common/hooks.h"
#include "nscope_common/kernels.h"
#include "nscope_common/params.h"
#include "nscope_common/topk.h"

namespace {

using nscope::common::better;
using nscope::common::Occurrence;
using nscope::common::TopKLists;
namespace kernels = nscope::common::kernels;

constexpr int kMaxN = 6;  // longest n-gram

struct NgramKey {
    std::array<int64_t, kMaxN> ids{};
    uint8_t n = 0;
    bool operator==(const NgramKey& o) const { return n == o.n && ids == o.ids; }
};
struct NgramKeyHash {
    size_t operator()(const NgramKey& k) const {
        uint64_t h = 1469598103934665603ull ^ k.n;
        for (int i = 0; i < k.n; ++i) {
            h ^= static_cast<uint64_t>(k.ids[i]) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
            h *= 1099511628211ull;
        }
        return static_cast<size_t>(h);
    }
};

/// A top activation; its context window sits at the same flat index in the track's context pool.
struct Hit {
    Occurrence occ;
    int64_t token = 0;
    int32_t pending = -1;  ///< position in the current batch whose context is still to be copied; -1: done
};
/// The best occurrence of one n-gram (the activation at its last token).
struct NgramHit {
    Occurrence occ;
    NgramKey key;  // (its NgramKeyHash is the entry's tag in the lists)
};

/// A hit as the saved state holds it (no padding, no bookkeeping).
struct SavedHit {
    float value;
    uint32_t prompt, position;
    int32_t token;
};
static_assert(sizeof(SavedHit) == 16);

/// A token id as the saved state holds it (32 bits: every vocabulary fits; -1 marks outside the prompt).
int32_t narrow_id(int64_t id) {
    if (id < std::numeric_limits<int32_t>::min() || id > std::numeric_limits<int32_t>::max())
        throw nscope::RuntimeError("topk: token id " + std::to_string(id) + " does not fit the saved state (32 bits)");
    return static_cast<int32_t>(id);
}

/// Count-capped table of n-grams seen in the corpus. Activation sums per n-gram live in each track, indexed
/// by slot. When full, the half of the entries with the lowest counts (ties: least recently seen) is
/// evicted in one sweep; entries touched at the current token are never evicted. An entry created after
/// any eviction is marked inexact (an earlier occurrence may have been dropped).
class NgramTable {
public:
    struct Slot {
        NgramKey key;
        uint64_t count = 0;
        uint64_t last = 0;
        bool exact = true;
        bool used = false;
    };

    void init(size_t capacity) {
        slots_.assign(capacity, Slot{});
        free_.clear();
        for (size_t i = capacity; i-- > 0;) free_.push_back(static_cast<uint32_t>(i));
        index_.clear();
        evictions = 0;
    }

    /// The slot of `key`, created (fresh = true) when new; -1 if nothing can be evicted to make room.
    /// Adds `count` occurrences and marks the slot as seen at `tick`.
    int acquire(const NgramKey& key, uint64_t tick, uint64_t count, bool& fresh) {
        fresh = false;
        auto it = index_.find(key);
        uint32_t s;
        if (it != index_.end()) {
            s = it->second;
        } else {
            if (free_.empty() && !evict_half(tick)) return -1;
            s = free_.back();
            free_.pop_back();
            slots_[s] = Slot{key, 0, tick, evictions == 0, true};
            index_.emplace(key, s);
            fresh = true;
        }
        slots_[s].count += count;
        slots_[s].last = tick;
        return static_cast<int>(s);
    }

    int find(const NgramKey& key) const {
        auto it = index_.find(key);
        return it == index_.end() ? -1 : static_cast<int>(it->second);
    }

    const std::vector<Slot>& slots() const { return slots_; }
    std::vector<Slot>& slots() { return slots_; }
    size_t capacity() const { return slots_.size(); }
    size_t used() const { return index_.size(); }
    uint64_t evictions = 0;

    /// Slots and free list as they are (their order decides later slots and evictions); the index is rebuilt.
    void save(nscope::StateWriter& out) const {
        out.array(slots_);
        out.array(free_);
        out.u64(evictions);
    }
    void load(nscope::StateReader& in) {
        slots_ = in.array_of<Slot>(slots_.size(), "n-gram table");
        free_ = in.array<uint32_t>();
        evictions = in.u64();
        index_.clear();
        for (uint32_t s = 0; s < slots_.size(); ++s)
            if (slots_[s].used) {
                if (slots_[s].key.n < 1 || slots_[s].key.n > kMaxN) in.fail("an n-gram has length " + std::to_string(slots_[s].key.n));
                if (!index_.emplace(slots_[s].key, s).second) in.fail("an n-gram is in the table twice");
            }
        for (uint32_t s : free_)
            if (s >= slots_.size() || slots_[s].used) in.fail("the n-gram free list names a used or missing slot");
        if (free_.size() + index_.size() != slots_.size()) in.fail("the n-gram table's free list does not add up");
    }

private:
    bool evict_half(uint64_t tick) {
        std::vector<uint32_t> cand;
        for (uint32_t s = 0; s < slots_.size(); ++s)
            if (slots_[s].used && slots_[s].last != tick) cand.push_back(s);
        if (cand.empty()) return false;
        const size_t n = std::max<size_t>(1, cand.size() / 2);
        std::nth_element(cand.begin(), cand.begin() + static_cast<int64_t>(n - 1), cand.end(), [&](uint32_t a, uint32_t b) {
            const auto &x = slots_[a], &y = slots_[b];
            return x.count != y.count ? x.count < y.count : x.last < y.last;
        });
        for (size_t i = 0; i < n; ++i) {
            index_.erase(slots_[cand[i]].key);
            slots_[cand[i]].used = false;
            free_.push_back(cand[i]);
        }
        evictions += n;
        return true;
    }

    std::vector<Slot> slots_;
    std::vector<uint32_t> free_;
    std::unordered_map<NgramKey, uint32_t, NgramKeyHash> index_;
};

struct Config {
    size_t k = 10;
    int context = 5;
    int ngram = 2;
    uint64_t min_count = 2;
    size_t max_ngrams = 1024;
    size_t window() const { return static_cast<size_t>(2 * context + 1); }
};

/// What one token position contributes, shared by every track.
struct Position {
    Occurrence occ;
    int64_t token = 0;
    const int64_t* context = nullptr;  ///< window() ids, -1 outside the prompt
    size_t row = 0, pos = 0;           ///< where its activations are in the batch
    NgramKey keys[kMaxN];
    uint64_t hashes[kMaxN] = {};
    int n_keys = 0;                    ///< n-grams ending here: lengths 1..n_keys
    int slots[kMaxN] = {};             ///< n-gram table slot per length (-1: dropped)
    bool fresh[kMaxN] = {};
};

/// The top lists of one set of channels: a hook's neurons, or the neuron groups.
class Track {
public:
    void init(size_t channels, const Config& cfg) {
        cfg_ = cfg;
        channels_ = channels;
        hits_.init(channels, cfg.k);
        context_.assign(channels * cfg.k * cfg.window(), -1);
        ngmax_.init(channels * static_cast<size_t>(cfg.ngram), cfg.k);
        floor_.assign(channels, 0.0f);
        for (size_t c = 0; c < channels; ++c) update_floor(c);
        sums_.assign(cfg.ngram > 0 ? cfg.max_ngrams * channels : 0, 0.0);
    }
    size_t channels() const { return channels_; }

    /// Fold in a batch: `rows[i]` holds the channels' values at `positions[i]` (in corpus order). Each row
    /// is read front to back (the hardware prefetcher's favourite pattern); context windows are copied
    /// once per batch for the hits that are still in the lists at its end.
    void add_batch(const std::vector<Position>& positions, const std::vector<const float*>& rows) {
        for (size_t i = 0; i < positions.size(); ++i) add(rows[i], positions[i], static_cast<int32_t>(i));
        const size_t W = cfg_.window();
        for (size_t c = 0; c < channels_; ++c)
            for (size_t j = 0; j < hits_.size(c); ++j) {
                const size_t i = c * cfg_.k + j;
                Hit& h = hits_.item(i);
                if (h.pending < 0) continue;
                const int64_t* src = positions[static_cast<size_t>(h.pending)].context;
                std::copy(src, src + W, context_.begin() + static_cast<int64_t>(i * W));
                h.pending = -1;
            }
    }

    /// Fold `o` (same channels) into this track; `slot_map[s]` is this table's slot for o's slot s.
    void merge(const Track& o, const std::vector<int>& slot_map, const std::vector<bool>& fresh) {
        const size_t W = cfg_.window();
        for (size_t c = 0; c < channels_; ++c)
            for (size_t j = 0; j < o.hits_.size(c); ++j) {
                const size_t src = c * cfg_.k + j;
                const Hit& h = o.hits_.item(src);
                const int64_t i = hits_.take(c, h.occ);
                if (i < 0) continue;
                hits_.item(static_cast<size_t>(i)).token = h.token;
                std::copy(&o.context_[src * W], &o.context_[src * W] + W, context_.begin() + i * static_cast<int64_t>(W));
            }
        for (size_t idx = 0; idx < ngmax_.lists(); ++idx)
            for (size_t j = 0; j < o.ngmax_.size(idx); ++j) {
                offer_ngram(idx, o.ngmax_.item(idx * cfg_.k + j).occ, o.ngmax_.item(idx * cfg_.k + j).key,
                            o.ngmax_.tag(idx * cfg_.k + j));
            }
        for (size_t c = 0; c < channels_; ++c) update_floor(c);
        for (size_t s = 0; s < slot_map.size(); ++s) {
            if (slot_map[s] < 0) continue;
            double* dst = &sums_[static_cast<size_t>(slot_map[s]) * channels_];
            if (fresh[s]) std::fill(dst, dst + channels_, 0.0);
            const double* src = &o.sums_[s * channels_];
            for (size_t c = 0; c < channels_; ++c) dst[c] += src[c];
        }
    }
    /// Everything consume() accumulated, compactly (state version 2): per channel its number of hits, then
    /// every hit as 16 bytes (value, prompt, position, token id) in slot order; the context windows only
    /// when context > 0 (with context 0 a hit's window is its own token); the n-gram lists and sums only
    /// with n-grams. Floors, worst entries and the like follow from the hits on load. load() into a track
    /// init()-ed with the same channels and config.
    void save(nscope::StateWriter& out) const {
        const size_t W = cfg_.window();
        std::vector<uint32_t> sizes(channels_);
        std::vector<SavedHit> hits;
        std::vector<int32_t> windows;
        hits.reserve(channels_ * cfg_.k);
        for (size_t c = 0; c < channels_; ++c) {
            sizes[c] = static_cast<uint32_t>(hits_.size(c));
            for (size_t j = 0; j < hits_.size(c); ++j) {
                const size_t i = c * cfg_.k + j;
                const Hit& h = hits_.item(i);
                hits.push_back({h.occ.value, h.occ.prompt, h.occ.position, narrow_id(h.token)});
                if (cfg_.context > 0)
                    for (size_t w = 0; w < W; ++w) windows.push_back(narrow_id(context_[i * W + w]));
            }
        }
        out.array(sizes);
        out.array(hits);
        if (cfg_.context > 0) out.array(windows);
        if (cfg_.ngram > 0) {
            ngmax_.save(out);
            out.array(sums_);
        }
    }
    void load(nscope::StateReader& in) {
        const size_t W = cfg_.window();
        const auto sizes = in.array_of<uint32_t>(channels_, "top-k list sizes");
        uint64_t total = 0;
        for (uint32_t n : sizes) {
            if (n > cfg_.k) in.fail("a top-k list holds " + std::to_string(n) + " hits, k is " + std::to_string(cfg_.k));
            total += n;
        }
        // The hits and windows are read in place (no copy of the arrays, no allocation per hit).
        const auto records = [&](size_t per_hit, size_t bytes, const char* what) {
            const uint64_t n = in.u64();
            if (n != total * per_hit) in.fail(std::string(what) + ": " + std::to_string(n) + " entries for " + std::to_string(total) + " hits");
            return in.view(n * bytes, what).data();
        };
        const char* hits = records(1, sizeof(SavedHit), "top-k hits");
        const char* windows = cfg_.context > 0 ? records(W, sizeof(int32_t), "top-k contexts") : nullptr;
        size_t r = 0;
        for (size_t c = 0; c < channels_; ++c)
            hits_.restore(c, sizes[c], [&](size_t j, Hit& h) {
                SavedHit s;
                std::memcpy(&s, hits + r * sizeof(SavedHit), sizeof(SavedHit));
                h.occ = {s.value, s.prompt, s.position};
                h.token = s.token;
                h.pending = -1;
                int64_t* ctx = &context_[(c * cfg_.k + j) * W];
                if (!windows) {
                    ctx[0] = s.token;
                } else {
                    for (size_t w = 0; w < W; ++w) {
                        int32_t id;
                        std::memcpy(&id, windows + (r * W + w) * sizeof(int32_t), sizeof(int32_t));
                        ctx[w] = id;
                    }
                }
                ++r;
            });
        if (cfg_.ngram > 0) {
            ngmax_.load(in);
            sums_ = in.array_of<double>(sums_.size(), "n-gram sums");
        }
        for (size_t c = 0; c < channels_; ++c) update_floor(c);
    }

    /// Zero the sums of slots created by a merge that this track has no data for.
    void clear_slot(int slot) {
        double* dst = &sums_[static_cast<size_t>(slot) * channels_];
        std::fill(dst, dst + channels_, 0.0);
    }

    /// Channel c's hits, best first, as flat indices for hit() and context().
    std::vector<size_t> ranked_hits(size_t c) const { return hits_.ranked(c); }
    const Hit& hit(size_t i) const { return hits_.item(i); }
    const int64_t* context(size_t i) const { return &context_[i * cfg_.window()]; }
    std::vector<NgramHit> ngram_max(size_t c, int n) const {
        const size_t idx = c * static_cast<size_t>(cfg_.ngram) + static_cast<size_t>(n);
        std::vector<NgramHit> out;
        for (size_t i : ngmax_.ranked(idx)) out.push_back(ngmax_.item(i));
        return out;
    }
    double sum(int slot, size_t c) const { return sums_[static_cast<size_t>(slot) * channels_ + c]; }

private:
    /// One position (batch index i) over every channel.
    void add(const float* row, const Position& pos, int32_t i) {
        for (int n = 0; n < pos.n_keys; ++n) {
            if (pos.slots[n] < 0) continue;
            double* s = &sums_[static_cast<size_t>(pos.slots[n]) * channels_];
            if (pos.fresh[n])
                kernels::widen(s, row, channels_);
            else
                kernels::accumulate(s, row, channels_);
        }
        // Almost every value is below all the floors of its channel; only the rest reach the lists.
        Occurrence occ = pos.occ;
        const size_t ngram = static_cast<size_t>(cfg_.ngram);
        // (A hit moves only its own channel's floor, so the row's candidates can be collected up front.)
        candidates_.resize(channels_);
        const size_t n_candidates = kernels::collect_at_least(row, floor_.data(), channels_, candidates_.data());
        for (size_t h = 0; h < n_candidates; ++h) {
            const size_t c = candidates_[h];
            occ.value = row[c];
            bool changed = false;
            if (occ.value >= hits_.floor(c)) {
                const int64_t h = hits_.take(c, occ);
                if (h >= 0) {
                    Hit& hit = hits_.item(static_cast<size_t>(h));
                    hit.token = pos.token;
                    hit.pending = i;
                    changed = true;
                }
            }
            for (int n = 0; n < pos.n_keys; ++n) {
                const size_t idx = c * ngram + static_cast<size_t>(n);
                if (occ.value >= ngmax_.floor(idx)) changed |= offer_ngram(idx, occ, pos.keys[n], pos.hashes[n]);
            }
            if (changed) update_floor(c);
        }
    }

    /// Offer an occurrence of n-gram `key` to list idx (distinct n-grams, each with its best occurrence).
    /// Returns true if the list changed.
    bool offer_ngram(size_t idx, const Occurrence& occ, const NgramKey& key, uint64_t hash) {
        for (size_t j = ngmax_.find_tag(idx, hash, 0); j < ngmax_.size(idx); j = ngmax_.find_tag(idx, hash, j + 1)) {
            const NgramHit& e = ngmax_.item(idx * cfg_.k + j);
            if (!(e.key == key)) continue;
            if (!better(occ, e.occ)) return false;
            ngmax_.improve(idx, j, occ);
            return true;
        }
        const int64_t i = ngmax_.take(idx, occ, hash);
        if (i < 0) return false;
        ngmax_.item(static_cast<size_t>(i)).key = key;
        return true;
    }

    /// The scan's floor of channel c: the lowest of its hit and n-gram floors.
    void update_floor(size_t c) {
        float f = hits_.floor(c);
        for (int n = 0; n < cfg_.ngram; ++n)
            f = std::min(f, ngmax_.floor(c * static_cast<size_t>(cfg_.ngram) + static_cast<size_t>(n)));
        floor_[c] = f;
    }

    Config cfg_;
    size_t channels_ = 0;
    TopKLists<Hit> hits_;           // [channels] lists of k
    std::vector<int64_t> context_;  // [channels * k, window], by the hits' flat index
    TopKLists<NgramHit> ngmax_;     // [channels * ngram] lists of k distinct n-grams
    std::vector<float> floor_;      // per channel: the lowest of its hit and n-gram floors
    std::vector<double> sums_;      // [max_ngrams, channels]
    std::vector<uint32_t> candidates_;  // scratch: channels of a row that reach their floor
};

struct Group {
    std::string name;
    std::string hook;
    std::vector<int64_t> neurons;
};

class TopkAnalyzer : public nscope::Analyzer {
public:
    void configure(const nscope::Params& params) override {
        nscope::common::ParamReader p("topk", params,
                                      {"hooks", "k", "context", "ngram", "min_count", "max_ngrams", "groups"});
        filter_ = nscope::common::HookFilter(p.strings("hooks"));
        cfg_.k = static_cast<size_t>(p.integer("k", 10, 1, 10000));
        cfg_.context = static_cast<int>(p.integer("context", 5, 0, 256));
        cfg_.ngram = static_cast<int>(p.integer("ngram", 2, 0, kMaxN));
        cfg_.min_count = static_cast<uint64_t>(p.integer("min_count", 2, 1));
        cfg_.max_ngrams = static_cast<size_t>(p.integer("max_ngrams", 1024, 4 * kMaxN, 100000000));
        groups_.clear();
        if (p.has("groups")) {
            const auto& g = p.raw("groups");
            const std::string form = "must map group names to [hook, [neuron indices]], e.g. "
                                     "{animals: [blocks.3.mlp.hook_post, [12, 40]]}";
            if (!g.is_object()) p.fail("groups", form + ", got " + nscope::common::describe(g));
            for (const auto& [name, spec] : g.items()) {
                if (!spec.is_array() || spec.size() != 2 || !spec[0].is_string())
                    p.fail("groups", form + "; group '" + name + "' is " + nscope::common::describe(spec));
                auto idx = p.as_integers("groups", spec[1]);
                if (idx.empty()) p.fail("groups", "group '" + name + "' has no neurons");
                groups_.push_back({name, spec[0].get<std::string>(), std::move(idx)});
            }
        }
    }

    std::vector<std::string> required_hooks() const override {
        std::vector<std::string> out;
        for (const auto& g : groups_)
            if (std::find(out.begin(), out.end(), g.hook) == out.end()) out.push_back(g.hook);
        return out;
    }

    void begin(const nscope::RunContext& ctx) override {
        token_text_ = ctx.token_text;
        prompts_ = ctx.prompts;
        parallel_for_ = ctx.parallel_for;
        table_.init(cfg_.ngram > 0 ? cfg_.max_ngrams : 0);
        if (!groups_.empty()) group_track_.init(groups_.size(), cfg_);
    }

    void consume(const nscope::Batch& batch) override {
        // The tracks of this batch: selected hooks, and the hooks the groups read from.
        struct Active {
            Track* track;
            const nscope::ActivationView* view;
            nscope::common::TokenLayout lay;
        };
        std::vector<Active> active;
        for (const auto& act : batch.activations) {
            nscope::common::TokenLayout lay;
            if (!filter_.accept(act.hook, act.view, batch, lay)) continue;
            active.push_back({&track(act.hook, static_cast<size_t>(lay.neurons)), &act.view, lay});
        }
        std::vector<std::pair<const nscope::ActivationView*, nscope::common::TokenLayout>> group_src;
        for (const auto& g : groups_) {
            const auto* view = batch.find(g.hook);
            nscope::common::TokenLayout lay;
            std::string why;
            if (!view || !nscope::common::token_layout(g.hook, *view, batch, lay, why)) {
                filter_.note_skip("group:" + g.name, view ? why : "hook '" + g.hook + "' was not captured");
                group_src.clear();
                break;
            }
            for (int64_t i : g.neurons)
                if (i < 0 || i >= lay.neurons)
                    throw nscope::InputError("topk: group '" + g.name + "' names neuron " + std::to_string(i) +
                                             " but '" + g.hook + "' has " + std::to_string(lay.neurons) +
                                             " neurons (0.." + std::to_string(lay.neurons - 1) + ")");
            group_src.emplace_back(view, lay);
        }
        // Phase 1, in corpus order: the n-gram table bookkeeping that every track shares.
        std::vector<Track*> idle;  // tracks with no data in this batch
        for (auto& [hook, tr] : tracks_)
            if (std::none_of(active.begin(), active.end(), [&](const Active& a) { return a.track == &tr; }))
                idle.push_back(&tr);
        if (!groups_.empty() && group_src.empty()) idle.push_back(&group_track_);
        size_t n_valid = 0;
        for (size_t r = 0; r < batch.rows; ++r)
            for (size_t p = 0; p < batch.positions; ++p) n_valid += batch.valid(r, p);
        positions_.clear();
        contexts_.assign(n_valid * cfg_.window(), -1);
        std::vector<int64_t> seq;
        std::vector<size_t> valid;
        for (size_t r = 0; r < batch.rows; ++r) {
            valid.clear();
            seq.clear();
            for (size_t p = 0; p < batch.positions; ++p)
                if (batch.valid(r, p)) valid.push_back(p), seq.push_back(batch.input_ids[r * batch.positions + p]);
            const auto prompt = static_cast<uint32_t>(r < batch.prompts.size() && batch.prompts[r]
                                                          ? batch.prompts[r]->index
                                                          : rows_seen_ + r);
            for (size_t t = 0; t < valid.size(); ++t) {
                Position pos;
                pos.occ.prompt = prompt;
                pos.occ.position = static_cast<uint32_t>(t);
                pos.token = seq[t];
                pos.row = r;
                pos.pos = valid[t];
                int64_t* context = &contexts_[positions_.size() * cfg_.window()];
                for (int i = -cfg_.context; i <= cfg_.context; ++i) {
                    const int64_t q = static_cast<int64_t>(t) + i;
                    if (q >= 0 && q < static_cast<int64_t>(seq.size()))
                        context[static_cast<size_t>(i + cfg_.context)] = seq[static_cast<size_t>(q)];
                }
                pos.context = context;
                pos.n_keys = static_cast<int>(std::min<size_t>(static_cast<size_t>(cfg_.ngram), t + 1));
                if (pos.n_keys > 0) ++tick_;
                for (int n = 0; n < pos.n_keys; ++n) {
                    NgramKey& key = pos.keys[n];
                    key.n = static_cast<uint8_t>(n + 1);
                    for (int i = 0; i <= n; ++i) key.ids[static_cast<size_t>(i)] = seq[t - static_cast<size_t>(n) + static_cast<size_t>(i)];
                    pos.hashes[n] = NgramKeyHash{}(key);
                    pos.slots[n] = table_.acquire(key, tick_, 1, pos.fresh[n]);
                }
                // Tracks that do not see this batch still own stale sums in slots made fresh here.
                for (int n = 0; n < pos.n_keys; ++n)
                    if (pos.fresh[n] && pos.slots[n] >= 0)
                        for (Track* tr : idle) tr->clear_slot(pos.slots[n]);
                positions_.push_back(pos);
                ++tokens_;
            }
        }
        // Phase 2: each track over the whole batch, one task per track (tracks share nothing but the
        // read-only positions).
        rows_.resize(active.size() + 1);
        nscope::run_tasks(parallel_for_, active.size(), [&](size_t t) {
            auto& rows = rows_[t];
            rows.resize(positions_.size());
            for (size_t i = 0; i < positions_.size(); ++i)
                rows[i] = active[t].lay.at(*active[t].view, positions_[i].row, positions_[i].pos);
            active[t].track->add_batch(positions_, rows);
        });
        if (!group_src.empty()) {
            auto& rows = rows_.back();
            rows.resize(positions_.size());
            const size_t G = groups_.size();
            group_values_.resize(positions_.size() * G);
            for (size_t i = 0; i < positions_.size(); ++i) {
                for (size_t g = 0; g < G; ++g) {
                    const float* row = group_src[g].second.at(*group_src[g].first, positions_[i].row, positions_[i].pos);
                    double sum = 0;
                    for (int64_t j : groups_[g].neurons) sum += row[j];
                    group_values_[i * G + g] = static_cast<float>(sum / static_cast<double>(groups_[g].neurons.size()));
                }
                rows[i] = &group_values_[i * G];
            }
            group_track_.add_batch(positions_, rows);
        }
        rows_seen_ += batch.rows;
    }

    bool mergeable() const override { return true; }

    void merge(const nscope::Analyzer& other) override {
        const auto& o = static_cast<const TopkAnalyzer&>(other);
        for (const auto& [hook, tr] : o.tracks_) track(hook, tr.channels());
        // Map o's n-gram slots into this table (adding counts), then fold every track.
        const auto& oslots = o.table_.slots();
        std::vector<int> slot_map(oslots.size(), -1);
        std::vector<bool> fresh(oslots.size(), false);
        // An entry stays exact if both sides saw every occurrence: the other side kept it exactly (or never
        // evicted anything, so it never saw it), and so did this side (acquire marks new entries created
        // after an eviction as inexact).
        const uint64_t first_tick = tick_ + 1;
        const bool other_complete = o.table_.evictions == 0;
        for (size_t s = 0; s < oslots.size(); ++s) {
            if (!oslots[s].used) continue;
            bool f = false;
            slot_map[s] = table_.acquire(oslots[s].key, ++tick_, oslots[s].count, f);
            fresh[s] = f;
            if (slot_map[s] >= 0) {
                auto& mine = table_.slots()[static_cast<size_t>(slot_map[s])];
                mine.exact = mine.exact && oslots[s].exact;
            }
        }
        for (auto& slot : table_.slots())
            if (slot.used && slot.last < first_tick) slot.exact = slot.exact && other_complete;
        table_.evictions += o.table_.evictions;
        // The tracks share nothing but the read-only slot map: one task each.
        std::vector<std::pair<Track*, const Track*>> work;
        for (auto& [hook, tr] : tracks_) {
            auto it = o.tracks_.find(hook);
            work.emplace_back(&tr, it != o.tracks_.end() ? &it->second : nullptr);
        }
        nscope::run_tasks(parallel_for_, work.size(), [&](size_t t) {
            auto [tr, from] = work[t];
            if (from) {
                tr->merge(*from, slot_map, fresh);
            } else {
                for (size_t s = 0; s < slot_map.size(); ++s)
                    if (fresh[s] && slot_map[s] >= 0) tr->clear_slot(slot_map[s]);
            }
        });
        if (!groups_.empty()) group_track_.merge(o.group_track_, slot_map, fresh);
        tokens_ += o.tokens_;
        filter_.merge(o.filter_);
    }

    /// 2: compact hit lists (16 bytes a hit; no contexts with context 0, no n-gram lists without n-grams).
    /// Version 1 states are refused (by the host, naming both versions).
    uint32_t state_version() const override { return 2; }

    void save_state(nscope::StateWriter& out) const override {
        table_.save(out);
        out.u64(tracks_.size());
        for (const auto& [hook, tr] : tracks_) {
            out.str(hook);
            out.u64(tr.channels());
            tr.save(out);
        }
        if (!groups_.empty()) group_track_.save(out);
        out.u64(tick_);
        out.u64(tokens_);
        out.u64(rows_seen_);
        filter_.save(out);
    }

    void load_state(nscope::StateReader& in) override {
        table_.load(in);
        tracks_.clear();
        const uint64_t n = in.count(3 * sizeof(uint64_t), "top-k tracks");
        for (uint64_t i = 0; i < n; ++i) {
            const std::string hook = in.str();
            const uint64_t channels = in.u64();
            // A track saves a hit count per channel: a width the blob cannot hold is damage, not a huge allocation.
            if (channels > in.left() / sizeof(uint32_t))
                in.fail("track '" + hook + "' claims " + std::to_string(channels) + " neurons");
            track(hook, channels).load(in);
        }
        if (!groups_.empty()) group_track_.load(in);
        tick_ = in.u64();
        tokens_ = in.u64();
        rows_seen_ = in.u64();
        filter_.load(in);
    }

    nscope::Result finish() override {
        nscope::Result res;
        nscope::Table acts, ngmax, ngmean;
        acts.columns = {"source", "layer", "neuron", "rank", "value", "prompt", "position", "token_id", "token",
                        "before", "after"};
        ngmax.columns = {"source", "layer", "neuron", "n", "rank", "ngram", "ids", "max", "prompt", "position"};
        ngmean.columns = {"source", "layer", "neuron", "n", "rank", "ngram", "ids", "mean", "count", "exact"};

        const std::vector<std::string> names = nscope::common::hooks_in_order(tracks_);
        for (const auto& hook : names) {
            const int layer = nscope::common::hook_layer(hook);
            emit(tracks_.at(hook), hook, res, acts, ngmax, ngmean,
                 [&](size_t c) { return std::make_tuple(hook, layer, static_cast<int64_t>(c)); });
        }
        nlohmann::json groups = nlohmann::json::array();
        if (!groups_.empty()) {
            emit(group_track_, "groups", res, acts, ngmax, ngmean, [&](size_t c) {
                return std::make_tuple("group:" + groups_[c].name, nscope::common::hook_layer(groups_[c].hook),
                                       int64_t{-1});
            });
            for (const auto& g : groups_) groups.push_back({{"name", g.name}, {"hook", g.hook}, {"neurons", g.neurons}});
        }
        res.set_table("top_activations", std::move(acts));
        if (cfg_.ngram > 0) {
            res.set_table("top_ngrams_max", std::move(ngmax));
            res.set_table("top_ngrams_mean", std::move(ngmean));
        }
        bool exact = true;
        for (const auto& s : table_.slots()) exact = exact && (!s.used || s.exact);
        res.data["groups"] = groups;
        res.data["summary"] = {
            {"k", cfg_.k}, {"context", cfg_.context}, {"ngram", cfg_.ngram}, {"min_count", cfg_.min_count},
            {"tokens", tokens_}, {"hooks", names}, {"groups", groups_.size()},
            {"ngram_table", {{"capacity", table_.capacity()}, {"used", table_.used()},
                             {"evictions", table_.evictions}, {"exact", exact}}},
            {"skipped", filter_.skipped_json()}};
        return res;
    }

private:
    Track& track(const std::string& hook, size_t channels) {
        auto it = tracks_.find(hook);
        if (it == tracks_.end()) {
            it = tracks_.emplace(hook, Track{}).first;
            it->second.init(channels, cfg_);
            // Slots already in the table hold n-grams this track never saw: sums start at zero (init did that).
        } else if (it->second.channels() != channels) {
            throw nscope::RuntimeError("topk: hook '" + hook + "' changed width from " +
                                       std::to_string(it->second.channels()) + " to " + std::to_string(channels));
        }
        return it->second;
    }

    std::string text(int64_t id, uint32_t prompt, int64_t position) const {
        if (id < 0) return "";
        if (token_text_) return token_text_(id);
        if (prompt < prompts_.size() && prompts_[prompt] && position >= 0 &&
            static_cast<size_t>(position) < prompts_[prompt]->tokens.size())
            return prompts_[prompt]->tokens[static_cast<size_t>(position)];
        std::string s = std::to_string(id);  // (built in place: GCC 12 warns falsely on "[" + string)
        s.insert(s.begin(), '[');
        s.push_back(']');
        return s;
    }

    static std::string ids_string(const NgramKey& k) {
        std::string s;
        for (int i = 0; i < k.n; ++i) {
            if (i) s.push_back(' ');
            s += std::to_string(k.ids[static_cast<size_t>(i)]);
        }
        return s;
    }

    template <typename Label>
    void emit(const Track& tr, const std::string& array_prefix, nscope::Result& res, nscope::Table& acts,
              nscope::Table& ngmax, nscope::Table& ngmean, Label label) const {
        const size_t C = tr.channels(), K = cfg_.k, W = cfg_.window();
        std::vector<float> values(C * K, std::numeric_limits<float>::quiet_NaN());
        std::vector<int64_t> prompts(C * K, -1), positions(C * K, -1), tokens(C * K, -1);
        for (size_t c = 0; c < C; ++c) {
            const auto [source, layer, neuron] = label(c);
            const auto ranked = tr.ranked_hits(c);
            for (size_t i = 0; i < ranked.size(); ++i) {
                const Hit& h = tr.hit(ranked[i]);
                values[c * K + i] = h.occ.value;
                prompts[c * K + i] = h.occ.prompt;
                positions[c * K + i] = h.occ.position;
                tokens[c * K + i] = h.token;
                const int64_t* ctx = tr.context(ranked[i]);
                std::string before, after;
                for (size_t w = 0; w < W; ++w) {
                    const int64_t p = static_cast<int64_t>(h.occ.position) + static_cast<int64_t>(w) - cfg_.context;
                    if (static_cast<int>(w) < cfg_.context) before += text(ctx[w], h.occ.prompt, p);
                    if (static_cast<int>(w) > cfg_.context) after += text(ctx[w], h.occ.prompt, p);
                }
                acts.add_row({source, layer, neuron, i + 1, h.occ.value, h.occ.prompt, h.occ.position, h.token,
                              text(h.token, h.occ.prompt, h.occ.position), before, after});
            }
            for (int n = 0; n < cfg_.ngram; ++n) {
                const auto best = tr.ngram_max(c, n);
                for (size_t i = 0; i < best.size(); ++i) {
                    const auto& h = best[i];
                    std::string s;
                    for (int j = 0; j <= n; ++j)
                        s += text(h.key.ids[static_cast<size_t>(j)], h.occ.prompt,
                                  static_cast<int64_t>(h.occ.position) - n + j);
                    ngmax.add_row({source, layer, neuron, n + 1, i + 1, s, ids_string(h.key), h.occ.value,
                                   h.occ.prompt, h.occ.position});
                }
                // Highest mean: n-grams of this length seen at least min_count times.
                std::vector<std::pair<double, int>> means;
                const auto& slots = table_.slots();
                for (size_t s = 0; s < slots.size(); ++s)
                    if (slots[s].used && slots[s].key.n == n + 1 && slots[s].count >= cfg_.min_count)
                        means.emplace_back(tr.sum(static_cast<int>(s), c) / static_cast<double>(slots[s].count),
                                           static_cast<int>(s));
                const size_t take = std::min(K, means.size());
                std::partial_sort(means.begin(), means.begin() + static_cast<int64_t>(take), means.end(),
                                  [&](const auto& a, const auto& b) {
                                      if (a.first != b.first) return a.first > b.first;
                                      return slots[static_cast<size_t>(a.second)].key.ids <
                                             slots[static_cast<size_t>(b.second)].key.ids;
                                  });
                for (size_t i = 0; i < take; ++i) {
                    const auto& slot = slots[static_cast<size_t>(means[i].second)];
                    std::string s;
                    for (int j = 0; j < slot.key.n; ++j) s += text(slot.key.ids[static_cast<size_t>(j)], UINT32_MAX, -1);
                    ngmean.add_row({source, layer, neuron, n + 1, i + 1, s, ids_string(slot.key), means[i].first,
                                    slot.count, slot.exact});
                }
            }
        }
        const std::vector<int64_t> shape{static_cast<int64_t>(C), static_cast<int64_t>(K)};
        res.set_array(array_prefix + ".top_values", nscope::NdArray::floats(shape, std::move(values)));
        res.set_array(array_prefix + ".top_prompts", nscope::NdArray::ints(shape, std::move(prompts)));
        res.set_array(array_prefix + ".top_positions", nscope::NdArray::ints(shape, std::move(positions)));
        res.set_array(array_prefix + ".top_tokens", nscope::NdArray::ints(shape, std::move(tokens)));
    }

    Config cfg_;
    nscope::common::HookFilter filter_;
    std::vector<Group> groups_;
    std::function<std::string(int64_t)> token_text_;
    std::vector<const nscope::PromptInfo*> prompts_;
    nscope::ParallelFor parallel_for_;
    NgramTable table_;
    std::map<std::string, Track> tracks_;
    Track group_track_;
    uint64_t tick_ = 0, tokens_ = 0;
    size_t rows_seen_ = 0;
    // Per-batch scratch, kept to reuse its memory.
    std::vector<Position> positions_;
    std::vector<int64_t> contexts_;
    std::vector<std::vector<const float*>> rows_;  // per track
    std::vector<float> group_values_;
};

}  // namespace

NSCOPE_ANALYZER_PLUGIN(TopkAnalyzer, "topk", "1.0.0",
                       "top-k activating tokens, contexts and n-grams per neuron and neuron group (mergeable)")
