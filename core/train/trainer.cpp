#include "core/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/model/model_loader.h"
#include "core/model/safetensors.h"
#include "core/run/interrupt.h"
#include "core/run/progress.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/adamw.h"
#include "core/train/bpe_trainer.h"
#include "nscope/error.h"
#include "core/util/files.h"
#include "nscope/io.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

AdamW make_optimizer(ModelAdapter& model, const TrainOptions& o) {
    AdamW opt;
    opt.beta1 = o.beta1, opt.beta2 = o.beta2, opt.eps = o.eps, opt.weight_decay = o.weight_decay;
    for (auto& [name, p] : model.named_parameters())
        if (p.requires_grad()) opt.add(name, p, p.dim() >= 2);  // no decay on biases and norm weights
    if (opt.params.empty())
        throw InputError("the model adapter exposes no trainable parameters (does it honour ModelOptions::trainable?)");
    return opt;
}

double learning_rate(const TrainOptions& o, int64_t step) {
    if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
    const double progress = std::min(1.0, static_cast<double>(step - o.warmup) / std::max<int64_t>(1, o.steps - o.warmup));
    const double floor = 0.1 * o.lr;
    return floor + 0.5 * (o.lr - floor) * (1.0 + std::cos(M_PI * progress));
}

at::ScalarType save_type(const std::string& s) {
    if (s == "float32") return at::kFloat;
    if (s == "bfloat16") return at::kBFloat16;
    if (s == "float16") return at::kHalf;
    throw InputError("--save-dtype must be float32, bfloat16 or float16, not '" + s + "'");
}

}  // namespace

void save_model(const fs::path& dir, LoadedModel& model, const fs::path& tokenizer_json, const std::string& dtype) {
    fs::create_directories(dir);
    // The adapter names parameters without its base prefix; the checkpoint gets HF's names back.
    const WeightNaming naming = model.handle.factory->weight_naming();
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    for (auto& [name, p] : model.adapter->named_parameters())
        tensors.emplace_back(checkpoint_weight_name(naming, name), p.detach().to(save_type(dtype)).contiguous());
    write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    write_file_atomic(dir / "config.json", model.handle.files.config.dump(2) + "\n");
    if (!tokenizer_json.empty() && fs::absolute(tokenizer_json) != fs::absolute(dir / "tokenizer.json"))
        fs::copy_file(tokenizer_json, dir / "tokenizer.json", fs::copy_options::overwrite_existing);
}

namespace {

void save_checkpoint(const fs::path& dir, LoadedModel& model, const AdamW& opt, const fs::path& tokenizer_json,
                     const TrainOptions& o, int64_t step, const std::vector<double>& losses) {
    save_model(dir, model, tokenizer_json, o.save_dtype);
    opt.save(dir / "optimizer.safetensors");
    nlohmann::json st = {{"step", step}, {"seed", o.seed}, {"steps", o.steps}, {"batch_size", o.batch_size},
                         {"context", o.context}, {"lr", o.lr}, {"warmup", o.warmup}, {"losses", losses}};
    write_file_atomic(dir / "trainer_state.json", st.dump(2) + "\n");
}

// The shared loop of train / finetune. `start_step` > 0 when resuming.
TrainReport train_loop(LoadedModel& model, AdamW& opt, const at::Tensor& corpus, const TrainOptions& o,
                       const fs::path& tokenizer_json, int64_t start_step, std::vector<double> losses) {
    if (corpus.size(0) <= o.context + 1)
        throw InputError("the training data has only " + std::to_string(corpus.size(0)) +
                         " tokens; it needs more than the context length (" + std::to_string(o.context) + ")");
    install_interrupt_handlers();
    const int64_t vocab = model.handle.info.vocab_size;
    Progress progress("train", static_cast<uint64_t>((o.steps - start_step) * o.batch_size * o.context));
    const auto started = Clock::now();
    int64_t step = start_step;
    for (; step < o.steps; ++step) {
        if (interrupt_requested()) break;
        if (o.max_seconds > 0 && std::chrono::duration<double>(Clock::now() - started).count() > o.max_seconds) break;
        auto [x, y] = corpus_windows(corpus, o.batch_size, o.context, o.seed, step);
        ForwardInput in{x, at::ones_like(x), at::Tensor()};
        const at::Tensor logits = model.adapter->forward(in, nullptr);
        const at::Tensor loss = at::cross_entropy_loss(logits.reshape({-1, vocab}).to(at::kFloat), y.reshape({-1}));
        opt.zero_grad();
        loss.backward();
        opt.clip_gradients(o.clip);
        opt.step(learning_rate(o, step), step + 1);
        const double l = loss.item<double>();
        if (!std::isfinite(l)) throw RuntimeError("the loss became " + std::to_string(l) + " at step " + std::to_string(step) + "; lower --lr");
        losses.push_back(l);
        char note[64];
        std::snprintf(note, sizeof note, "step %lld loss %.3f", static_cast<long long>(step + 1), l);
        progress.set_note(note);
        progress.advance(static_cast<uint64_t>(o.batch_size * o.context));
        if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 && step + 1 < o.steps)
            save_checkpoint(o.out / ("checkpoint-" + std::to_string(step + 1)), model, opt, tokenizer_json, o, step + 1,
                            losses);
    }
    progress.finish();
    save_checkpoint(o.out, model, opt, tokenizer_json, o, step, losses);
    TrainReport r;
    r.steps_done = step - start_step;
    r.model_dir = o.out;
    r.tokens_per_s = progress.tokens_per_second();
    auto mean = [&](size_t from, size_t to) {
        double s = 0;
        for (size_t i = from; i < to; ++i) s += losses[i];
        return to > from ? s / static_cast<double>(to - from) : 0.0;
    };
    r.first_loss = mean(0, std::min<size_t>(10, losses.size()));
    r.last_loss = mean(losses.size() - std::min<size_t>(10, losses.size()), losses.size());
    if (interrupt_requested()) spdlog::warn("interrupted at step {}: saved a resumable checkpoint in {}", step, o.out.string());
    return r;
}

// Resume: weights from the checkpoint folder (loaded trainable), moments from optimizer.safetensors.
int64_t restore_optimizer(AdamW& opt, const fs::path& ckpt, std::vector<double>& losses) {
    opt.load(ckpt / "optimizer.safetensors");
    std::ifstream in(ckpt / "trainer_state.json");
    if (!in) throw InputError(ckpt.string() + " has no trainer_state.json: not a checkpoint written by nscope train");
    try {
        const auto st = nlohmann::json::parse(in);
        losses = st.value("losses", std::vector<double>{});
        return st.at("step").get<int64_t>();
    } catch (const nlohmann::json::exception& e) {
        throw InputError((ckpt / "trainer_state.json").string() + ": not a trainer state written by nscope train (" +
                         e.what() + "); is the checkpoint damaged?");
    }
}

void check_options(const TrainOptions& o) {
    if (o.data.empty()) throw InputError("no training data: give one or more --data FILE");
    for (const auto& f : o.data)
        if (!fs::is_regular_file(f)) throw InputError("training data '" + f.string() + "' does not exist");
    if (o.out.empty()) throw InputError("--out DIR is required");
    if (o.steps <= 0 || o.batch_size <= 0 || o.context <= 1) throw InputError("--steps, --batch-size and --context must be positive");
    if (o.heads <= 0 || o.d_model % o.heads != 0)
        throw InputError("--d-model (" + std::to_string(o.d_model) + ") must be divisible by --heads (" + std::to_string(o.heads) + ")");
    save_type(o.save_dtype);
}

}  // namespace

at::Tensor tokenize_corpus(const Tokenizer& tok, const std::vector<fs::path>& files, std::optional<int64_t> eos) {
    std::vector<int64_t> ids;
    for (const auto& f : files) {
        const std::string text = read_corpus(f);
        const bool jsonl = f.extension() == ".jsonl";
        std::istringstream in(text);
        size_t line_no = 0;
        for (std::string line; std::getline(in, line);) {
            ++line_no;
            if (jsonl) {  // prompts JSONL: one {"text": ...} per line
                if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
                const auto j = nlohmann::json::parse(line, nullptr, false);
                if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
                    throw InputError(f.string() + ":" + std::to_string(line_no) + ": expected a JSON object with a \"text\" string");
                line = j["text"].get<std::string>();
            }
            const auto enc = tok.encode(line + "\n", false);
            ids.insert(ids.end(), enc.ids.begin(), enc.ids.end());
        }
        if (eos) ids.push_back(*eos);
    }
    return at::tensor(ids, at::kLong);
}

// Windows of context+1 tokens, drawn from a generator that depends only on (seed, step).
std::pair<at::Tensor, at::Tensor> corpus_windows(const at::Tensor& corpus, int64_t batch, int64_t context, uint64_t seed,
                                             int64_t step) {
    std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step) + 1);
    const int64_t n = corpus.size(0) - context - 1;
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    std::vector<at::Tensor> rows;
    for (int64_t b = 0; b < batch; ++b) rows.push_back(corpus.narrow(0, pick(rng), context + 1));
    const at::Tensor w = at::stack(rows);
    return {w.narrow(1, 0, context).contiguous(), w.narrow(1, 1, context).contiguous()};
}

std::string read_corpus(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError("cannot read training data '" + file.string() + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

TrainReport train_from_scratch(const PluginRegistry& plugins, const TrainOptions& options) {
    TrainOptions o = options;
    check_options(o);
    fs::create_directories(o.out);
    at::manual_seed(o.seed);
    if (!o.resume.empty()) {
        // Everything (config, tokenizer, weights, moments, step) comes from the checkpoint.
        ModelOptions mo;
        mo.trainable = true;
        LoadedModel model = load_model(plugins, o.resume.string(), mo);
        const Tokenizer tok = Tokenizer::from_file(model.handle.files.tokenizer_json);
        const at::Tensor corpus = tokenize_corpus(tok, o.data, tok.eos_id());
        AdamW opt = make_optimizer(*model.adapter, o);
        std::vector<double> losses;
        const int64_t step = restore_optimizer(opt, o.resume, losses);
        spdlog::info("resuming from {} at step {}", o.resume.string(), step);
        return train_loop(model, opt, corpus, o, model.handle.files.tokenizer_json, step, losses);
    }
    fs::path tokenizer_json = o.tokenizer;
    if (tokenizer_json.empty()) {
        BpeTrainerOptions bo;
        bo.vocab_size = static_cast<size_t>(o.vocab);
        BpeTrainer bpe(bo);
        for (const auto& f : o.data) {
            std::istringstream in(read_corpus(f));
            for (std::string line; std::getline(in, line);) bpe.add_text(line + "\n");
        }
        tokenizer_json = o.out / "tokenizer.json";
        write_file_atomic(tokenizer_json, bpe.train().dump() + "\n");
        spdlog::info("trained a {}-token byte-level BPE tokenizer on {} words", o.vocab, bpe.words_seen());
    }
    const Tokenizer tok = Tokenizer::from_file(tokenizer_json);
    const at::Tensor corpus = tokenize_corpus(tok, o.data, tok.eos_id());
    spdlog::info("corpus: {} tokens", corpus.size(0));
    const int64_t eos = tok.eos_id().value_or(0);
    const nlohmann::json config = {
        {"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", static_cast<int64_t>(tok.vocab_size())},
        {"n_positions", o.context}, {"n_ctx", o.context}, {"n_embd", o.d_model}, {"n_layer", o.layers},
        {"n_head", o.heads}, {"n_inner", nullptr}, {"activation_function", "gelu_new"},
        {"layer_norm_epsilon", 1e-5}, {"bos_token_id", eos}, {"eos_token_id", eos}, {"resid_pdrop", 0.0},
        {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0}, {"tie_word_embeddings", true}, {"torch_dtype", o.save_dtype}};
    ModelOptions mo;
    mo.trainable = true;
    LoadedModel model = init_random_model(plugins, config, o.seed, mo);
    AdamW opt = make_optimizer(*model.adapter, o);
    spdlog::info("model: {} layers, d_model {}, {} parameters", o.layers, o.d_model, model.handle.info.n_params);
    return train_loop(model, opt, corpus, o, tokenizer_json, 0, {});
}

TrainReport finetune(const PluginRegistry& plugins, const std::string& model_ref, const TrainOptions& options) {
    TrainOptions o = options;
    check_options(o);
    fs::create_directories(o.out);
    at::manual_seed(o.seed);
    const bool resuming = !o.resume.empty();
    ModelOptions mo;
    mo.trainable = true;
    LoadedModel model = load_model(plugins, resuming ? o.resume.string() : model_ref, mo);
    if (!model.handle.info.causal)
        throw InputError(model_ref + " is not a causal language model (" + model.handle.info.architecture +
                         "); fine-tuning supports decoder models");
    if (model.handle.files.tokenizer_json.empty())
        throw InputError(model_ref + " has no tokenizer.json; fine-tuning needs the model's tokenizer");
    const Tokenizer tok = Tokenizer::from_file(model.handle.files.tokenizer_json);
    const at::Tensor corpus = tokenize_corpus(tok, o.data, tok.eos_id());
    if (o.context > model.handle.info.max_positions) o.context = model.handle.info.max_positions;
    AdamW opt = make_optimizer(*model.adapter, o);
    std::vector<double> losses;
    const int64_t step = resuming ? restore_optimizer(opt, o.resume, losses) : 0;
    return train_loop(model, opt, corpus, o, model.handle.files.tokenizer_json, step, losses);
}

double evaluate_loss(const PluginRegistry& plugins, const std::string& model_ref, const fs::path& data,
                     int64_t windows, int64_t context, uint64_t seed) {
    LoadedModel model = load_model(plugins, model_ref, ModelOptions{});
    const Tokenizer tok = Tokenizer::from_file(model.handle.files.tokenizer_json);
    const at::Tensor corpus = tokenize_corpus(tok, {data}, tok.eos_id());
    at::NoGradGuard no_grad;
    auto [x, y] = corpus_windows(corpus, windows, context, seed, 0);
    const at::Tensor logits = model.adapter->forward({x, at::ones_like(x), at::Tensor()}, nullptr);
    return at::cross_entropy_loss(logits.reshape({-1, model.handle.info.vocab_size}).to(at::kFloat), y.reshape({-1}))
        .item<double>();
}

}  // namespace nscope
