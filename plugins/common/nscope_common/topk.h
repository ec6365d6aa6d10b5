// Bounded "best k" selection for analyzers.
//
// Order used everywhere: a higher value is better; equal values are broken by the earlier occurrence
// (lower prompt index, then lower position), so the selected set is unique and a merge of shards selects
// exactly what a single pass would.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "nscope/state.h"

namespace nscope::common {

/// One token occurrence of a value.
struct Occurrence {
    float value = 0.0f;
    uint32_t prompt = 0;
    uint32_t position = 0;
};

/// True if `a` ranks before `b` (see the order above).
inline bool better(const Occurrence& a, const Occurrence& b) {
    if (a.value != b.value) return a.value > b.value;
    if (a.prompt != b.prompt) return a.prompt < b.prompt;
    return a.position < b.position;
}

/// The k best items for each of many lists (one per neuron), stored flat. T has an `Occurrence occ` member.
/// The values live in their own array and each list keeps its floor (worst kept value, -inf until full)
/// and the index of its worst entry, so the common test "can v enter?" reads one float, and an entry
/// replaces the worst in place and rescans k values: no heap, no allocation. An entry may carry a 64-bit
/// tag (a key's hash, say), kept in a compact array so that finding an entry by key reads little.
template <typename T>
class TopKLists {
public:
    void init(size_t lists, size_t k) {
        k_ = k;
        items_.assign(lists * k, T{});
        values_.assign(lists * k, 0.0f);
        tags_.assign(lists * k, 0);
        size_.assign(lists, 0);
        worst_.assign(lists, 0);
        floor_.assign(lists, k > 0 ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity());
    }
    size_t k() const { return k_; }
    size_t lists() const { return size_.size(); }
    /// Values below this can never enter list l.
    float floor(size_t l) const { return floor_[l]; }
    size_t size(size_t l) const { return size_[l]; }

    /// The flat index (l * k + j) of the entry that `occ` takes in list l (its occ set, the rest of the
    /// item for the caller to fill), or -1 when it is not among the k best.
    int64_t take(size_t l, const Occurrence& occ, uint64_t tag = 0) {
        size_t j = size_[l];
        if (j < k_) {
            ++size_[l];
        } else {
            // The floor decides unless it is a tie (the worst item is then read, for its position).
            if (k_ == 0 || !(occ.value >= floor_[l])) return -1;
            if (occ.value == floor_[l] && !better(occ, items_[l * k_ + worst_[l]].occ)) return -1;
            j = worst_[l];
        }
        const size_t i = l * k_ + j;
        items_[i].occ = occ;
        values_[i] = occ.value;
        tags_[i] = tag;
        if (size_[l] == k_) refloor(l);
        return static_cast<int64_t>(i);
    }

    /// Entry j of list l now has the better occurrence `occ`.
    void improve(size_t l, size_t j, const Occurrence& occ) {
        items_[l * k_ + j].occ = occ;
        values_[l * k_ + j] = occ.value;
        if (size_[l] == k_) refloor(l);
    }

    /// The first j >= from in list l whose tag is `tag`, or size(l).
    size_t find_tag(size_t l, uint64_t tag, size_t from) const {
        const uint64_t* t = &tags_[l * k_];
        size_t j = from;
        while (j < size_[l] && t[j] != tag) ++j;
        return j;
    }
    uint64_t tag(size_t i) const { return tags_[i]; }

    /// Item by flat index.
    T& item(size_t i) { return items_[i]; }
    const T& item(size_t i) const { return items_[i]; }

    /// The flat indices of list l, best first.
    std::vector<size_t> ranked(size_t l) const {
        std::vector<size_t> out(size_[l]);
        for (size_t j = 0; j < out.size(); ++j) out[j] = l * k_ + j;
        std::sort(out.begin(), out.end(), [&](size_t a, size_t b) { return better(items_[a].occ, items_[b].occ); });
        return out;
    }

    /// Refill list l of a fresh init() with n <= k() entries in slot order: fill(j, item) sets entry j (its
    /// occ included); the values, the worst entry and the floor follow from them. For compact states that
    /// save only what the entries need (untagged lists).
    template <typename Fill>
    void restore(size_t l, size_t n, Fill&& fill) {
        for (size_t j = 0; j < n; ++j) {
            T& item = items_[l * k_ + j];
            fill(j, item);
            values_[l * k_ + j] = item.occ.value;
        }
        size_[l] = static_cast<uint32_t>(n);
        if (n == k_) refloor(l);
    }

    /// The lists as they are (T must be trivially copyable); load() into an instance init()-ed with the
    /// same number of lists and k.
    void save(StateWriter& out) const {
        out.array(items_);
        out.array(values_);
        out.array(tags_);
        out.array(size_);
        out.array(worst_);
        out.array(floor_);
    }
    void load(StateReader& in) {
        const size_t n = size_.size() * k_;
        items_ = in.array_of<T>(n, "top-k items");
        values_ = in.array_of<float>(n, "top-k values");
        tags_ = in.array_of<uint64_t>(n, "top-k tags");
        size_ = in.array_of<uint32_t>(size_.size(), "top-k sizes");
        worst_ = in.array_of<uint32_t>(size_.size(), "top-k worst entries");
        floor_ = in.array_of<float>(size_.size(), "top-k floors");
        for (size_t l = 0; l < size_.size(); ++l)
            if (size_[l] > k_ || (k_ && worst_[l] >= k_)) in.fail("a top-k list is longer than k");
    }

private:
    // The worst entry: the lowest value (a branch-free min over k floats), ties to the later occurrence.
    void refloor(size_t l) {
        const float* v = &values_[l * k_];
        float m = v[0];
        for (size_t j = 1; j < k_; ++j) m = v[j] < m ? v[j] : m;
        size_t w = k_;
        for (size_t j = 0; j < k_; ++j)
            if (v[j] == m && (w == k_ || better(items_[l * k_ + w].occ, items_[l * k_ + j].occ))) w = j;
        worst_[l] = static_cast<uint32_t>(w);
        floor_[l] = m;
    }

    size_t k_ = 0;
    std::vector<T> items_;        // [lists, k]
    std::vector<float> values_;   // [lists, k]: items_[i].occ.value
    std::vector<uint64_t> tags_;  // [lists, k]
    std::vector<uint32_t> size_, worst_;
    std::vector<float> floor_;
};

}  // namespace nscope::common
