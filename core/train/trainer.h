// Training from scratch (`nscope train`, GPT-2 architecture) and fine-tuning (`nscope finetune`, any causal
// model with a trainable adapter), with LibTorch autograd over the same adapter code that runs analyses.
//
// AdamW (decoupled weight decay on matrices only), linear warmup then cosine decay to 10% of the peak
// learning rate, global gradient-norm clipping, no dropout. Batches are windows of the tokenized corpus
// drawn from a generator seeded by (seed, step), so a run is deterministic for a seed and thread count and
// a resumed run continues exactly where the checkpoint left off. Checkpoints are HF folders
// (config.json + model.safetensors + tokenizer.json) plus optimizer.safetensors and trainer_state.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace nscope {

class PluginRegistry;

struct TrainOptions {
    std::vector<std::filesystem::path> data;  ///< UTF-8 text files
    std::filesystem::path out;                ///< output folder (final model + checkpoint-<step>/)
    std::filesystem::path resume;             ///< a checkpoint folder to continue from (optional)
    // Model (train from scratch only).
    int64_t layers = 4, d_model = 256, heads = 4, context = 128, vocab = 4096;
    std::filesystem::path tokenizer;          ///< existing tokenizer.json (else one is trained on the data)
    // Optimisation.
    int64_t steps = 1000, batch_size = 16, warmup = 100, checkpoint_every = 0 /* 0: only at the end */;
    double lr = 3e-3, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
    uint64_t seed = 0;
    std::string save_dtype = "float32";       ///< dtype of saved weights: float32 | bfloat16 | float16
    double max_seconds = 0;                   ///< stop (and checkpoint) after this long; 0 = no limit
};

struct TrainReport {
    int64_t steps_done = 0;
    double first_loss = 0, last_loss = 0;     ///< mean loss over the first / last 10 steps
    double tokens_per_s = 0;
    std::filesystem::path model_dir;
};

/// Train a GPT-2-architecture model from scratch on `options.data`.
TrainReport train_from_scratch(const PluginRegistry& plugins, const TrainOptions& options);

/// Fine-tune the model at `model` (folder or hub id) on `options.data` with its own tokenizer.
TrainReport finetune(const PluginRegistry& plugins, const std::string& model, const TrainOptions& options);

/// The loss of `model` on windows of `data` (mean next-token cross-entropy), for tests and reports.
double evaluate_loss(const PluginRegistry& plugins, const std::string& model, const std::filesystem::path& data,
                     int64_t windows, int64_t context, uint64_t seed);

struct LoadedModel;
/// Save `model` as an HF folder (config.json + model.safetensors [+ tokenizer.json copied from `tokenizer_json`]).
void save_model(const std::filesystem::path& dir, LoadedModel& model, const std::filesystem::path& tokenizer_json,
                const std::string& dtype = "float32");

class Tokenizer;
/// The token ids of the corpus files, line by line (a `.jsonl` file: each line's "text"), `eos` after each file.
at::Tensor tokenize_corpus(const Tokenizer& tok, const std::vector<std::filesystem::path>& files, std::optional<int64_t> eos);

/// `batch` windows of context+1 tokens of `corpus` drawn from (seed, step) alone: (inputs, next tokens).
std::pair<at::Tensor, at::Tensor> corpus_windows(const at::Tensor& corpus, int64_t batch, int64_t context, uint64_t seed,
                                                 int64_t step);

/// Read a corpus file as UTF-8 text (Debian's KJV dump with "Ge1:1 " verse prefixes is read as is).
std::string read_corpus(const std::filesystem::path& file);

}  // namespace nscope
