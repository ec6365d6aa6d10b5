// Forward throughput of nscope on a GPT-2-small-shaped model (or a Pythia-160M-shaped GPT-NeoX, or a
// Gemma-shaped model at the same scale), with no hooks and with every mlp.hook_post captured. `make-model DIR`
// writes the random model in HF layout first.
//
//   nscope_bench_forward make-model /tmp/gpt2-small [--arch gpt2 | gpt_neox | gemma]
//   nscope_bench_forward run /tmp/gpt2-small --dtype float32 --shape 8x128 --hooks mlp_post --seconds 5
// prints one JSON line: {"impl":"nscope", "tokens_per_s": ..., ...}. bench/run.sh pairs it with the
// PyTorch baseline (bench/torch_baseline.py) and prints the ratio table.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/model/model_loader.h"
#include "core/model/safetensors.h"
#include "core/model/session.h"
#include "core/model/tensor_allocator.h"
#include "bench/bench_main.h"
#include "core/plugin/registry.h"
#include "core/util/allocator.h"
#include "core/util/log.h"
#include "core/util/memory.h"
#include "nscope/error.h"

using namespace nscope;
namespace fs = std::filesystem;

namespace {

nlohmann::json gpt2_small_config() {
    return {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", 50257},
            {"n_positions", 1024}, {"n_ctx", 1024}, {"n_embd", 768}, {"n_layer", 12}, {"n_head", 12},
            {"n_inner", nullptr}, {"activation_function", "gelu_new"}, {"layer_norm_epsilon", 1e-5},
            {"bos_token_id", 50256}, {"eos_token_id", 50256}, {"torch_dtype", "float32"}};
}

/// Pythia-160M's shape (GPT-NeoX, parallel residual, rotary on a quarter of each head, untied embed_out).
nlohmann::json pythia_160m_config() {
    return {{"architectures", {"GPTNeoXForCausalLM"}}, {"model_type", "gpt_neox"}, {"vocab_size", 50304},
            {"hidden_size", 768}, {"num_hidden_layers", 12}, {"num_attention_heads", 12},
            {"intermediate_size", 3072}, {"hidden_act", "gelu"}, {"rotary_pct", 0.25}, {"rotary_emb_base", 10000},
            {"max_position_embeddings", 2048}, {"layer_norm_eps", 1e-5}, {"use_parallel_residual", true},
            {"tie_word_embeddings", false}, {"torch_dtype", "float32"}};
}

/// Gemma 1's shape at GPT-2-small scale: multi-query attention with 256-dim heads, a GeGLU MLP 4x wide,
/// (1 + w) RMSNorm, a tied 32k vocabulary (Gemma-2B itself is 2.5B parameters).
nlohmann::json gemma_shaped_config() {
    return {{"architectures", {"GemmaForCausalLM"}}, {"model_type", "gemma"}, {"vocab_size", 32000},
            {"hidden_size", 768}, {"num_hidden_layers", 12}, {"num_attention_heads", 3}, {"num_key_value_heads", 1},
            {"head_dim", 256}, {"intermediate_size", 3072}, {"hidden_activation", "gelu_pytorch_tanh"},
            {"max_position_embeddings", 8192}, {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0},
            {"tie_word_embeddings", true}, {"torch_dtype", "float32"}};
}

int make_model(const PluginRegistry& reg, const fs::path& dir, const std::string& arch) {
    fs::create_directories(dir);
    if (arch != "gpt2" && arch != "gpt_neox" && arch != "gemma")
        throw InputError("--arch must be gpt2, gpt_neox or gemma, not '" + arch + "'");
    const auto config = arch == "gpt_neox" ? pythia_160m_config() : arch == "gemma" ? gemma_shaped_config()
                                                                                   : gpt2_small_config();
    LoadedModel m = init_random_model(reg, config, 1234, ModelOptions{});
    const WeightNaming naming = m.handle.factory->weight_naming();
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (auto& [name, t] : m.adapter->named_parameters())
        tensors.emplace_back(checkpoint_weight_name(naming, name), t.contiguous());
    write_safetensors(dir / "model.safetensors", tensors);
    std::ofstream(dir / "config.json") << config.dump(2) << "\n";
    std::cout << "wrote " << dir.string() << " (" << m.handle.info.n_params << " parameters)\n";
    return 0;
}

int run(const PluginRegistry& reg, const fs::path& dir, const std::string& dtype, const std::string& shape,
        const std::string& hooks, double seconds, bool logits, int64_t tokens, const std::string& profile, bool grad) {
    const auto x = shape.find('x');
    const int64_t b = std::stoll(shape.substr(0, x)), p = std::stoll(shape.substr(x + 1));
    const ModelOptions opts = parse_model_dtype(dtype);
    const uint64_t rss_before = current_rss_bytes();
    LoadedModel model = load_model(reg, dir.string(), opts);
    ModelSession session(model);
    ForwardRequest req;
    req.keep_logits = logits;
    if (hooks == "mlp_post")
        for (int64_t l = 0; l < model.handle.info.n_layers; ++l)
            req.capture.push_back("blocks." + std::to_string(l) + ".mlp.hook_post");
    if (grad) {  // d(mean next-token loss)/d(mlp.hook_post) of every layer: one forward with autograd + one backward
        if (hooks != "mlp_post") throw InputError("--grad needs --hooks mlp_post");
        req.metric = Metric{"loss", {}, {}, std::nullopt};
        req.gradients = req.capture;
    }
    at::manual_seed(0);
    const at::Tensor ids = at::randint(0, model.handle.info.vocab_size, {b, p}, at::kLong);
    std::vector<std::vector<int64_t>> rows(b);
    std::vector<size_t> idx(b);
    for (int64_t r = 0; r < b; ++r) {
        rows[r].assign(ids[r].data_ptr<int64_t>(), ids[r].data_ptr<int64_t>() + p);
        idx[r] = r;
    }
    using Clock = std::chrono::steady_clock;
    if (tokens > 0) {
        // A cold pass over `tokens` tokens, first batch included: what a recipe's forward pass does.
        const int64_t batches = (tokens + b * p - 1) / (b * p);
        const auto start = Clock::now();
        for (int64_t i = 0; i < batches; ++i) session.forward(rows, nullptr, idx, req);
        const double total = std::chrono::duration<double>(Clock::now() - start).count();
        std::cout << nlohmann::json{{"impl", "nscope"}, {"dtype", dtype}, {"shape", shape}, {"hooks", hooks},
                                    {"threads", at::get_num_threads()}, {"tokens", batches * b * p},
                                    {"seconds", total}}.dump()
                  << "\n";
        return 0;
    }
    for (int i = 0; i < 2; ++i) session.forward(rows, nullptr, idx, req);  // warm-up
    if (!profile.empty()) {
        // Op-level trace (chrome://tracing format) of a few forwards; bench/op_profile.py sums it per op.
        torch::autograd::profiler::RecordProfile guard(profile);
        for (int i = 0; i < 5; ++i) session.forward(rows, nullptr, idx, req);
        return 0;
    }
    const auto start = Clock::now();
    int iters = 0;
    double best = 1e30;
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds || iters < 3) {
        const auto t0 = Clock::now();
        ForwardOutput out = session.forward(rows, nullptr, idx, req);
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
        ++iters;
    }
    const double total = std::chrono::duration<double>(Clock::now() - start).count();
    nlohmann::json j = {{"impl", "nscope"}, {"dtype", dtype}, {"shape", shape}, {"hooks", hooks}, {"grad", grad},
                        {"threads", at::get_num_threads()}, {"iters", iters},
                        {"tokens_per_s", static_cast<double>(b * p) * iters / total},
                        {"best_tokens_per_s", static_cast<double>(b * p) / best},
                        // What loading and running added to the process (every weight has been read by now).
                        {"rss_added_bytes", current_rss_bytes() - rss_before}};
    std::cout << j.dump() << "\n";
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    nscope::tune_allocator();  // as nscope itself does
    nscope::install_tensor_allocator();
    CLI::App app{"nscope forward benchmark"};
    std::string dir, dtype = "float32", shape = "1x16", hooks = "none";
    double seconds = 3;
    int threads = 0;
    std::string arch = "gpt2";
    auto* mk = app.add_subcommand("make-model", "Write a random GPT-2-small-shaped model in HF layout");
    mk->add_option("dir", dir)->required();
    mk->add_option("--arch", arch, "gpt2 (GPT-2 small), gpt_neox (Pythia-160M) or gemma (Gemma 1 at 125M scale)");
    auto* rn = app.add_subcommand("run", "Time forwards");
    rn->add_option("dir", dir)->required();
    rn->add_option("--dtype", dtype);
    rn->add_option("--shape", shape, "BxP");
    rn->add_option("--hooks", hooks, "none | mlp_post");
    rn->add_option("--seconds", seconds);
    int64_t tokens = 0;
    std::string profile;
    rn->add_option("--profile", profile, "Write an op-level trace of 5 forwards to this file instead of timing");
    rn->add_option("--tokens", tokens, "Time one cold pass over this many tokens instead (first batch included)");
    bool no_logits = false, grad = false;
    rn->add_flag("--grad", grad, "Also the gradient of the mean next-token loss at every captured hook (needs --hooks mlp_post)");
    rn->add_flag("--no-logits", no_logits, "Ask for no logits: the model skips the unembedding, as a recipe run does");
    app.add_option("--threads", threads);
    app.require_subcommand(1);
    CLI11_PARSE(app, argc, argv);
    return bench::run_main(threads, [&](PluginRegistry& reg) {
        if (*mk) return make_model(reg, dir, arch);
        return run(reg, dir, dtype, shape, hooks, seconds, !no_logits, tokens, profile, grad);
    });
}
