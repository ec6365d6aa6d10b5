// Cost of `nscope merge` for a large sharded study, without a model: S shard states of stats + topk over
// H hooks x W neurons (GPT-2-small's mlp.hook_post by default: 12 x 3072) are made by feeding the real
// plugins a few synthetic batches each and saved to files as a shard does (state/<id>.bin); then the timed
// part reads every file, checks and loads it (load_analysis_state) into a fresh analyzer and merges it
// into the first, as the merge command does, and finishes. The baseline in the same run is reading the same
// bytes from the files (the floor of any merge that looks at every state).
//
//   nscope_bench_merge --shards 100 --hooks 12 --width 3072 --k 10
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/plugin/registry.h"
#include "core/run/recipe.h"
#include "core/run/study.h"
#include "core/util/concurrency.h"
#include "core/util/files.h"
#include "nscope/sdk.h"

using namespace nscope;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// Synthetic batches of GELU-like values: `rows` prompts x `positions` tokens over `hooks` hooks.
struct Synth {
    std::vector<std::string> names;
    std::vector<std::vector<float>> values;  // per hook [rows, positions, width]
    std::vector<int64_t> ids, mask;
    std::vector<PromptInfo> prompts;
    size_t rows, positions, width;

    Synth(size_t hooks, size_t width_, size_t rows_, size_t positions_) : rows(rows_), positions(positions_), width(width_) {
        for (size_t h = 0; h < hooks; ++h) names.push_back("blocks." + std::to_string(h) + ".mlp.hook_post");
        values.resize(hooks, std::vector<float>(rows * positions * width));
        ids.resize(rows * positions);
        mask.assign(rows * positions, 1);
        prompts.resize(rows);
    }

    /// Fill with fresh values for prompts [first, first + rows).
    Batch batch(std::mt19937& rng, size_t first) {
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (auto& v : values)
            for (auto& x : v) {
                const float z = normal(rng);
                x = z > 0 ? z : 0.05f * z;
            }
        for (auto& id : ids) id = static_cast<int64_t>(rng() % 50000);
        Batch b;
        b.rows = rows;
        b.positions = positions;
        b.input_ids = ids.data();
        b.attention_mask = mask.data();
        for (size_t r = 0; r < rows; ++r) {
            prompts[r].index = first + r;
            b.prompts.push_back(&prompts[r]);
        }
        for (size_t h = 0; h < names.size(); ++h)
            b.activations.push_back({names[h], {values[h].data(), DType::Float32,
                                                {static_cast<int64_t>(rows), static_cast<int64_t>(positions), static_cast<int64_t>(width)}}});
        return b;
    }
};

}  // namespace

int main(int argc, char** argv) {
    size_t shards = 100, hooks = 12, width = 3072, k = 10, tokens_per_shard = 64, context = 5, ngram = 1, repeat = 1;
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    CLI::App app{"nscope_bench_merge: time to merge saved stats + topk shard states"};
    app.add_option("--shards", shards);
    app.add_option("--hooks", hooks);
    app.add_option("--width", width);
    app.add_option("--k", k);
    app.add_option("--context", context, "topk context window each side (its state holds k x (2c+1) ids per neuron)");
    app.add_option("--ngram", ngram, "topk n-gram lengths (0: none)");
    app.add_option("--tokens-per-shard", tokens_per_shard, "synthetic tokens each shard consumes (makes its state)");
    app.add_option("--repeat", repeat, "merge the same states this many times; the best time is reported");
    app.add_option("--threads", threads, "threads the analyzers may use (as nscope merge's --threads)");
    CLI11_PARSE(app, argc, argv);

    PluginRegistry registry;
    registry.scan(PluginRegistry::search_path({}));
    std::vector<AnalysisSpec> specs = {{"stats", "stats", {}, nlohmann::json::object(), {"bench"}},
                                       {"top", "topk", {}, {{"k", k}, {"context", context}, {"ngram", ngram}}, {"bench"}}};
    std::vector<std::string> versions;
    for (const auto& s : specs) {
        const auto& p = registry.require(s.use, PluginKind::Analyzer);
        versions.push_back(p.id + "@" + p.version);
    }
    auto make = [&](const AnalysisSpec& s) {
        auto a = registry.create_analyzer(s.use);
        a->configure(s.params);
        RunContext ctx;
        ctx.parallel_for = parallel_for_on(threads);
        a->begin(ctx);
        return a;
    };

    const fs::path dir = fs::temp_directory_path() / ("nscope-bench-merge-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    const size_t positions = 16, rows = std::max<size_t>(1, tokens_per_shard / positions);
    Synth synth(hooks, width, rows, positions);
    std::mt19937 rng(7);
    uint64_t state_bytes = 0;
    const auto t_make = Clock::now();
    for (size_t s = 0; s < shards; ++s) {
        const Batch b = synth.batch(rng, s * rows);
        for (size_t a = 0; a < specs.size(); ++a) {
            auto analyzer = make(specs[a]);
            analyzer->consume(b);
            const std::string blob = save_analysis_state(*analyzer, specs[a], versions[a]);
            state_bytes += blob.size();
            write_file_atomic(dir / std::to_string(s) / (specs[a].id + ".bin"), blob);
        }
    }
    const double make_s = seconds_since(t_make);

    // Baseline: read every state file once.
    auto t0 = Clock::now();
    uint64_t read = 0;
    for (size_t s = 0; s < shards; ++s)
        for (const auto& spec : specs) read += read_bytes(dir / std::to_string(s) / (spec.id + ".bin")).size();
    const double read_s = seconds_since(t0);

    // The merge as `nscope merge` does it: load shard 0 into the result, every other shard into a fresh
    // instance that is merged in, then finish. Repeated --repeat times; the best of each phase is kept.
    double merge_s = 0, finish_s = 0;
    for (size_t round = 0; round < std::max<size_t>(1, repeat); ++round) {
        t0 = Clock::now();
        std::vector<std::unique_ptr<Analyzer>> merged;
        for (size_t a = 0; a < specs.size(); ++a) merged.push_back(make(specs[a]));
        for (size_t s = 0; s < shards; ++s)
            for (size_t a = 0; a < specs.size(); ++a) {
                const fs::path file = dir / std::to_string(s) / (specs[a].id + ".bin");
                if (s == 0) {
                    load_analysis_state(*merged[a], specs[a], versions[a], read_bytes(file), file.string());
                    continue;
                }
                auto other = make(specs[a]);
                load_analysis_state(*other, specs[a], versions[a], read_bytes(file), file.string());
                merged[a]->merge(*other);
            }
        const double m = seconds_since(t0);
        t0 = Clock::now();
        for (auto& a : merged) (void)a->finish();
        const double f = seconds_since(t0);
        merge_s = round == 0 ? m : std::min(merge_s, m);
        finish_s = round == 0 ? f : std::min(finish_s, f);
    }
    fs::remove_all(dir);

    std::cout << shards << " shards x " << hooks << " hooks x " << width << " neurons (stats + topk k=" << k << " context=" << context << " ngram=" << ngram << "): "
              << state_bytes / 1e6 << " MB of state files (made in " << make_s << " s)\n"
              << "  read the files:        " << read_s << " s\n"
              << "  load + merge:          " << merge_s << " s  (" << merge_s / read_s << "x reading)\n"
              << "  finish (results):      " << finish_s << " s\n";
    const nlohmann::json summary = {{"shards", shards}, {"hooks", hooks}, {"width", width}, {"k", k},
                                    {"state_mb", state_bytes / 1e6}, {"read_s", read_s}, {"merge_s", merge_s},
                                    {"finish_s", finish_s}, {"merge_vs_read", merge_s / read_s}};
    std::cout << summary.dump() << "\n";
    return read == state_bytes ? 0 : 1;
}
