// Cost of the causal analyses on the GPT-2-small-shaped bench model (`nscope_bench_forward make-model`), each
// measured beside its baseline in the same process, rounds alternating:
//
//   nscope_bench_causal attribution MODEL --pairs 4 --tokens 16 --rounds 3 [--no-patching]
//     capture      one forward of the 2·pairs prompts capturing every attn.hook_z, mlp.hook_post, hook_resid_pre
//     attribution  the `attribution` analyzer (method: patching): heads, residual positions and every MLP neuron
//                  of every layer, over the pairs (2 forwards + 1 backward per pair)
//     patching     the `patching` analyzer (components: heads), exhaustive: one patched row per head and pair
//                  (16 rows per forward); exhaustive patching of every MLP neuron is extrapolated from its cost
//                  per row (pairs x layers x d_mlp rows: far too many to run)
//   prints one JSON line per round and a summary line with the median ratios.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/model/model_loader.h"
#include "core/model/session.h"
#include "core/model/tensor_allocator.h"
#include "bench/bench_main.h"
#include "core/plugin/registry.h"
#include "core/run/model_access.h"
#include "core/util/allocator.h"
#include "core/util/log.h"
#include "nscope/error.h"

using namespace nscope;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

/// configure + begin + consume the prompts as one batch + finish; returns the seconds of finish (the forwards).
double run_analyzer(const PluginRegistry& reg, const std::string& id, const nlohmann::json& params,
                    const RunContext& ctx, const std::vector<std::vector<int64_t>>& rows, nlohmann::json* summary) {
    auto a = reg.create_analyzer(id);
    a->configure(params);
    a->begin(ctx);
    const size_t P = rows[0].size();
    std::vector<int64_t> ids, mask(rows.size() * P, 1);
    for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
    std::vector<PromptInfo> infos(rows.size());
    Batch b;
    b.rows = rows.size();
    b.positions = P;
    b.input_ids = ids.data();
    b.attention_mask = mask.data();
    for (size_t i = 0; i < rows.size(); ++i) infos[i].index = i, b.prompts.push_back(&infos[i]);
    a->consume(b);
    const auto t0 = Clock::now();
    const Result res = a->finish();
    const double s = since(t0);
    if (summary) *summary = res.data["summary"];
    return s;
}

int attribution(const PluginRegistry& reg, const std::string& dir, int64_t pairs, int64_t tokens, int rounds,
                bool patching) {
    LoadedModel model = load_model(reg, dir, ModelOptions{});
    ModelSession session(model);
    const auto& info = model.handle.info;
    at::manual_seed(0);
    // Pairs (clean, corrupted) of random tokens that differ at one position in the middle.
    std::vector<std::vector<int64_t>> rows;
    nlohmann::json pair_list = nlohmann::json::array();
    for (int64_t i = 0; i < pairs; ++i) {
        const at::Tensor t = at::randint(0, info.vocab_size, {tokens + 1}, at::kLong);
        std::vector<int64_t> clean(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + tokens);
        std::vector<int64_t> corrupt = clean;
        corrupt[static_cast<size_t>(tokens / 2)] = t.data_ptr<int64_t>()[tokens];
        pair_list.push_back({rows.size(), rows.size() + 1});
        rows.push_back(clean), rows.push_back(corrupt);
    }
    std::vector<size_t> idx(rows.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i, session.register_prompt(i, rows[i], {});
    ForwardRequest capture;
    capture.keep_logits = false;
    for (int64_t l = 0; l < info.n_layers; ++l) {
        const std::string b = "blocks." + std::to_string(l) + ".";
        for (const char* h : {"attn.hook_z", "mlp.hook_post", "hook_resid_pre"}) capture.capture.push_back(b + h);
    }
    SessionModelAccess access(session, nullptr);
    RunContext ctx;
    ctx.model_info = info.to_json();
    ctx.model = access.access();
    const nlohmann::json metric = {{"metric", "logit_diff"}, {"tokens", {11, 13}}};
    nlohmann::json attr = metric, patch = metric;
    attr["method"] = "patching", attr["pairs"] = pair_list;
    patch["components"] = {"heads"}, patch["pairs"] = pair_list, patch["batch_size"] = 16;


    std::vector<double> r_attr, r_patch;
    for (int r = 0; r < rounds; ++r) {
        auto t0 = Clock::now();
        session.forward(rows, nullptr, idx, capture);
        const double cap = since(t0);
        nlohmann::json summary;
        const double att = run_analyzer(reg, "attribution", attr, ctx, rows, &summary);
        nlohmann::json line = {{"round", r}, {"pairs", pairs}, {"tokens", tokens}, {"capture_s", cap},
                               {"attribution_s", att}, {"attribution_over_capture", att / cap}};
        if (patching) {
            nlohmann::json ps_summary;
            const double ps = run_analyzer(reg, "patching", patch, ctx, rows, &ps_summary);
            const double n = ps_summary.value("rows", 0.0);
            line["patching_s"] = ps;
            line["patching_rows"] = ps_summary["rows"];
            line["patching_forwards"] = ps_summary["forwards"];
            line["patching_over_capture"] = ps / cap;
            // Every MLP neuron patched the same way (one row each), at the measured cost per row: extrapolated.
            if (n > 0) line["patching_all_neurons_s_est"] = ps / n * static_cast<double>(pairs * info.n_layers * info.d_mlp);
            r_patch.push_back(ps / cap);
        }
        r_attr.push_back(att / cap);
        std::cout << line.dump() << std::endl;
    }
    nlohmann::json s = {{"summary", true}, {"median_attribution_over_capture", median(r_attr)},
                        {"threads", at::get_num_threads()}};
    if (!r_patch.empty()) s["median_patching_over_capture"] = median(r_patch);
    std::cout << s.dump() << std::endl;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    nscope::tune_allocator();
    nscope::install_tensor_allocator();
    CLI::App app{"nscope causal-analysis benchmark"};
    std::string dir;
    int64_t pairs = 4, tokens = 16;
    bool no_patching = false;
    int rounds = 3, threads = 0;
    auto* at_cmd = app.add_subcommand("attribution", "attribution patching vs one forward + capture, and exhaustive patching");
    at_cmd->add_option("dir", dir)->required();
    at_cmd->add_option("--pairs", pairs);
    at_cmd->add_option("--tokens", tokens);
    at_cmd->add_option("--rounds", rounds);
    at_cmd->add_flag("--no-patching", no_patching, "skip exhaustive patching");
    app.add_option("--threads", threads);
    app.require_subcommand(1);
    CLI11_PARSE(app, argc, argv);
    return bench::run_main(threads, [&](PluginRegistry& reg) {
        return attribution(reg, dir, pairs, tokens, rounds, !no_patching);
    });
}
