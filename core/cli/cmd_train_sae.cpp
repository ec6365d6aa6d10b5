// nscope train-sae: a sparse autoencoder on one hook of a model (docs/sae.md).
#include <iostream>

#include "core/cli/cli.h"
#include "core/train/sae_trainer.h"

namespace nscope {

namespace {

struct TrainSaeArgs {
    SaeTrainOptions options;
    std::string model, hook, out, resume;
    std::vector<std::string> data;
};

void print_sae_report(const SaeTrainReport& r) {
    const auto& s = r.stats;
    std::cout << "steps: " << r.steps_done << "\ntokens/s: " << static_cast<long long>(r.tokens_per_s)
              << "\nmse: " << s.value("mse", 0.0) << "\nexplained variance: " << s.value("explained_variance", 0.0)
              << "\nL0: " << s.value("l0", 0.0) << "\ndead latents: " << 100 * s.value("dead_fraction", 0.0)
              << "%\ndense latents (>10% of tokens): " << 100 * s.value("dense_fraction", 0.0) << "%\n";
    if (s.contains("loss_recovered"))
        std::cout << "loss: clean " << s["loss_clean"] << ", SAE patched in " << s["loss_patched"] << ", zero-ablated "
                  << s["loss_zero_ablated"] << " (loss recovered " << s["loss_recovered"] << ")\n";
    std::cout << "sae: " << r.out.string() << "\n";
}

}  // namespace

void add_train_sae_command(CLI::App& app, CliContext& ctx) {
    auto a = std::make_shared<TrainSaeArgs>();
    SaeTrainOptions& o = a->options;
    auto* cmd = app.add_subcommand("train-sae", "Train a sparse autoencoder on one hook's activations (streamed from the model)");
    cmd->add_option("model", a->model, "Model folder or hub id")->required()->type_name("MODEL");
    cmd->add_option("--hook", a->hook, "Hook to read, e.g. blocks.2.hook_resid_post or blocks.2.mlp.hook_post")->required();
    cmd->add_option("--data", a->data, "Text file, or prompts .jsonl with a \"text\" per line (repeatable)")->required()->type_name("FILE");
    cmd->add_option("--out", a->out, "Output folder: sae.safetensors + sae.json (and checkpoint-<step>/)")->required()->type_name("DIR");
    cmd->add_option("--resume", a->resume, "Continue from a folder written by a previous train-sae")->type_name("DIR");
    cmd->add_option("--variant", o.variant, "topk (default) or relu (L1 penalty)");
    cmd->add_option("--latents", o.latents, "Dictionary size (default 8 x the hook's width)");
    cmd->add_option("--k", o.k, "topk: active latents per token (default 32)");
    cmd->add_option("--l1", o.l1, "relu: L1 coefficient (default 0.01)");
    cmd->add_option("--k-aux", o.k_aux, "AuxK latents for dead-latent revival (default: half the width)");
    cmd->add_option("--dead-after", o.dead_after_tokens, "Tokens without firing before a latent counts as dead (default 20 batches)");
    cmd->add_option("--steps", o.steps, "Optimizer steps (default 2000)");
    cmd->add_option("--batch-tokens", o.batch_tokens, "Activations per step (default 4096)");
    cmd->add_option("--context", o.context, "Tokens per window of the data (default 64)");
    cmd->add_option("--lr", o.lr, "Adam learning rate (default 1e-3)");
    cmd->add_option("--seed", o.seed, "Seed for initialisation and window sampling (default 0)");
    cmd->add_option("--checkpoint-every", o.checkpoint_every, "Save checkpoint-<step>/ every N steps");
    cmd->add_option("--max-seconds", o.max_seconds, "Stop (and save a resumable SAE) after this many seconds");
    cmd->callback([&ctx, a] {
        ctx.action = [&ctx, a]() -> int {
            SaeTrainOptions opts = a->options;
            opts.out = a->out;
            opts.resume = a->resume;
            print_sae_report(train_sae_on_model(ctx.plugins(), a->model, a->hook,
                                                std::vector<std::filesystem::path>(a->data.begin(), a->data.end()), opts));
            return 0;
        };
    });
}

}  // namespace nscope
