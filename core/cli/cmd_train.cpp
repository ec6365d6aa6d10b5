// nscope train / finetune / train-tokenizer
#include <iostream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/cli/cli.h"
#include "core/train/bpe_trainer.h"
#include "core/train/trainer.h"
#include "core/util/files.h"
#include "nscope/io.h"

namespace nscope {

namespace {

void add_train_options(CLI::App* cmd, TrainOptions& o, std::vector<std::string>& data, std::string& out,
                       std::string& resume, bool architecture) {
    cmd->add_option("--data", data, "Training text file (repeatable)")->required()->type_name("FILE");
    cmd->add_option("--out", out, "Output folder: the model, and checkpoint-<step>/ folders")->required()->type_name("DIR");
    cmd->add_option("--resume", resume, "Continue from a checkpoint folder written by a previous run")->type_name("DIR");
    cmd->add_option("--steps", o.steps, "Optimizer steps (default 1000)");
    cmd->add_option("--batch-size", o.batch_size, "Windows per step (default 16)");
    cmd->add_option("--context", o.context, "Tokens per window (default 128)");
    cmd->add_option("--lr", o.lr, "Peak learning rate (default 3e-3)");
    cmd->add_option("--warmup", o.warmup, "Linear warm-up steps (default 100)");
    cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay on matrices (default 0.1)");
    cmd->add_option("--clip", o.clip, "Gradient norm clipping (default 1.0, 0 = off)");
    cmd->add_option("--seed", o.seed, "Seed for initialisation and batch sampling (default 0)");
    cmd->add_option("--checkpoint-every", o.checkpoint_every, "Save a checkpoint every N steps (default: only at the end)");
    cmd->add_option("--save-dtype", o.save_dtype, "Weights dtype on disk: float32, bfloat16, float16");
    cmd->add_option("--max-seconds", o.max_seconds, "Stop (and save) after this many seconds");
    if (architecture) {
        cmd->add_option("--layers", o.layers, "Transformer blocks (default 4)");
        cmd->add_option("--d-model", o.d_model, "Residual width (default 256)");
        cmd->add_option("--heads", o.heads, "Attention heads (default 4)");
        cmd->add_option("--vocab", o.vocab, "Tokenizer vocabulary when training one (default 4096)");
        cmd->add_option("--tokenizer", o.tokenizer, "Use this tokenizer.json instead of training one")->type_name("FILE");
    }
}

void print_report(const TrainReport& r) {
    std::cout << "steps: " << r.steps_done << "\nloss: " << r.first_loss << " -> " << r.last_loss
              << "\ntokens/s: " << static_cast<long long>(r.tokens_per_s) << "\nmodel: " << r.model_dir.string() << "\n";
}

struct TrainArgs {
    TrainOptions options;
    std::vector<std::string> data;
    std::string out, resume, model;
    size_t tok_vocab = 4096;
};

}  // namespace

void add_train_commands(CLI::App& app, CliContext& ctx) {
    auto train = std::make_shared<TrainArgs>();
    auto* t = app.add_subcommand("train", "Train a GPT-2-architecture model from scratch on text files");
    add_train_options(t, train->options, train->data, train->out, train->resume, true);
    t->callback([&ctx, train] {
        ctx.action = [&ctx, train]() -> int {
            TrainOptions o = train->options;
            o.data.assign(train->data.begin(), train->data.end());
            o.out = train->out;
            o.resume = train->resume;
            print_report(train_from_scratch(ctx.plugins(), o));
            return 0;
        };
    });

    auto ft = std::make_shared<TrainArgs>();
    auto* f = app.add_subcommand("finetune", "Fine-tune a causal model (folder or hub id) on text files");
    f->add_option("model", ft->model, "Model folder or hub id")->required()->type_name("MODEL");
    add_train_options(f, ft->options, ft->data, ft->out, ft->resume, false);
    f->callback([&ctx, ft] {
        ctx.action = [&ctx, ft]() -> int {
            TrainOptions o = ft->options;
            o.data.assign(ft->data.begin(), ft->data.end());
            o.out = ft->out;
            o.resume = ft->resume;
            print_report(finetune(ctx.plugins(), ft->model, o));
            return 0;
        };
    });

    auto tk = std::make_shared<TrainArgs>();
    auto* k = app.add_subcommand("train-tokenizer", "Train a byte-level BPE tokenizer and write tokenizer.json");
    k->add_option("--data", tk->data, "Text file (repeatable)")->required()->type_name("FILE");
    k->add_option("--out", tk->out, "Output tokenizer.json")->required()->type_name("FILE");
    k->add_option("--vocab", tk->tok_vocab, "Vocabulary size (default 4096)");
    k->callback([&ctx, tk] {
        ctx.action = [tk]() -> int {
            BpeTrainerOptions bo;
            bo.vocab_size = tk->tok_vocab;
            BpeTrainer bpe(bo);
            for (const auto& file : tk->data) {
                std::istringstream in(read_corpus(file));
                for (std::string line; std::getline(in, line);) bpe.add_text(line + "\n");
            }
            const auto doc = bpe.train();
            write_file_atomic(tk->out, doc.dump() + "\n");
            std::cout << "wrote " << tk->out << " (" << doc["model"]["vocab"].size() << " tokens, "
                      << doc["model"]["merges"].size() << " merges)\n";
            return 0;
        };
    });
    add_train_sae_command(app, ctx);
}

}  // namespace nscope
