#include "core/run/runner.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/model/session.h"
#include "core/model/tensor_allocator.h"
#include "core/plugin/call_plugin.h"
#include "core/plugin/registry.h"
#include "core/run/interrupt.h"
#include "core/run/model_access.h"
#include "core/run/progress.h"
#include "core/run/run_dir.h"
#include "core/run/run_plan.h"
#include "core/run/study.h"
#include "core/sae/sae_adapter.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/concurrency.h"
#include "core/util/files.h"
#include "core/util/memory.h"
#include "core/util/sha256.h"
#include "nscope/error.h"
#include "nscope/version.h"

namespace nscope {
namespace fs = std::filesystem;

namespace {

struct Interrupted {};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

nlohmann::json file_record(const fs::path& p) {
    return {{"path", fs::absolute(p).string()}, {"bytes", fs::file_size(p)}, {"sha256", sha256_file(p)}};
}

class ModelRun {
public:
    ModelRun(const PluginRegistry& plugins, const RunPlan& plan, const ModelPlan& model, RunDirectory& dir,
             fs::path out_dir, nlohmann::json& record, const RunOptions& options,
             std::optional<Checkpoint> resume_from = std::nullopt)
        : plugins_(plugins), plan_(plan), model_(model), dir_(dir), out_dir_(std::move(out_dir)), record_(record),
          options_(options), resume_from_(std::move(resume_from)) {}

    /// The whole per-model run: load, the per-model analyses, the exports; the model is released after.
    void run() {
        prepare();
        analyze();
        release();
    }

    /// Load the weights, open the session and build the analyzers' context (the prompts come tokenized).
    void prepare() {
        const Recipe& r = plan_.recipe;
        reset_peak_rss();  // peaks per phase (record_phase_peak)
        record_["prompts"] = prompts_->infos.size();  // tokenized at plan time (ModelPlan::prompts)
        record_["tokens"] = prompts_->tokens;
        record_["timings"]["tokenize_s"] = model_.tokenize_s;
        if (r.gradient) resolve_gradient(*r.gradient);  // a bad target token fails before the weights load
        if (!options_.merge_from.empty()) {
            // A merge forwards nothing: the model is described by its config and its shards' records.
            const nlohmann::json& shard_model = options_.merge_from.front()["models"][0];
            for (const char* key : {"architecture", "info", "adapter", "dtype", "files", "sha256"})
                if (shard_model.contains(key)) record_[key] = shard_model[key];
            uint64_t tokens = 0;
            for (const auto& m : options_.merge_from) tokens += m["models"][0].value("tokens_forwarded", uint64_t{0});
            record_["tokens_forwarded"] = tokens;
            build_context(model_.handle);
            return;
        }

        auto t0 = Clock::now();
        const ModelOptions options = parse_model_dtype(model_.spec.dtype);
        loaded_ = std::make_unique<LoadedModel>(load_model(plugins_, model_.spec.ref, options));
        LoadedModel& loaded = *loaded_;
        std::vector<SaeAttachment> saes;
        for (const auto& e : r.saes) saes.push_back(e.sae);
        attach_saes(loaded, saes);  // `<hook>.sae` hook points (validated at plan time)
        record_["timings"]["load_s"] = seconds_since(t0);
        record_["memory"]["estimate"] = model_.memory.to_json();
        record_phase_peak(record_, "load");
        record_["architecture"] = loaded.handle.info.architecture;
        record_["info"] = loaded.handle.info.to_json();
        record_["adapter"] = loaded.handle.plugin->id + "@" + loaded.handle.plugin->version;
        record_["dtype"] = model_.spec.dtype;
        t0 = Clock::now();
        record_["files"] = nlohmann::json::array();
        record_["files"].push_back(file_record(loaded.handle.files.dir / "config.json"));
        for (const auto& f : loaded.handle.files.weight_files) record_["files"].push_back(file_record(f));
        for (const auto& e : r.saes)
            for (const char* f : {"sae.json", "sae.safetensors"}) record_["files"].push_back(file_record(e.sae.path / f));
        if (!loaded.handle.files.tokenizer_json.empty())
            record_["files"].push_back(file_record(loaded.handle.files.tokenizer_json));
        record_["sha256"] = model_digest(record_["files"]);
        record_["timings"]["hash_s"] = seconds_since(t0);
        dir_.save_manifest();
        dir_.log("model_loaded", {{"model", model_.spec.ref}, {"architecture", loaded.handle.info.architecture}});

        session_ = std::make_unique<ModelSession>(loaded);
        ModelSession& session = *session_;
        for (size_t i = 0; i < prompts_->ids.size(); ++i)  // patch sources may live in another batch
            session.register_prompt(i, prompts_->ids[i], prompts_->type_ids.empty() ? std::vector<int64_t>{}
                                                                                  : prompts_->type_ids[i]);
        build_context(loaded.handle);
        const Tokenizer* tok = tokenizer_ ? &*tokenizer_ : nullptr;
        access_ = std::make_unique<SessionModelAccess>(
            session, tok ? std::function<std::vector<int64_t>(const std::string&)>(
                               [tok](const std::string& text) { return tok->encode(text, false).ids; })
                         : nullptr);
        ctx_.model = access_->access();
    }

    /// The per-model analyses (the plan's waves) and the exports into this model's output folder.
    void analyze() {
        const Recipe& r = plan_.recipe;
        auto t0 = Clock::now();
        std::vector<std::unique_ptr<Exporter>> exporters;
        for (const auto& e : r.exports) {
            if (options_.shard) break;  // a shard exports nothing: the merge does
            exporters.push_back(make_exporter(plugins_, e));
            call_plugin(export_role(e.use), "begin", [&] { exporters.back()->begin(ctx_); });
        }
        bool exporters_need_pass = false;
        for (const auto& e : exporters) exporters_need_pass |= e->wants_activations();

        std::map<std::string, Result> results;
        std::vector<std::string> order;
        const size_t passes = std::max<size_t>(plan_.waves.size(), exporters_need_pass ? 1 : 0);
        for (size_t w = 0; w < passes; ++w) {
            std::vector<size_t> wave = w < plan_.waves.size() ? plan_.waves[w] : std::vector<size_t>{};
            std::vector<std::unique_ptr<Analyzer>> analyzers;
            std::vector<RunContext> contexts(wave.size(), ctx_);
            for (size_t k = 0; k < wave.size(); ++k) {
                const AnalysisSpec& spec = r.analyses[wave[k]];
                analyzers.push_back(make_analyzer(plugins_, spec));
                for (const auto& in : spec.inputs) contexts[k].inputs[in] = &results.at(in);
                contexts[k].hooks = hook_points(model_.handle, model_.analysis_hooks[wave[k]]);
                call_plugin(analysis_role(spec.id, spec.use), "begin", [&] { analyzers[k]->begin(contexts[k]); });
            }
            std::vector<std::pair<Exporter*, std::string>> feed;  // exporter, plugin id
            if (w == 0)
                for (size_t i = 0; i < exporters.size(); ++i)
                    if (exporters[i]->wants_activations()) feed.emplace_back(exporters[i].get(), r.exports[i].use);
            t0 = Clock::now();
            if (!options_.merge_from.empty()) {
                merge_states(analyzers, contexts, wave);
                record_["timings"]["merge_s"] = seconds_since(t0);
                record_phase_peak(record_, "merge");
            } else {
                const size_t batches = (prompts_->ids.size() + r.batch_size - 1) / r.batch_size;
                const BatchRange range = options_.shard ? shard_batches(batches, *options_.shard) : BatchRange{0, batches};
                BatchRange todo = range;
                if (resume_from_) {
                    todo.first = resume_from_->next_batch;
                    if (todo.first < range.first || todo.first > range.last)
                        throw InputError("the checkpoint resumes at batch " + std::to_string(todo.first) +
                                         ", outside this run's batches [" + std::to_string(range.first) + ", " +
                                         std::to_string(range.last) + ")");
                    for (size_t k = 0; k < wave.size(); ++k) {
                        const AnalysisSpec& spec = r.analyses[wave[k]];
                        load_analysis_state(*analyzers[k], spec, plan_.analyzer_versions[wave[k]],
                                            read_checkpoint_state(*resume_from_, spec.id),
                                            (resume_from_->dir / (spec.id + ".bin")).string());
                    }
                    dir_.log("resumed", {{"next_batch", todo.first}});
                }
                auto after_batch = [&](size_t next) {
                    const size_t every = options_.checkpoint_every;
                    if (every == 0 || (next - range.first) % every != 0 || next >= range.last) return;
                    write_checkpoint(dir_.path(), next, saved_states(analyzers, wave));
                    dir_.log("checkpoint", {{"next_batch", next}});
                };
                forward_pass(w + 1, passes > 1 ? "pass " + std::to_string(w + 1) : "forward", analyzers, wave, feed,
                             todo, after_batch);
                // The tokens of this run's batches (a shard's block; a resumed run's earlier batches too).
                uint64_t forwarded = 0;
                for (size_t i = range.first * r.batch_size; i < std::min(prompts_->ids.size(), range.last * r.batch_size); ++i)
                    forwarded += prompts_->ids[i].size();
                record_["tokens_forwarded"] = forwarded;
                record_["timings"]["pass" + std::to_string(w + 1) + "_s"] = seconds_since(t0);
                release_cached_tensors();  // the forwards are over: give their memory back before finish and export
                record_phase_peak(record_, "pass" + std::to_string(w + 1));
                if (options_.shard) {
                    // The shard's product is its states; finish and the exports run after the merge.
                    for (const auto& [id, blob] : saved_states(analyzers, wave)) dir_.write(fs::path("state") / (id + ".bin"), blob);
                    record_["states"] = "state/";
                    return;
                }
            }
            t0 = Clock::now();
            for (size_t k = 0; k < wave.size(); ++k) {
                const AnalysisSpec& spec = r.analyses[wave[k]];
                call_plugin(analysis_role(spec.id, spec.use), "finish", [&] { results[spec.id] = analyzers[k]->finish(); });
                order.push_back(spec.id);
                dir_.log("analysis_done", {{"id", spec.id}, {"use", spec.use}});
            }
            record_["timings"]["finish" + std::to_string(w + 1) + "_s"] = seconds_since(t0);
            record_phase_peak(record_, "finish" + std::to_string(w + 1));
        }

        t0 = Clock::now();
        ExportContext ectx;
        ectx.run_dir = out_dir_;
        ectx.manifest = &dir_.manifest();
        ectx.analysis_order = order;
        for (const auto& [id, res] : results) ectx.results[id] = &res;
        for (const auto& a : r.analyses) ectx.analysis_plugins[a.id] = a.use;
        ectx.run = &ctx_;
        ectx.host = &host_services();
        for (size_t i = 0; i < exporters.size(); ++i) {
            if (interrupt_requested()) throw Interrupted{};
            call_plugin(export_role(r.exports[i].use), "write", [&] { exporters[i]->write(ectx); });
            dir_.log("export_done", {{"use", r.exports[i].use}});
        }
        record_["timings"]["export_s"] = seconds_since(t0);
        record_phase_peak(record_, "export");
    }

    /// Every analysis of `wave`'s state in its envelope, by analysis id.
    std::map<std::string, std::string> saved_states(const std::vector<std::unique_ptr<Analyzer>>& analyzers,
                                                    const std::vector<size_t>& wave) const {
        std::map<std::string, std::string> out;
        for (size_t k = 0; k < wave.size(); ++k) {
            const AnalysisSpec& spec = plan_.recipe.analyses[wave[k]];
            out[spec.id] = save_analysis_state(*analyzers[k], spec, plan_.analyzer_versions[wave[k]]);
        }
        return out;
    }

    /// nscope merge: load shard 0's states into `analyzers`, then fold in every other shard's, in shard
    /// order (each into a fresh instance first, begun with the same context).
    void merge_states(std::vector<std::unique_ptr<Analyzer>>& analyzers, const std::vector<RunContext>& contexts,
                      const std::vector<size_t>& wave) {
        const Recipe& r = plan_.recipe;
        for (size_t s = 0; s < options_.merge_from.size(); ++s) {
            const fs::path shard_dir = options_.merge_from[s]["_dir"].get<std::string>();
            for (size_t k = 0; k < wave.size(); ++k) {
                const AnalysisSpec& spec = r.analyses[wave[k]];
                const std::string role = analysis_role(spec.id, spec.use);
                const fs::path file = shard_dir / "state" / (spec.id + ".bin");
                if (!fs::exists(file)) throw InputError("merge: shard " + shard_dir.string() + " has no state of analysis '" + spec.id + "'");
                std::unique_ptr<Analyzer> other;
                Analyzer* target = analyzers[k].get();
                if (s > 0) {
                    other = make_analyzer(plugins_, spec);
                    call_plugin(role, "begin", [&] { other->begin(contexts[k]); });
                    target = other.get();
                }
                load_analysis_state(*target, spec, plan_.analyzer_versions[wave[k]], read_bytes(file), file.string());
                if (other) call_plugin(role, "merge", [&] { analyzers[k]->merge(*other); });
            }
            dir_.log("shard_merged", {{"shard", s}, {"dir", shard_dir.string()}});
        }
    }

    /// Give back the model's memory (the session, the access, the weights).
    void release() {
        access_.reset();
        session_.reset();
        loaded_.reset();
        release_cached_tensors();
    }

    const RunContext& context() const { return ctx_; }
    const ModelPlan& plan() const { return model_; }
    const PromptSet& prompts() const { return *prompts_; }
    const LoadedModel& loaded() const { return *loaded_; }
    const ModelAccess* access() const { return access_ ? access_->access() : nullptr; }

    /// Forward prompts [start, end) capturing `capture` (the recipe's interventions applied; gradients only when
    /// `gradients` and the recipe asks for them).
    ForwardOutput forward_rows(size_t start, size_t end, const std::vector<std::string>& capture, bool gradients) {
        ForwardRequest request;
        request.capture = capture;
        request.interventions = model_.interventions;
        request.keep_logits = false;
        if (gradient_ && gradients) {
            request.gradients = capture;
            request.metric = gradient_;
            if (!gradient_tokens_.empty())
                request.metric->row_tokens.assign(gradient_tokens_.begin() + start, gradient_tokens_.begin() + end);
        }
        std::vector<std::vector<int64_t>> rows(prompts_->ids.begin() + start, prompts_->ids.begin() + end);
        std::vector<std::vector<int64_t>> types;
        if (!prompts_->type_ids.empty()) types.assign(prompts_->type_ids.begin() + start, prompts_->type_ids.begin() + end);
        std::vector<size_t> indices;
        for (size_t i = start; i < end; ++i) indices.push_back(i);
        return session_->forward(rows, types.empty() ? nullptr : &types, indices, request);
    }

    /// Views of a forward's output as a batch of prompts [start, end) (valid while `out` lives).
    Batch batch_view(const ForwardOutput& out, size_t start, size_t end, const std::vector<std::string>& captured) const {
        Batch batch;
        batch.rows = static_cast<size_t>(out.input_ids.size(0));
        batch.positions = static_cast<size_t>(out.input_ids.size(1));
        batch.input_ids = out.input_ids.data_ptr<int64_t>();
        batch.attention_mask = out.attention_mask.data_ptr<int64_t>();
        for (size_t i = start; i < end; ++i) batch.prompts.push_back(&prompts_->infos[i]);
        for (const auto& name : captured) {
            const at::Tensor& t = out.captures.at(name);
            batch.activations.push_back({name, {t.data_ptr<float>(), DType::Float32, t.sizes().vec()}});
        }
        for (const auto& [name, g] : out.gradients)
            batch.gradients.push_back({name, {g.data_ptr<float>(), DType::Float32, g.sizes().vec()}});
        return batch;
    }

    static std::vector<HookPoint> hook_points(const ModelHandle& handle, const std::vector<std::string>& names) {
        std::vector<HookPoint> out;
        for (const auto& name : names)
            for (const auto& hp : handle.hooks)
                if (hp.name == name) out.push_back(hp);
        return out;
    }

    /// The part of `full` whose hooks are in `names` (views only; nothing copied but the small vectors).
    static Batch batch_of(const Batch& full, const std::vector<std::string>& names) {
        Batch b = full;
        b.activations.clear();
        b.gradients.clear();
        auto wanted = [&](const NamedActivation& a) { return std::find(names.begin(), names.end(), a.hook) != names.end(); };
        for (const auto& a : full.activations)
            if (wanted(a)) b.activations.push_back(a);
        for (const auto& g : full.gradients)
            if (wanted(g)) b.gradients.push_back(g);
        return b;
    }

private:
    /// The recipe's `gradient:` as a Metric, with per-prompt tokens when a token comes from a prompt label.
    void resolve_gradient(const GradientSpec& g) {
        gradient_ = Metric{g.metric, {}, {}, g.position};
        bool per_prompt = false;
        for (const auto& t : g.tokens) per_prompt |= !t.label.empty();
        auto id_of = [&](const TokenRef& t, const std::string& text) {
            if (t.id) return *t.id;
            if (!tokenizer_) throw InputError(t.loc.text + ": a token given as text needs the model's tokenizer.json");
            return single_token_id(*tokenizer_, text, t.loc.text);
        };
        if (!per_prompt) {
            for (const auto& t : g.tokens) gradient_->tokens.push_back(id_of(t, t.text));
            return;
        }
        for (const auto& p : prompts_->infos) {
            std::vector<int64_t> ids;
            for (const auto& t : g.tokens)
                ids.push_back(id_of(t, t.label.empty() ? t.text : p.labels[t.label].get<std::string>()));
            gradient_tokens_.push_back(std::move(ids));
        }
    }

    void build_context(const ModelHandle& handle) {
        ctx_.run_dir = out_dir_.string();
        ctx_.model_name = model_.spec.ref;
        ctx_.model_info = handle.info.to_json();
        ctx_.seed = plan_.recipe.seed;
        ctx_.hooks = hook_points(handle, model_.export_hooks);
        for (const auto& p : prompts_->infos) ctx_.prompts.push_back(&p);
        const Tokenizer* tok = tokenizer_ ? &*tokenizer_ : nullptr;
        ctx_.token_text = [tok](int64_t id) { return token_text_or_id(tok, id); };
        ctx_.parallel_for = parallel_for_on(at::get_num_threads());
        ctx_.host = &host_services();
    }

    /// Forward batches [todo.first, todo.last) into the analyzers and exporters; after_batch(b + 1) runs
    /// after batch b is consumed (checkpoints).
    void forward_pass(size_t pass, const std::string& label, std::vector<std::unique_ptr<Analyzer>>& analyzers,
                      const std::vector<size_t>& wave, const std::vector<std::pair<Exporter*, std::string>>& feed,
                      BatchRange todo, const std::function<void(size_t)>& after_batch) {
        const Recipe& r = plan_.recipe;
        double consume_s = 0;
        const size_t n = prompts_->ids.size();
        const size_t first_prompt = std::min(n, todo.first * r.batch_size), last_prompt = std::min(n, todo.last * r.batch_size);
        uint64_t total = 0;
        for (size_t i = first_prompt; i < last_prompt; ++i) total += prompts_->ids[i].size();
        Progress progress(label, total);
        for (size_t b = todo.first; b < todo.last; ++b) {
            if (interrupt_requested()) throw Interrupted{};
            const size_t start = b * r.batch_size, end = std::min(n, start + r.batch_size);
            const ForwardOutput out = forward_rows(start, end, model_.captured, true);
            const Batch batch = batch_view(out, start, end, model_.captured);
            // Each consumer sees its own hooks (an analyzer's required_hooks reach only that analyzer).
            std::vector<Batch> views;
            views.reserve(analyzers.size() + 1);
            for (size_t k = 0; k < analyzers.size(); ++k) views.push_back(batch_of(batch, model_.analysis_hooks[wave[k]]));
            const Batch exported = batch_of(batch, model_.export_hooks);
            // Consumers are independent (each owns its state, the batch is read-only): run them concurrently
            // while LibTorch's threads are idle between forwards.
            std::vector<std::function<void()>> consumers;
            for (size_t k = 0; k < analyzers.size(); ++k)
                consumers.emplace_back([&, k] {
                    const AnalysisSpec& spec = r.analyses[wave[k]];
                    call_plugin(analysis_role(spec.id, spec.use), "consume", [&] { analyzers[k]->consume(views[k]); });
                });
            for (const auto& [e, use] : feed)
                consumers.emplace_back([&, e = e, use = use] {
                    call_plugin(export_role(use), "consume", [&] { e->consume(exported); });
                });
            const auto consume_start = Clock::now();
            run_concurrently(consumers);
            consume_s += seconds_since(consume_start);
            uint64_t tokens = 0;
            for (size_t i = start; i < end; ++i) tokens += prompts_->ids[i].size();
            progress.advance(tokens);
            after_batch(b + 1);
        }
        progress.finish();
        record_["tokens_per_s"] = progress.tokens_per_second();
        // The pass's time spent in analyzers and exporters (the rest is the model).
        record_["timings"]["consume" + std::to_string(pass) + "_s"] = consume_s;
    }

    const PluginRegistry& plugins_;
    const RunPlan& plan_;
    const ModelPlan& model_;
    RunDirectory& dir_;
    fs::path out_dir_;
    nlohmann::json& record_;
    std::shared_ptr<const Tokenizer> tokenizer_ = model_.tokenizer;
    std::shared_ptr<const PromptSet> prompts_ = model_.prompts;
    RunContext ctx_;
    std::unique_ptr<LoadedModel> loaded_;
    std::unique_ptr<ModelSession> session_;
    std::unique_ptr<SessionModelAccess> access_;
    const RunOptions& options_;
    std::optional<Checkpoint> resume_from_;  ///< --resume: the checkpoint to continue from (none: from the start)
    std::optional<Metric> gradient_;                     ///< the recipe's gradient metric, resolved
    std::vector<std::vector<int64_t>> gradient_tokens_;  ///< per prompt, when tokens come from labels
};

/// The lockstep pass of the analyses that span models: one instance each, fed for every batch of prompts
/// model 0's batch, then model 1's, ... (each forward's output freed before the next), then finished and
/// exported at the run's top level. Every model in `runs` is prepared (loaded).
void run_lockstep(const PluginRegistry& plugins, const RunPlan& plan, std::vector<std::unique_ptr<ModelRun>>& runs,
                  RunDirectory& dir) {
    const Recipe& r = plan.recipe;
    nlohmann::json& record = dir.manifest()["lockstep"];
    record = {{"analyses", nlohmann::json::array()}, {"models", nlohmann::json::array()}};
    for (const auto& run : runs) record["models"].push_back(run->plan().spec.label);
    const size_t n = runs[0]->prompts().ids.size();
    for (const auto& run : runs)
        if (run->prompts().ids.size() != n)
            throw RuntimeError("lockstep: model " + run->plan().spec.ref + " has " +
                               std::to_string(run->prompts().ids.size()) + " prompts, the first " + std::to_string(n));
    reset_peak_rss();
    const auto t0 = Clock::now();
    // One context per analysis: model 0's as the run's, plus every model.
    std::vector<std::unique_ptr<Analyzer>> analyzers;
    std::vector<RunContext> contexts;
    for (size_t i : plan.spanning) {
        RunContext ctx = runs[0]->context();
        ctx.run_dir = dir.path().string();
        ctx.model = nullptr;
        ctx.hooks = ModelRun::hook_points(runs[0]->loaded().handle, plan.models[0].analysis_hooks[i]);
        for (size_t m = 0; m < runs.size(); ++m) {
            ModelContext mc = model_context(plan.models[m], plan.models[m].analysis_hooks[i]);
            mc.token_text = runs[m]->context().token_text;
            mc.model = runs[m]->access();
            ctx.models.push_back(std::move(mc));
        }
        contexts.push_back(std::move(ctx));
    }
    for (size_t k = 0; k < plan.spanning.size(); ++k) {
        const AnalysisSpec& spec = r.analyses[plan.spanning[k]];
        analyzers.push_back(make_analyzer(plugins, spec));
        call_plugin(analysis_role(spec.id, spec.use), "begin", [&] { analyzers[k]->begin(contexts[k]); });
    }
    uint64_t total_tokens = 0;
    for (const auto& run : runs) total_tokens += run->prompts().tokens;
    Progress progress("lockstep", total_tokens);
    double consume_s = 0;
    for (size_t start = 0; start < n; start += r.batch_size) {
        const size_t end = std::min(n, start + r.batch_size);
        for (size_t m = 0; m < runs.size(); ++m) {
            if (interrupt_requested()) throw Interrupted{};
            const auto& captured = plan.models[m].lockstep_captured;
            const ForwardOutput out = runs[m]->forward_rows(start, end, captured, false);
            Batch batch = runs[m]->batch_view(out, start, end, captured);
            batch.model = m;
            std::vector<Batch> views;
            views.reserve(analyzers.size());
            for (size_t k = 0; k < analyzers.size(); ++k)
                views.push_back(ModelRun::batch_of(batch, plan.models[m].analysis_hooks[plan.spanning[k]]));
            std::vector<std::function<void()>> consumers;
            for (size_t k = 0; k < analyzers.size(); ++k)
                consumers.emplace_back([&, k] {
                    const AnalysisSpec& spec = r.analyses[plan.spanning[k]];
                    call_plugin(analysis_role(spec.id, spec.use), "consume", [&] { analyzers[k]->consume(views[k]); });
                });
            const auto consume_start = Clock::now();
            run_concurrently(consumers);
            consume_s += seconds_since(consume_start);
            uint64_t tokens = 0;
            for (size_t i = start; i < end; ++i) tokens += runs[m]->prompts().ids[i].size();
            progress.advance(tokens);
        }
    }
    progress.finish();
    record["timings"]["pass_s"] = seconds_since(t0);
    record["timings"]["consume_s"] = consume_s;
    release_cached_tensors();
    record_phase_peak(record, "lockstep");

    auto t1 = Clock::now();
    std::map<std::string, Result> results;
    std::vector<std::string> order;
    for (size_t k = 0; k < analyzers.size(); ++k) {
        const AnalysisSpec& spec = r.analyses[plan.spanning[k]];
        call_plugin(analysis_role(spec.id, spec.use), "finish", [&] { results[spec.id] = analyzers[k]->finish(); });
        order.push_back(spec.id);
        record["analyses"].push_back({{"id", spec.id}, {"use", spec.use}, {"result", "results/" + spec.id + ".json"}});
        dir.log("analysis_done", {{"id", spec.id}, {"use", spec.use}, {"models", runs.size()}});
    }
    record["timings"]["finish_s"] = seconds_since(t1);
    // The run's exporters write the lockstep results at the top level, except `activations` (each model's
    // captures are in its subfolder); exporters that want activations get no batches here.
    t1 = Clock::now();
    ExportContext ectx;
    ectx.run_dir = dir.path();
    ectx.manifest = &dir.manifest();
    ectx.analysis_order = order;
    for (const auto& [id, res] : results) ectx.results[id] = &res;
    for (size_t i : plan.spanning) ectx.analysis_plugins[r.analyses[i].id] = r.analyses[i].use;
    ectx.run = &contexts[0];
    ectx.host = &host_services();
    for (const auto& e : r.exports) {
        if (interrupt_requested()) throw Interrupted{};
        if (e.use == "activations") continue;
        auto exporter = make_exporter(plugins, e);
        call_plugin(export_role(e.use), "begin", [&] { exporter->begin(contexts[0]); });
        call_plugin(export_role(e.use), "write", [&] { exporter->write(ectx); });
        dir.log("export_done", {{"use", e.use}, {"lockstep", true}});
    }
    record["timings"]["export_s"] = seconds_since(t1);
    dir.save_manifest();
}

nlohmann::json plugin_list(const PluginRegistry& plugins) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& p : plugins.plugins())
        j.push_back({{"id", p.id}, {"kind", plugin_kind_name(p.kind)}, {"version", p.version}, {"path", p.path.string()}});
    return j;
}

}  // namespace

namespace {

/// What needs analyzer states, for messages ("" when nothing does).
std::string stateful_feature(const RunOptions& o) {
    if (!o.merge_from.empty()) return "nscope merge";
    if (!o.resume.empty()) return "--resume";
    if (o.shard) return "--shard";
    if (o.checkpoint_every) return "--checkpoint-every";
    return "";
}

/// The run directory a --resume continues, checked against the recipe and model before anything changes
/// in it (InputError, exit 2, otherwise). Returns its last checkpoint, if any.
std::optional<Checkpoint> check_resumable(const RunPlan& plan, const nlohmann::json& m, const fs::path& dir) {
    const std::string status = m.value("status", "");
    if (status == "complete")
        throw InputError("--resume: " + dir.string() + " is a complete run; there is nothing to resume");
    if (m.value("recipe_sha256", "") != recipe_digest(plan.recipe))
        throw InputError("--resume: " + dir.string() + " is a run of another recipe (or other --set overrides)");
    const auto recorded = m.value(nlohmann::json::json_pointer("/models/0/sha256"), std::string());
    if (!recorded.empty()) {
        const ModelFiles& files = plan.models[0].handle.files;
        nlohmann::json now = nlohmann::json::array();
        now.push_back({{"path", (files.dir / "config.json").string()}, {"sha256", sha256_file(files.dir / "config.json")}});
        for (const auto& f : files.weight_files) now.push_back({{"path", f.string()}, {"sha256", sha256_file(f)}});
        if (!files.tokenizer_json.empty())
            now.push_back({{"path", files.tokenizer_json.string()}, {"sha256", sha256_file(files.tokenizer_json)}});
        if (model_digest(now) != recorded)
            throw InputError("--resume: " + dir.string() + " was run with another model (its files' sha256 differ)");
    }
    return read_checkpoint(dir);
}

}  // namespace

RunOutcome run_recipe(const PluginRegistry& plugins, Recipe recipe, const RunOptions& options) {
    RunPlan plan = plan_run(plugins, std::move(recipe));
    if (options.dry_run) print_plan(plan, std::cout);
    const std::string feature = stateful_feature(options);
    if (!feature.empty()) check_stateful_plan(plugins, plan, feature, options.shard || !options.merge_from.empty());
    if (!options.merge_from.empty()) {  // the states load into this host's plugins: they must be the shards'
        const nlohmann::json& s0 = options.merge_from.front();
        const nlohmann::json host = {{"nscope", NSCOPE_VERSION_STRING}, {"analyses", plan.analyzer_versions},
                                     {"exports", plan.exporter_versions}};
        const nlohmann::json shards = {{"nscope", s0.value("nscope_version", "")}, {"analyses", s0["analyses"]},
                                       {"exports", s0["exports"]}};
        if (host != shards)
            throw InputError("merge: the shards ran " + shards.dump() + ", this nscope has " + host.dump());
    }
    if (options.merge_from.empty()) check_memory_budget(plan, options.max_memory);  // before any weight loads
    if (options.dry_run) return {};
    const Recipe& r = plan.recipe;
    std::optional<Checkpoint> resume_from;
    nlohmann::json resumed_manifest;
    if (!options.resume.empty()) {
        resumed_manifest = read_manifest(options.resume);
        resume_from = check_resumable(plan, resumed_manifest, options.resume);
    }
    const int threads = options.threads > 0 ? options.threads
                        : r.threads > 0     ? r.threads
                                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(threads);
    at::manual_seed(r.seed);
    install_interrupt_handlers();

    RunDirectory dir = !options.resume.empty()       ? RunDirectory::reopen(options.resume, resumed_manifest)
                       : !options.merge_out.empty() ? RunDirectory::create_at(options.merge_out)
                                                    : RunDirectory::create(options.out_root, r.name);
    const auto started = Clock::now();
    nlohmann::json& m = dir.manifest();
    if (!options.resume.empty()) m["resumes"].push_back({{"at", iso_time_now()}, {"command", options.command_line},
                                                         {"next_batch", resume_from ? resume_from->next_batch : 0}});
    m["name"] = r.name;
    m["run_id"] = dir.id();
    m["status"] = "running";
    if (options.resume.empty()) m["started"] = iso_time_now();
    m["recipe_sha256"] = recipe_digest(r);
    if (options.shard) {
        const size_t batches = (r.prompts.size() + r.batch_size - 1) / r.batch_size;
        const BatchRange b = shard_batches(batches, *options.shard);
        m["shard"] = {{"index", options.shard->index}, {"count", options.shard->count},
                      {"batches", {b.first, b.last}},
                      {"prompts", {std::min(r.prompts.size(), b.first * r.batch_size), std::min(r.prompts.size(), b.last * r.batch_size)}}};
    }
    if (options.checkpoint_every) m["checkpoint_every"] = options.checkpoint_every;
    if (!options.merge_from.empty()) {
        m["merged_shards"] = nlohmann::json::array();
        for (const auto& s : options.merge_from)
            m["merged_shards"].push_back({{"dir", s["_dir"]}, {"index", s["shard"]["index"]}, {"run_id", s.value("run_id", "")},
                                          {"prompts", s["shard"]["prompts"]}});
    }
    m["nscope_version"] = NSCOPE_VERSION_STRING;
    m["sdk_abi"] = NSCOPE_SDK_ABI_VERSION;
    m["build_tag"] = host_build_tag();
    if (options.resume.empty()) m["command"] = options.command_line;
    m["recipe_file"] = r.file.empty() ? "" : r.file.string();
    m["recipe_base_dir"] = r.base_dir.string();
    m["recipe"] = r.resolved;
    m["seed"] = r.seed;
    m["threads"] = threads;
    m["plugins"] = plugin_list(plugins);
    m["analyses"] = plan.analyzer_versions;
    m["exports"] = plan.exporter_versions;
    m["interventions"] = nlohmann::json::array();
    for (const auto& iv : r.interventions) m["interventions"].push_back(iv.spec.raw);
    if (!r.saes.empty()) {  // the SAEs' sizes and training statistics, for the report
        m["saes"] = nlohmann::json::array();
        for (const auto& e : r.saes) m["saes"].push_back(sae_manifest_entry(e.sae));
    }
    m["models"] = nlohmann::json::array();
    dir.save_manifest();
    if (!options.merge_out.empty()) {
        // The merge runs in a temporary sibling and appears at --out only when complete; what records
        // the run's place (the sqlite exporter's runs table, the report) reads this.
        m["run_dir"] = dir.final_path().string();
        dir.save_manifest();
    }
    dir.log("run_started", {{"name", r.name}, {"run_dir", dir.final_path().string()}});
    spdlog::info("run {} -> {}", r.name, dir.final_path().string());

    auto finish = [&](const std::string& status, const std::string& error) {
        m["status"] = status;
        m["finished"] = iso_time_now();
        m["duration_s"] = seconds_since(started);
        m["exit_status"] = status == "complete" ? 0 : status == "interrupted" ? 3 : (error.empty() ? 3 : -1);
        if (!error.empty()) m["error"] = error;
        dir.log("run_" + status, error.empty() ? nlohmann::json::object() : nlohmann::json{{"error", error}});
        dir.save_manifest();
    };
    try {
        // The whole list first: exporters of the first model already see every model of the run.
        for (const auto& model : plan.models) m["models"].push_back({{"ref", model.spec.ref}, {"label", model.spec.label}});
        if (plan.spanning.empty()) {
            for (size_t i = 0; i < plan.models.size(); ++i) {
                const ModelPlan& model = plan.models[i];
                const fs::path out = plan.models.size() > 1 ? dir.path() / model.spec.label : dir.path();
                ModelRun(plugins, plan, model, dir, out, m["models"][i], options, resume_from).run();
            }
        } else {
            // Analyses that compare the models: every model stays loaded after its own analyses, then one
            // lockstep pass feeds them the same prompts from every model.
            std::vector<std::unique_ptr<ModelRun>> runs;
            for (size_t i = 0; i < plan.models.size(); ++i) {
                const ModelPlan& model = plan.models[i];
                runs.push_back(std::make_unique<ModelRun>(plugins, plan, model, dir, dir.path() / model.spec.label,
                                                          m["models"][i], options));
                runs.back()->prepare();
                runs.back()->analyze();
            }
            run_lockstep(plugins, plan, runs, dir);
            for (auto& run : runs) run->release();
        }
    } catch (const Interrupted&) {
        finish("interrupted", "stopped by signal " + std::to_string(interrupt_signal()));
        spdlog::warn("interrupted: the run in {} is marked interrupted; its results are incomplete", dir.path().string());
        dir.discard();  // an interrupted merge leaves nothing at --out
        return {dir.final_path(), 3};
    } catch (const Error& e) {
        finish("failed", e.what());
        m["exit_status"] = e.exit_code();
        dir.save_manifest();
        dir.discard();  // a failed merge (a damaged state file, say) leaves --out as it was
        throw;
    } catch (const std::exception& e) {
        finish("failed", e.what());
        dir.discard();
        throw;
    }
    if (options.checkpoint_every || !options.resume.empty()) remove_checkpoints(dir.path());
    finish("complete", "");
    dir.publish();
    spdlog::info("done in {:.1f}s: {}", seconds_since(started), dir.path().string());
    return {dir.path(), 0};
}

}  // namespace nscope
