// safetensors header + data section (core/model/safetensors.cpp): arbitrary bytes as a .safetensors file,
// opened the way a model load opens it (SafetensorsWeights: mmap, header validation, name index), then
// every tensor is materialised and its first and last bytes read (no forward pass).
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "core/model/safetensors.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto file = nscope::fuzz::scratch_dir() / "fuzz.safetensors";
    nscope::fuzz::write_bytes(file, nscope::fuzz::as_view(data, size));
    try {
        const nscope::SafetensorsWeights w({file});
        uint64_t bytes = 0;
        for (const auto& name : w.names()) {
            const at::Tensor t = w.get(name);
            const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
            if (n == 0) continue;
            bytes += n;
            unsigned char first = 0, last = 0;  // out-of-bounds views fault or trip ASan here
            std::memcpy(&first, t.data_ptr(), 1);
            std::memcpy(&last, static_cast<const char*>(t.data_ptr()) + n - 1, 1);
            (void)(first + last);
        }
        if (bytes != w.data_bytes()) std::abort();  // the header's byte spans must match the tensors
    } catch (const nscope::InputError&) {
    }
    return 0;
}
