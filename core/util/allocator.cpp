#include "core/util/allocator.h"

#include <cstdlib>  // defines __GLIBC__ on glibc systems

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace nscope {

void tune_allocator() {
#if defined(__GLIBC__)
    // Fixing the thresholds also switches off glibc's dynamic adjustment of both. Blocks above 32 MiB
    // (glibc's ceiling for this setting) are still mapped per allocation.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace nscope
