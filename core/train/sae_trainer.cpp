#include "core/train/sae_trainer.h"

#include <ATen/core/grad_mode.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>

#include <spdlog/spdlog.h>

#include "core/model/hook_dispatch.h"
#include "core/model/model_loader.h"
#include "core/model/safetensors.h"
#include "core/run/interrupt.h"
#include "core/run/progress.h"
#include "core/sae/sae.h"
#include "core/tokenizer/tokenizer.h"
#include "core/train/adamw.h"
#include "core/train/trainer.h"
#include "core/util/files.h"
#include "core/util/sha256.h"
#include "core/util/text.h"
#include "nscope/error.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kHeldOutStep = 1'000'000;  // held-out batches: batches(steps + kHeldOutStep + i)

/// Σ over the feature dimension of (a - b)², averaged over rows.
at::Tensor mean_squared_norm(const at::Tensor& d) { return d.pow(2).sum(-1).mean(); }

struct StepLosses {
    at::Tensor total, fvu, aux;
    at::Tensor z;
};

StepLosses sae_losses(const Sae& sae, const at::Tensor& x, const at::Tensor& dead, const SaeTrainOptions& o) {
    const SaeConfig& c = sae.config();
    const at::Tensor variance = mean_squared_norm(x - x.mean(0, true)).clamp_min(1e-12);
    const at::Tensor pre = sae.pre_activations(x);
    StepLosses l;
    l.z = sae.activate(pre);
    const at::Tensor recon = sae.decode(l.z);
    l.fvu = mean_squared_norm(x - recon) / variance;
    l.total = l.fvu;
    if (c.architecture == "relu") l.total = l.total + o.l1 * l.z.sum(-1).mean() / variance.sqrt();
    l.aux = at::zeros({}, at::kFloat);
    const int64_t n_dead = dead.sum().item<int64_t>();
    if (c.architecture == "topk" && n_dead > 0 && o.aux_coef > 0) {
        // AuxK: the dead latents' best k_aux pre-activations explain what the live ones missed.
        const int64_t k_aux = std::min(n_dead, o.k_aux > 0 ? o.k_aux : std::max<int64_t>(1, c.d_in / 2));
        const at::Tensor residual = (x - recon).detach();
        const at::Tensor dead_pre = pre.masked_fill(dead.logical_not(), -std::numeric_limits<float>::infinity());
        auto [values, indices] = at::topk(dead_pre, k_aux, -1);
        const at::Tensor z_aux = at::zeros_like(pre).scatter(-1, indices, at::relu(values));
        const at::Tensor residual_hat = at::matmul(z_aux, sae.decoder());
        l.aux = mean_squared_norm(residual - residual_hat) /
                mean_squared_norm(residual - residual.mean(0, true)).clamp_min(1e-12);
        if (at::isfinite(l.aux).item<bool>()) l.total = l.total + o.aux_coef * l.aux;
    }
    return l;
}

/// Keep the decoder's rows on the unit sphere: drop the gradient's component along each row.
void remove_radial_gradient(const at::Tensor& w_dec) {
    at::NoGradGuard no_grad;
    at::Tensor g = w_dec.grad();
    if (!g.defined()) return;
    g.sub_((g * w_dec).sum(1, true) * w_dec);
}

void save_state(const fs::path& dir, const Sae& sae, const AdamW& opt, const at::Tensor& since_fired, int64_t step,
                const std::vector<double>& losses) {
    sae.save(dir);
    opt.save(dir / "optimizer.safetensors", {{"tokens_since_fired", since_fired}});
    const nlohmann::json st = {{"step", step}, {"losses", losses}};
    write_file_atomic(dir / "trainer_state.json", st.dump() + "\n");
}

double number(const at::Tensor& t) { return t.item<double>(); }

}  // namespace

nlohmann::json sae_statistics(const Sae& sae, const at::Tensor& x) {
    at::NoGradGuard no_grad;
    const at::Tensor z = sae.encode(x);
    const at::Tensor err = x - sae.decode(z);
    const double mse = number(err.pow(2).mean());
    const double fvu = number(mean_squared_norm(err) / mean_squared_norm(x - x.mean(0, true)).clamp_min(1e-12));
    const at::Tensor freq = (z > 0).to(at::kFloat).mean(0);  // firing frequency per latent
    // Histogram of log10(frequency) over [-6, 0] in 12 bins; latents that never fired counted apart.
    std::vector<int64_t> bins(12, 0);
    int64_t never = 0;
    const auto f = freq.contiguous();
    const float* p = f.data_ptr<float>();
    for (int64_t i = 0; i < f.numel(); ++i) {
        if (p[i] <= 0) {
            ++never;
            continue;
        }
        const double b = std::floor((std::log10(p[i]) + 6.0) * 2.0);
        bins[static_cast<size_t>(std::clamp(b, 0.0, 11.0))]++;
    }
    return {{"tokens", x.size(0)},
            {"mse", mse},
            {"explained_variance", 1.0 - fvu},
            {"l0", number((z > 0).sum(-1).to(at::kFloat).mean())},
            {"dead_fraction", number((freq <= 0).to(at::kFloat).mean())},
            {"dense_fraction", number((freq > 0.1).to(at::kFloat).mean())},
            {"density_histogram", {{"log10_frequency_from", -6.0}, {"bin_width", 0.5}, {"counts", bins}, {"never_fired", never}}}};
}

SaeTrainReport train_sae(SaeConfig config, const ActivationBatches& batches, const SaeTrainOptions& o) {
    if (o.out.empty()) throw InputError("--out DIR is required");
    if (o.steps <= 0 || o.batch_tokens <= 0 || o.lr <= 0) throw InputError("--steps, --batch-tokens and --lr must be positive");
    const bool resuming = !o.resume.empty();
    Sae sae = resuming ? Sae::load(o.resume) : Sae::init(config, o.seed);
    if (resuming) {
        const SaeConfig& c = sae.config();
        if (c.d_in != config.d_in || c.latents != config.latents || c.architecture != config.architecture || c.k != config.k)
            throw InputError("--resume " + o.resume.string() + ": the checkpoint is a " + c.architecture + " SAE with " +
                             std::to_string(c.latents) + " latents (k " + std::to_string(c.k) + ") on " + std::to_string(c.d_in) +
                             "-wide activations; give the same --variant, --latents and --k");
    }
    sae.config().training = {{"variant", config.architecture}, {"steps", o.steps}, {"batch_tokens", o.batch_tokens},
                             {"lr", o.lr}, {"seed", o.seed}, {"l1", o.l1}, {"k_aux", o.k_aux}, {"aux_coef", o.aux_coef},
                             {"dead_after_tokens", o.dead_after_tokens}, {"context", o.context}};
    sae.config().l1 = config.architecture == "relu" ? o.l1 : 0.0;
    sae.config().model = config.model;
    sae.config().hook = config.hook;

    AdamW opt;
    for (auto& [name, t] : sae.tensors()) {
        t.requires_grad_(true);
        opt.add(name, t, false);
    }
    const at::Tensor w_dec = sae.decoder(), b_dec = sae.tensors()[3].second;
    at::Tensor since_fired = at::zeros({config.latents}, at::kLong);
    std::vector<double> losses;
    int64_t step = 0;
    if (resuming) {
        opt.load(o.resume / "optimizer.safetensors");
        SafetensorsWeights extra({o.resume / "optimizer.safetensors"});
        since_fired = extra.get("tokens_since_fired").clone();
        std::ifstream in(o.resume / "trainer_state.json");
        if (!in) throw InputError(o.resume.string() + " has no trainer_state.json: not a folder written by nscope train-sae");
        const auto st = nlohmann::json::parse(in, nullptr, false);
        if (!st.is_object() || !st.contains("step")) throw InputError(o.resume.string() + "/trainer_state.json is corrupt");
        step = st["step"].get<int64_t>();
        losses = st.value("losses", std::vector<double>{});
        spdlog::info("resuming from {} at step {}", o.resume.string(), step);
    }
    const int64_t dead_after = o.dead_after_tokens > 0 ? o.dead_after_tokens : 20 * o.batch_tokens;
    const int64_t log_every = o.log_every > 0 ? o.log_every : std::max<int64_t>(1, o.steps / 20);

    install_interrupt_handlers();
    Progress progress("train-sae", static_cast<uint64_t>(std::max<int64_t>(0, o.steps - step) * o.batch_tokens));
    const auto started = Clock::now();
    uint64_t tokens_done = 0;
    for (; step < o.steps; ++step) {
        if (interrupt_requested()) break;
        if (o.max_seconds > 0 && std::chrono::duration<double>(Clock::now() - started).count() > o.max_seconds) break;
        const at::Tensor x = batches(step).to(at::kFloat);
        if (x.dim() != 2 || x.size(1) != config.d_in)
            throw RuntimeError("train-sae: a batch has shape " + c10::str(x.sizes()) + ", expected [n, " + std::to_string(config.d_in) + "]");
        if (step == 0) {
            at::NoGradGuard g;
            b_dec.copy_(x.mean(0));  // start the decoder bias at the data's centre
        }
        const StepLosses l = sae_losses(sae, x, since_fired >= dead_after, o);
        opt.zero_grad();
        l.total.backward();
        remove_radial_gradient(w_dec);
        opt.step(o.lr, step + 1);
        sae.normalize_decoder();
        const double loss = number(l.total);
        if (!std::isfinite(loss))
            throw RuntimeError("the SAE loss became " + std::to_string(loss) + " at step " + std::to_string(step) + "; lower --lr");
        losses.push_back(loss);
        {
            at::NoGradGuard g;
            const at::Tensor fired = (l.z > 0).any(0);
            since_fired.add_(x.size(0)).masked_fill_(fired, 0);
        }
        tokens_done += static_cast<uint64_t>(x.size(0));
        progress.advance(static_cast<uint64_t>(x.size(0)));
        if ((step + 1) % log_every == 0 || step + 1 == o.steps) {
            const double l0 = number((l.z > 0).sum(-1).to(at::kFloat).mean());
            const double dead = number((since_fired >= dead_after).to(at::kFloat).mean());
            const double secs = std::chrono::duration<double>(Clock::now() - started).count();
            spdlog::info("step {}/{}  loss {:.4f}  fvu {:.4f}  L0 {:.1f}  dead {:.1f}%  {:.0f} tokens/s", step + 1, o.steps,
                         loss, number(l.fvu), l0, 100 * dead, secs > 0 ? tokens_done / secs : 0.0);
        }
        if (o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 && step + 1 < o.steps)
            save_state(o.out / ("checkpoint-" + std::to_string(step + 1)), sae, opt, since_fired, step + 1, losses);
    }
    progress.finish();
    const double secs = std::chrono::duration<double>(Clock::now() - started).count();
    for (auto& [name, t] : sae.tensors()) t.requires_grad_(false);

    // Statistics on held-out batches.
    std::vector<at::Tensor> held;
    int64_t n = 0;
    for (int64_t i = 0; n < o.eval_tokens && i < 64; ++i) {
        held.push_back(batches(o.steps + kHeldOutStep + i).to(at::kFloat));
        n += held.back().size(0);
    }
    SaeTrainReport r;
    r.stats = sae_statistics(sae, at::cat(held));
    r.stats["dead_fraction_training"] = number((since_fired >= dead_after).to(at::kFloat).mean());
    r.stats["final_loss"] = losses.empty() ? 0.0 : losses.back();
    sae.config().stats = r.stats;
    save_state(o.out, sae, opt, since_fired, step, losses);
    if (interrupt_requested()) spdlog::warn("interrupted at step {}: saved a resumable SAE in {}", step, o.out.string());
    r.steps_done = step;
    r.tokens_per_s = secs > 0 ? static_cast<double>(tokens_done) / secs : 0;
    r.out = o.out;
    return r;
}

namespace {

/// Mean next-token loss of `ids` windows with the hook's activation replaced by `edit` (null: unedited).
double loss_with(LoadedModel& model, int hook, const at::Tensor& x, const at::Tensor& y,
                 const std::function<at::Tensor(const at::Tensor&)>& edit) {
    HostHookDispatcher d(model.adapter->hook_points().size());
    if (edit) d.add_editor(hook, [&](int, at::Tensor& t) { t = edit(t); });
    at::NoGradGuard no_grad;
    const at::Tensor logits = model.adapter->forward({x, at::ones_like(x), at::Tensor()}, edit ? &d : nullptr);
    return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), y.reshape({-1})).item<double>();
}

}  // namespace

SaeTrainReport train_sae_on_model(const PluginRegistry& plugins, const std::string& model_ref, const std::string& hook,
                                  const std::vector<fs::path>& data, SaeTrainOptions o) {
    if (data.empty()) throw InputError("no training data: give one or more --data FILE (text, or prompts .jsonl)");
    for (const auto& f : data)
        if (!fs::is_regular_file(f)) throw InputError("training data '" + f.string() + "' does not exist");
    if (o.out.empty()) throw InputError("--out DIR is required");
    const auto& archs = sae_architectures();
    if (std::find(archs.begin(), archs.end(), o.variant) == archs.end())
        throw InputError("--variant must be topk or relu, not '" + o.variant + "'");
    // Validate the hook and the sizes from config.json before the weights load.
    const ModelHandle described = describe_model(plugins, model_ref);
    const HookPoint& h = sae_input_hook(described.hooks, hook);
    SaeConfig config;
    config.architecture = o.variant;
    config.hook = hook;
    config.d_in = h.shape[2];
    config.latents = o.latents > 0 ? o.latents : 8 * config.d_in;
    config.k = o.variant == "topk" ? o.k : 0;
    config.validate("train-sae");
    if (described.files.tokenizer_json.empty()) throw InputError(model_ref + " has no tokenizer.json; train-sae tokenizes --data with it");
    config.model = {{"ref", model_ref}, {"architecture", described.info.architecture},
                    {"config_sha256", described.files.dir.empty() ? "" : sha256_file(described.files.dir / "config.json")}};

    LoadedModel model = load_model(plugins, model_ref, ModelOptions{});
    const Tokenizer tok = Tokenizer::from_file(model.handle.files.tokenizer_json);
    const at::Tensor corpus = tokenize_corpus(tok, data, tok.eos_id());
    o.context = std::min(o.context, model.handle.info.max_positions);
    if (corpus.size(0) <= o.context + 1)
        throw InputError("the training data has only " + std::to_string(corpus.size(0)) + " tokens; it needs more than --context (" +
                         std::to_string(o.context) + ")");
    const int hook_id = static_cast<int>(&h - described.hooks.data());
    const int64_t windows = std::max<int64_t>(1, o.batch_tokens / o.context);
    // The activations of `windows` windows drawn from (seed, step): streamed, never stored.
    auto batches = [&](int64_t step) {
        auto [x, y] = corpus_windows(corpus, windows, o.context, o.seed, step);
        HostHookDispatcher d(model.adapter->hook_points().size());
        at::Tensor got;
        d.add_observer(hook_id, [&](int, const at::Tensor& t) { got = t.detach().to(at::kFloat).reshape({-1, t.size(-1)}).clone(); });
        at::NoGradGuard no_grad;
        model.adapter->forward({x, at::ones_like(x), at::Tensor(), /*logits=*/false}, &d);
        if (!got.defined()) throw RuntimeError("the model adapter never fired hook " + hook);
        return got;
    };
    spdlog::info("train-sae: {} SAE, {} latents{} on {} ({} wide), {} tokens of data, {} windows of {} tokens per step",
                 config.architecture, config.latents, config.architecture == "topk" ? " (k " + std::to_string(config.k) + ")" : "",
                 hook, config.d_in, corpus.size(0), windows, o.context);
    SaeTrainReport r = train_sae(config, batches, o);

    // Fraction of the model's loss recovered by the reconstruction, against zero-ablating the hook.
    Sae sae = Sae::load(o.out);
    auto [x, y] = corpus_windows(corpus, std::max<int64_t>(1, o.eval_tokens / o.context), o.context, o.seed, o.steps + kHeldOutStep);
    const double clean = loss_with(model, hook_id, x, y, nullptr);
    const double patched = loss_with(model, hook_id, x, y, [&](const at::Tensor& t) {
        return sae.decode(sae.encode(t.to(at::kFloat))).to(t.scalar_type());
    });
    const double zeroed = loss_with(model, hook_id, x, y, [](const at::Tensor& t) { return at::zeros_like(t); });
    r.stats["loss_clean"] = clean;
    r.stats["loss_patched"] = patched;
    r.stats["loss_zero_ablated"] = zeroed;
    r.stats["loss_recovered"] = zeroed != clean ? (zeroed - patched) / (zeroed - clean) : 1.0;
    sae.config().stats = r.stats;
    sae.save(o.out);  // sae.json gains the loss figures (the weights are the same)
    return r;
}

}  // namespace nscope
