// Finding a model on disk: a local folder or a HuggingFace hub id in the HF cache layout. No downloads.
//
//   resolve_model("models/tiny")   // folder with config.json + *.safetensors (+ tokenizer.json)
//   resolve_model("gpt2")          // $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub:
//   resolve_model("org/name@rev")  //   models--org--name/snapshots/<refs/main or rev>/
//
// Sharded checkpoints are listed by `model.safetensors.index.json` (its "weight_map"). When nothing is
// found, the InputError says every place that was looked at.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nscope {

struct ModelFiles {
    std::string name;                                  ///< what the user wrote ("gpt2", "models/tiny")
    std::filesystem::path dir;                         ///< the folder holding config.json
    nlohmann::json config;                             ///< parsed config.json
    std::vector<std::filesystem::path> weight_files;   ///< *.safetensors, shard order
    std::filesystem::path tokenizer_json;              ///< empty if none
};

/// Resolve a folder or hub id; throws InputError (exit 2) naming every place it looked.
ModelFiles resolve_model(const std::string& path_or_id);

/// The HF hub cache directories searched, in order (existing or not).
std::vector<std::filesystem::path> hf_cache_dirs();

/// Read a model folder (config.json, weights, tokenizer.json); throws InputError.
ModelFiles read_model_dir(const std::filesystem::path& dir, const std::string& name);

}  // namespace nscope
