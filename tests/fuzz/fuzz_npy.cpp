// .npy reader (core/util/npy.cpp): parse_npy on arbitrary bytes, then the conversions a recipe applies
// (ids_file -> int64, vector_file / mean_file -> float32).
#include "core/util/npy.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const nscope::NpyArray a = nscope::parse_npy(std::string(nscope::fuzz::as_view(data, size)), "fuzz.npy");
        (void)a.to_f32();
        (void)a.to_i64();
    } catch (const nscope::InputError&) {
    }
    return 0;
}
