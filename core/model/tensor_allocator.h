// CPU allocator for LibTorch tensors that keeps large freed blocks for reuse.
#pragma once

namespace nscope {

/// Install the caching CPU allocator as LibTorch's CPU allocator. Every forward allocates the same large
/// tensors again (the unembedding's output alone is 100-200 MB for GPT-2-small at 8 x 128 tokens); glibc
/// maps each block above 32 MiB afresh, and the kernel then faults in and zeroes every page. Call once at
/// startup, before any tensor exists.
void install_tensor_allocator();

/// Free the blocks the allocator keeps (call when a phase of repeated forwards ends, e.g. before a run
/// writes its results).
void release_cached_tensors();

}  // namespace nscope
