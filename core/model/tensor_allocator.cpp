#include "core/model/tensor_allocator.h"

#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <deque>
#include <utility>
#include <mutex>
#include <new>

#include <sys/mman.h>

namespace nscope {
namespace {

constexpr size_t kAlignment = 64;          // what LibTorch's own CPU allocator guarantees
constexpr size_t kHeader = kAlignment;     // block size stored in front of the data
constexpr size_t kCached = 1u << 20;       // blocks from 1 MiB up are kept for reuse
constexpr size_t kCacheLimit = 512u << 20; // bytes kept at most; the oldest blocks go first

class CachingCpuAllocator final : public c10::Allocator {
public:
    c10::DataPtr allocate(size_t n) const override {
        if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
        void* block = n >= kCached ? take(n) : nullptr;
        if (!block) block = fresh(n);
        void* data = static_cast<char*>(block) + kHeader;
        return {data, data, &release, c10::Device(c10::DeviceType::CPU)};
    }

    c10::DeleterFnPtr raw_deleter() const override { return &release; }

    static CachingCpuAllocator& self();

    void release_all() const {
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto& [n, block] : free_) std::free(block);
        free_.clear();
        cached_ = 0;
    }

private:
    static void* fresh(size_t n) {
        void* block = nullptr;
        if (posix_memalign(&block, kAlignment, n + kHeader) != 0) throw std::bad_alloc();
        *static_cast<size_t*>(block) = n;
#ifdef MADV_HUGEPAGE
        if (n >= kCached) madvise(block, n + kHeader, MADV_HUGEPAGE);  // advisory; fewer, larger faults
#endif
        return block;
    }

    /// The smallest cached block of at least n bytes and at most 1.25 n (odd sizes must not pin big blocks).
    void* take(size_t n) const {
        std::lock_guard<std::mutex> lock(mutex_);
        auto best = free_.end();
        for (auto it = free_.begin(); it != free_.end(); ++it)
            if (it->first >= n && it->first <= n + n / 4 && (best == free_.end() || it->first < best->first)) best = it;
        if (best == free_.end()) return nullptr;
        void* block = best->second;
        cached_ -= best->first;
        free_.erase(best);
        return block;
    }

    static void release(void* data) {
        if (!data) return;
        void* block = static_cast<char*>(data) - kHeader;
        const size_t n = *static_cast<size_t*>(block);
        if (n < kCached || n > kCacheLimit) return std::free(block);
        CachingCpuAllocator& a = self();
        std::lock_guard<std::mutex> lock(a.mutex_);
        a.free_.emplace_back(n, block);
        a.cached_ += n;
        while (a.cached_ > kCacheLimit) {  // shapes change (batches of other lengths): drop the oldest
            a.cached_ -= a.free_.front().first;
            std::free(a.free_.front().second);
            a.free_.pop_front();
        }
    }

    mutable std::mutex mutex_;
    mutable std::deque<std::pair<size_t, void*>> free_;  // in release order
    mutable size_t cached_ = 0;
};

CachingCpuAllocator& CachingCpuAllocator::self() {
    static CachingCpuAllocator* instance = new CachingCpuAllocator();  // never destroyed: tensors outlive main
    return *instance;
}

}  // namespace

void release_cached_tensors() { CachingCpuAllocator::self().release_all(); }

void install_tensor_allocator() {
    static std::once_flag once;
    std::call_once(once, [] { c10::SetCPUAllocator(&CachingCpuAllocator::self(), /*priority=*/1); });
}

}  // namespace nscope
