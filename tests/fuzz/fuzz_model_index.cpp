// model.safetensors.index.json (core/model/model_files.cpp): arbitrary bytes as the index of a model folder
// that holds a config.json and one valid shard, read as `nscope run` resolves a local model, then the
// listed shards are opened.
#include "core/model/model_files.h"
#include "core/model/safetensors.h"
#include "nscope/error.h"
#include "tests/fuzz/fuzz_support.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const fs::path dir = [] {
        const fs::path d = nscope::fuzz::scratch_dir() / "model";
        fs::create_directories(d);
        nscope::fuzz::write_bytes(d / "config.json", R"({"model_type": "gpt2"})");
        nscope::write_safetensors(d / "model-00001-of-00001.safetensors", {{"wte.weight", at::ones({2, 3})}});
        return d;
    }();
    nscope::fuzz::write_bytes(dir / "model.safetensors.index.json", nscope::fuzz::as_view(data, size));
    try {
        const nscope::ModelFiles m = nscope::read_model_dir(dir, "fuzz-model");
        for (const auto& f : m.weight_files)
            if (f.parent_path() != dir) std::abort();  // a shard outside the model folder
        const nscope::SafetensorsWeights w(m.weight_files);
        (void)w.names();
    } catch (const nscope::InputError&) {
    }
    return 0;
}
