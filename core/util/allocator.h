// Process-wide heap policy for tensor workloads.
#pragma once

namespace nscope {

/// Keep freed memory in the heap for the next allocation instead of returning it to the kernel.
/// A forward allocates and frees the same multi-megabyte activations every batch; with glibc's defaults
/// (dynamic mmap threshold, heap trimming) each batch page-faults them back in: 2.2M page faults and a
/// quarter of a bfloat16 GPT-2-small forward on the project machine. Call once at startup.
void tune_allocator();

}  // namespace nscope
