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

/// Keeps the k best items of type T (T has an `Occurrence occ` member). push() returns the index that the
/// new item took (so callers can keep side data per slot) or -1 when it was not good enough; `evicted` is
/// set to the item it replaced.
template <typename T>
class TopK {
public:
    explicit TopK(size_t k = 0) : k_(k) {}
    void reset(size_t k) {
        k_ = k;
        items_.clear();
    }
    /// Values below this can never enter (the worst kept value when full, -inf otherwise).
    float floor() const { return items_.size() < k_ ? -std::numeric_limits<float>::infinity() : items_.front().occ.value; }
    bool would_take(const Occurrence& o) const {
        if (k_ == 0) return false;
        return items_.size() < k_ || better(o, items_.front().occ);
    }
    /// Insert `item` if it is among the k best. Returns true if inserted; `out_evicted` receives the dropped item.
    bool push(const T& item, T* out_evicted = nullptr, bool* did_evict = nullptr) {
        if (did_evict) *did_evict = false;
        if (!would_take(item.occ)) return false;
        if (items_.size() == k_) {
            std::pop_heap(items_.begin(), items_.end(), cmp);
            if (out_evicted) *out_evicted = items_.back();
            if (did_evict) *did_evict = true;
            items_.back() = item;
        } else {
            items_.push_back(item);
        }
        std::push_heap(items_.begin(), items_.end(), cmp);
        return true;
    }
    /// The kept items, best first.
    std::vector<T> sorted() const {
        std::vector<T> out = items_;
        std::sort(out.begin(), out.end(), cmp);
        return out;
    }
    size_t size() const { return items_.size(); }
    const std::vector<T>& items() const { return items_; }

private:
    // Heap with the worst item on top: "a before b" means a is better.
    static bool cmp(const T& a, const T& b) { return better(a.occ, b.occ); }
    size_t k_ = 0;
    std::vector<T> items_;
};

}  // namespace nscope::common
