// Throughput of analyzer plugins alone, without a model: synthetic GELU-like activations shaped like every
// mlp.hook_post of GPT-2 small (12 hooks x 3072 neurons, batches of 8 x 128 random tokens) are fed to the
// real plugins (.so files, loaded as nscope loads them), one analyzer at a time and all together, each
// consuming on its own thread with the run's thread pool for its per-hook tasks, as the runner does. The baseline in the same run is the cost of reading every value once
// (a vectorized sum), the floor for any analyzer that looks at each value.
//
//   nscope_bench_analyzers --tokens 10240 --analyses "stats;topk k=10 ngram=1 max_ngrams=24"
//
// Batches rotate over several buffers larger than the caches, so every analyzer reads its input from
// memory as it does after a real forward pass. Prints one line per analyzer and a JSON summary.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <future>
#include <iostream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "core/plugin/registry.h"
#include "core/util/concurrency.h"
#include "core/util/allocator.h"
#include "nscope/sdk.h"

using namespace nscope;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

/// "topk k=10 ngram=1" -> ("topk", {"k": 10, "ngram": 1}); values parse as JSON, else as strings.
std::pair<std::string, Params> parse_analysis(const std::string& spec) {
    std::istringstream in(spec);
    std::string id, kv;
    in >> id;
    Params p = Params::object();
    while (in >> kv) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos) throw InputError("analysis option '" + kv + "' is not key=value");
        const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
        try {
            p[key] = nlohmann::json::parse(value);
        } catch (const nlohmann::json::exception&) {
            p[key] = value;
        }
    }
    return {id, p};
}

/// xorshift64* and a cheap near-normal variate (sum of four uniforms, variance 1).
struct Rng {
    uint64_t s;
    uint64_t next() {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        return s * 2685821657736338717ull;
    }
    float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
    float normal() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }
};

struct SynthBatches {
    size_t rows, positions, hooks, width;
    std::vector<std::vector<int64_t>> ids;     // per buffer
    std::vector<std::vector<float>> values;    // per buffer: [hooks][rows * positions][width]
    std::vector<int64_t> mask;
    std::vector<std::string> names;

    SynthBatches(size_t buffers, size_t rows_, size_t positions_, size_t hooks_, size_t width_)
        : rows(rows_), positions(positions_), hooks(hooks_), width(width_) {
        Rng rng{0x9e3779b97f4a7c15ull};
        // Each neuron: GELU(a + b z), a ~ N(-1, 0.5), b ~ U(0.5, 1.5): mostly slightly negative, a tail of
        // large values, as GPT-2's post-GELU activations are.
        std::vector<float> a(hooks * width), b(hooks * width);
        for (size_t j = 0; j < a.size(); ++j) a[j] = -1.0f + 0.5f * rng.normal(), b[j] = 0.5f + rng.uniform();
        mask.assign(rows * positions, 1);
        for (size_t h = 0; h < hooks; ++h) names.push_back("blocks." + std::to_string(h) + ".mlp.hook_post");
        ids.resize(buffers);
        values.resize(buffers);
        for (size_t k = 0; k < buffers; ++k) {
            ids[k].resize(rows * positions);
            for (auto& id : ids[k]) id = static_cast<int64_t>(rng.next() % 50257);
            auto& v = values[k];
            v.resize(hooks * rows * positions * width);
            for (size_t h = 0; h < hooks; ++h)
                for (size_t t = 0; t < rows * positions; ++t) {
                    float* out = &v[(h * rows * positions + t) * width];
                    for (size_t j = 0; j < width; ++j) {
                        const float x = a[h * width + j] + b[h * width + j] * rng.normal();
                        out[j] = 0.5f * x * (1.0f + std::tanh(0.7978845608f * (x + 0.044715f * x * x * x)));
                    }
                }
        }
    }

    Batch view(size_t i) const {
        const size_t k = i % values.size();
        Batch b;
        b.rows = rows;
        b.positions = positions;
        b.input_ids = ids[k].data();
        b.attention_mask = mask.data();
        b.prompts.assign(rows, nullptr);
        const int64_t w = static_cast<int64_t>(width);
        for (size_t h = 0; h < hooks; ++h)
            b.activations.push_back({names[h],
                                     {&values[k][h * rows * positions * width], DType::Float32,
                                      {static_cast<int64_t>(rows), static_cast<int64_t>(positions), w}}});
        return b;
    }
};

/// The floor: read every value of a batch once (sum; vectorizes).
float read_all(const Batch& b) {
    float total = 0;
    for (const auto& a : b.activations) {
        const float* p = a.view.f32();
        const int64_t n = a.view.numel();
        float acc[16] = {};
        int64_t i = 0;
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
        for (; i < n; ++i) acc[0] += p[i];
        for (float x : acc) total += x;
    }
    return total;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Throughput of analyzer plugins on synthetic activations (no model)"};
    int64_t tokens = 10240;
    std::string analyses = "stats;topk k=10 ngram=1 max_ngrams=24";
    std::string shape = "8x128";
    size_t hooks = 12, width = 3072, buffers = 3;
    int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::string> plugin_path;
    app.add_option("--tokens", tokens, "tokens fed to each analyzer (rounded up to whole batches)");
    app.add_option("--analyses", analyses, "';'-separated analyses: 'id key=value ...' (values as JSON)");
    app.add_option("--shape", shape, "batch shape ROWSxPOSITIONS");
    app.add_option("--hooks", hooks, "hooks per batch");
    app.add_option("--width", width, "neurons per hook");
    app.add_option("--buffers", buffers, "distinct batches to rotate through (keep their total above the caches)");
    app.add_option("--plugin-path", plugin_path, "extra plugin directories");
    app.add_option("--threads", threads, "threads of RunContext::parallel_for (1: analyzers stay serial)");
    CLI11_PARSE(app, argc, argv);
    try {
        tune_allocator();
        PluginRegistry reg;
        reg.scan(PluginRegistry::search_path({plugin_path.begin(), plugin_path.end()}));
        const auto x = shape.find('x');
        const size_t rows = std::stoul(shape.substr(0, x)), positions = std::stoul(shape.substr(x + 1));
        std::vector<std::pair<std::string, Params>> specs;
        std::string spec;
        for (std::istringstream in(analyses); std::getline(in, spec, ';');)
            if (spec.find_first_not_of(' ') != std::string::npos) specs.push_back(parse_analysis(spec));

        std::cerr << "generating " << buffers << " batches of " << rows << "x" << positions << " tokens x " << hooks
                  << " hooks x " << width << " neurons...\n";
        const SynthBatches data(buffers, rows, positions, hooks, width);
        const size_t batches = static_cast<size_t>((tokens + static_cast<int64_t>(rows * positions) - 1) /
                                                   static_cast<int64_t>(rows * positions));
        const double per10k = 10240.0 / static_cast<double>(batches * rows * positions);

        RunContext ctx;
        ctx.model_name = "synthetic";
        ctx.parallel_for = parallel_for_on(threads);
        for (const auto& n : data.names) ctx.hooks.push_back({n, {"batch", "pos", "d_mlp"}, {-1, -1, static_cast<int64_t>(width)}});
        auto make = [&]() {
            std::vector<std::unique_ptr<Analyzer>> out;
            for (const auto& [id, params] : specs) {
                out.push_back(reg.create_analyzer(id));
                out.back()->configure(params);
                out.back()->begin(ctx);
            }
            return out;
        };

        float sink = 0;
        auto t0 = Clock::now();
        for (size_t i = 0; i < batches; ++i) sink += read_all(data.view(i));
        const double floor_s = seconds_since(t0);

        nlohmann::json summary{{"tokens", batches * rows * positions}, {"hooks", hooks}, {"width", width},
                               {"threads", threads}, {"read_s", floor_s}};
        std::printf("%-40s %10s %12s %10s\n", ("analysis (threads: " + std::to_string(threads) + ")").c_str(), "seconds",
                    "s / 10k tok", "vs read");
        std::printf("%-40s %10.3f %12.3f %9.2fx\n", "read every value once (baseline)", floor_s, floor_s * per10k, 1.0);
        for (size_t a = 0; a < specs.size(); ++a) {
            auto one = make();
            t0 = Clock::now();
            for (size_t i = 0; i < batches; ++i) one[a]->consume(data.view(i));
            const double s = seconds_since(t0);
            std::printf("%-40s %10.3f %12.3f %9.2fx\n", specs[a].first.c_str(), s, s * per10k, s / floor_s);
            summary["alone_s"][specs[a].first] = s;
        }
        if (specs.size() > 1) {
            auto all = make();
            t0 = Clock::now();
            for (size_t i = 0; i < batches; ++i) {
                const Batch b = data.view(i);
                std::vector<std::future<void>> others;
                for (size_t a = 1; a < all.size(); ++a)
                    others.push_back(std::async(std::launch::async, [&, a] { all[a]->consume(b); }));
                all[0]->consume(b);
                for (auto& f : others) f.get();
            }
            const double s = seconds_since(t0);
            std::printf("%-40s %10.3f %12.3f %9.2fx\n", "all, concurrently (as a run does)", s, s * per10k, s / floor_s);
            summary["together_s"] = s;
        }
        summary["sink"] = sink;
        std::cout << summary.dump() << "\n";
        return 0;
    } catch (const Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 2;
    }
}
